"""Tests of the simulator: determinism, classes, phenology, clouds, dates, splits, dataset root."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_pipeline import realism, splits
from data_pipeline.simulation import (
    acquisitions,
    clouds,
    crops,
    phenology,
    simulator,
    spectra,
)
from data_pipeline.simulation.noise import make_rng
from data_pipeline.simulation.scene import Scene, make_scene

SMALL = simulator.SimulationConfig(num_tiles_x=3, num_tiles_y=2, pix10=12, years=(2016, 2017))


def _tiles(config: simulator.SimulationConfig) -> list[tuple[int, simulator.SimulatedTile]]:
    return list(simulator.simulate_tiles(config))


def _mosaic(
    config: simulator.SimulationConfig,
    year_index: int = 0,
    keys: tuple[str, ...] = ("x10", "x60", "cloud_mask"),
):
    """The whole canvas of one year: the `keys` of its tiles joined, then the YearSimulator."""
    year = simulator.YearSimulator(simulator.simulate_scene(config), config, year_index)
    rows = [year.tile_row(row) for row in range(config.num_tiles_y)]

    def join(key):
        return np.concatenate(
            [np.concatenate([getattr(t, key) for t in row], axis=2) for row in rows], axis=1
        )

    return (*(join(key) for key in keys), year)


@pytest.fixture(scope="module")
def small_tiles():
    return _tiles(SMALL)


def test_deterministic_for_a_seed(small_tiles):
    again = _tiles(SMALL)
    other = _tiles(simulator.SimulationConfig(**{**SMALL.__dict__, "seed": 1}))
    for (_, a), (_, b) in zip(small_tiles, again, strict=True):
        for key in ("x10", "x20", "x60", "doy", "labels", "cloud_mask"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert any(
        not np.array_equal(a.x10, b.x10) for (_, a), (_, b) in zip(small_tiles, other, strict=True)
    )


def test_shapes_dtypes_and_values(small_tiles):
    assert len(small_tiles) == 2 * 3 * 2
    assert spectra.GROUPS["x10"] == ("B4", "B3", "B2", "B8")
    assert spectra.GROUPS["x20"] == ("B5", "B6", "B7", "B8A", "B11", "B12")
    assert spectra.GROUPS["x60"] == ("B1", "B9", "B10")
    for year, tile in small_tiles:
        assert tile.x10.shape == (46, 12, 12, 4) and tile.x10.dtype == np.uint16
        assert tile.x20.shape == (46, 6, 6, 6) and tile.x20.dtype == np.uint16
        assert tile.x60.shape == (46, 2, 2, 3) and tile.x60.dtype == np.uint16
        assert tile.cloud_mask.shape == (46, 12, 12) and tile.cloud_mask.dtype == np.uint8
        assert tile.labels.shape == (12, 12)
        assert set(np.unique(tile.cloud_mask)) <= {0, 1, 2}
        real = tile.doy > 0
        # Padding is at the end and all zero; real observations are plausible reflectances.
        assert np.all(real[: real.sum()]) and not np.any(real[real.sum() :])
        assert np.all(tile.year[real] == year) and np.all(tile.year[~real] == 0)
        for key in ("x10", "x20", "x60"):
            values = getattr(tile, key)
            assert not values[~real].any()
            assert 50 < values[real].mean() < 9000
        assert not tile.cloud_mask[~real].any()
    ids = {tile.tileid for _, tile in small_tiles}
    assert ids == {str(i) for i in range(6)}


def test_classes_present_and_unequal():
    scene = make_scene(192, 192, num_years=2, seed=0)
    labels = scene.label_map(0)
    counts = {i: int(np.sum(labels == i)) for i in (crops.UNKNOWN_ID, *crops.CLASS_IDS)}
    assert all(count > 0 for count in counts.values()), counts
    common = min(counts[3], counts[22], counts[26])  # meadow, winter wheat, maize
    assert common > 4 * max(counts[8], counts[19])  # hop, asparagus
    # Crops rotate, perennials stay, and the parcels do not move.
    changed = scene.labels[0] != scene.labels[1]
    assert changed.sum() > 0.3 * scene.is_field.sum()
    assert not np.any(changed & np.isin(scene.labels[0], crops.PERENNIAL_IDS))
    assert len(crops.CLASS_IDS) == 17


def _class_ndvi_curves(doy: np.ndarray, parcels_per_class: int = 40) -> np.ndarray:
    """Mean clear-sky TOA NDVI per class over `doy`: [classes, time]."""
    profiles = np.repeat(np.arange(len(crops.CLASS_IDS)), parcels_per_class)[None].astype(np.int16)
    scene = Scene(np.zeros((1, 1), np.int32), np.ones(profiles.shape[1], bool), profiles, profiles)
    params = phenology.unit_parameters(scene, 0, make_rng(0, "test"))
    units = np.arange(profiles.shape[1])
    ones = np.ones(units.size, np.float32)
    covers = phenology.cover_fractions(params, units, doy, 0 * ones, ones, ones)
    covers = np.concatenate([covers, np.zeros_like(covers[..., :1])], axis=-1)  # no snow
    x10 = spectra.top_of_atmosphere(covers, spectra.sample_atmosphere(doy, make_rng(0, "a")), "x10")
    ndvi = (x10[..., 3] - x10[..., 0]) / (x10[..., 3] + x10[..., 0])
    return ndvi.reshape(len(doy), len(crops.CLASS_IDS), -1).mean(-1).T


def test_winter_cereals_confusable_but_not_maize():
    curves = _class_ndvi_curves(np.arange(1, 366, 5))

    def distance(a, b):
        index = crops.CLASS_IDS.index
        return np.sqrt(np.mean((curves[index(a)] - curves[index(b)]) ** 2))

    cereals = crops.WINTER_CEREAL_IDS
    within = max(distance(a, b) for a in cereals for b in cereals if a < b)
    to_maize = min(distance(a, 26) for a in cereals)
    assert within < 0.35 * to_maize, (within, to_maize)
    assert distance(2, 25) < 0.35 * distance(2, 26)  # summer oat ~ summer barley, not maize
    # Each curve has a growing season: low in January, high at its peak.
    assert np.all(curves.max(axis=1) > 0.45) and np.all(curves[:, 0] < 0.6)


def test_clear_sky_ndvi_within_published_ranges():
    # Sentinel-2 sees dense crops and meadow at NDVI 0.8-0.9 at their peak, bare soil at 0.1-0.2;
    # top-of-atmosphere reflectances (L1C, what the simulator makes) read a little lower.
    curves = _class_ndvi_curves(np.arange(1, 366, 5))
    peak = dict(zip(crops.CLASS_IDS, curves.max(axis=1), strict=True))
    low = dict(zip(crops.CLASS_IDS, curves.min(axis=1), strict=True))
    for dense in (1, 3, 22, 26):  # sugar beet, meadow, winter wheat, maize
        assert 0.75 < peak[dense] < 0.9, (dense, peak[dense])
    sown_on_bare_soil = [
        i for i in crops.CLASS_IDS if crops.PROFILES[crops.profile_index(i)].till < crops.INF
    ]
    assert sown_on_bare_soil
    for label in sown_on_bare_soil:
        assert 0.1 < low[label] < 0.2, (label, low[label])


def test_acquisition_dates():
    per_year = {}
    for year in (2016, 2017):
        doy = acquisitions.acquisition_dates(year, make_rng(0, "dates", year))
        assert 30 <= len(doy) <= 46
        assert np.all(np.diff(doy) > 0) and doy.min() >= 1 and doy.max() <= 366
        assert len(np.unique(np.diff(doy))) > 2  # irregular gaps
        per_year[year] = doy
    assert not np.array_equal(per_year[2016], per_year[2017])


def test_no_clouds_at_rate_zero_and_more_with_rate():
    shares = []
    for rate in (0.0, 0.5, 1.5):
        config = simulator.SimulationConfig(
            num_tiles_x=2, num_tiles_y=2, pix10=24, years=(2016,), cloud_rate=rate
        )
        _, _, mask, _ = _mosaic(config)
        shares.append(float(np.mean(mask == 1)))
        if rate == 0:
            assert not mask.any()
    assert shares[0] == 0 < shares[1] < shares[2]


def test_clouds_bright_shadows_dark_winter_cloudy():
    config = simulator.SimulationConfig(
        num_tiles_x=2, num_tiles_y=2, pix10=24, years=(2016,), num_observations=46
    )
    cloudy_x10, cloudy_x60, mask, year = _mosaic(config)
    clear_x10, clear_x60, clear_mask, _ = _mosaic(
        simulator.SimulationConfig(**{**config.__dict__, "cloud_rate": 0.0})
    )
    assert not clear_mask.any()
    difference = cloudy_x10.astype(float) - clear_x10
    cloud, shadow = mask == 1, mask == 2
    assert cloud.sum() > 100 and shadow.sum() > 100
    assert difference[..., 2][cloud].mean() > 1500  # blue (B2) brighter under cloud
    assert difference[..., 3][shadow].mean() < -300  # NIR (B8) darker in shadow
    # B10 of 60 m pixels entirely under cloud: the surface barely shows there, clouds do.
    full = mask.reshape(46, 8, 6, 8, 6).min(axis=(2, 4)) == 1
    b10 = cloudy_x60[..., 2].astype(float) - clear_x60[..., 2]
    assert full.sum() > 5 and b10[full].mean() > 300
    # More cloud in winter (Nov-Feb) than in summer (May-Aug).
    doy = year.doy
    share = (mask == 1).mean(axis=(1, 2))
    winter = (doy < 60) | (doy > 305)
    summer = (doy > 120) & (doy < 244)
    assert share[winter].mean() > share[summer].mean()


# Only snow makes the clear surface this bright in blue (reflectance x 1e4); clouds over snow
# darken the visible and show in the SWIR (B11) instead, where snow is dark.
SNOW_BLUE = 3000


def _assert_mask_matches_brightness(cloudy, clear, mask):
    """CLOUD pixels are brighter than their clear surface in blue (B2; over snow, in B11 of their
    20 m pixel), SHADOW pixels darker in NIR (B8), each by at least 0.01 reflectance.

    Args:
      cloudy: (x10, x20) with clouds.
      clear: (x10, x20) of the same tile without.
      mask: [time, H, W] of the cloudy tile.
    """
    x10, x20 = (np.asarray(a, np.float64) - b for a, b in zip(cloudy, clear, strict=True))
    blue, nir = x10[..., 2], x10[..., 3]
    swir = np.repeat(np.repeat(x20[..., 4], 2, axis=1), 2, axis=2)
    snow = clear[0][..., 2] >= SNOW_BLUE
    cloud, shadow = mask == 1, mask == 2
    assert blue[cloud & ~snow].min() >= 99, np.sort(blue[cloud & ~snow])[:5]
    # The mask judges B11 with each 10 m pixel's own cloud, the record holds it per 20 m pixel:
    # at the edge of a cloud over snow the two rarely disagree.
    if (cloud & snow).any():
        assert np.mean((blue >= 99) | (swir >= 99), where=cloud & snow) > 0.99
    if shadow.any():
        assert nir[shadow].max() <= -99, np.sort(nir[shadow])[-5:]


def test_cloud_pixels_brighter_shadow_pixels_darker_than_their_surface():
    # Where a thin cloud lies in another cloud's shadow the sensor sees a dim cloud over dark
    # ground: the mask follows what the pixel looks like, not which layer lies on top.
    config = simulator.SimulationConfig(
        num_tiles_x=2, num_tiles_y=2, pix10=24, years=(2016,), num_observations=46
    )
    keys = ("x10", "x20", "cloud_mask")
    *cloudy, mask, _ = _mosaic(config, keys=keys)
    *clear, _, _ = _mosaic(
        simulator.SimulationConfig(**{**config.__dict__, "cloud_rate": 0.0}), keys=keys
    )
    assert (mask == 1).sum() > 1000 and (mask == 2).sum() > 1000
    _assert_mask_matches_brightness(cloudy, clear, mask)


def test_cloud_cover_seasonal_statistics():
    doy = np.tile(np.arange(1, 366), 4)
    coverage = clouds.sample_coverage(doy, 1.0, make_rng(0, "c"))
    winter = (doy < 60) | (doy > 305)
    summer = (doy > 120) & (doy < 244)
    assert coverage[winter].mean() > coverage[summer].mean() + 0.1
    assert np.mean(coverage == 0) > 0.15  # clear days exist
    higher = clouds.sample_coverage(doy, 2.0, make_rng(0, "c"))
    assert np.all(higher >= coverage) and higher.mean() > coverage.mean()


def test_cloud_cover_at_tile_scale_as_in_central_europe():
    # Sentinel-2 scenes over Germany are 60-70 % cloudy on average, and a pixel is seen clear in
    # roughly a quarter to a third of the acquisitions: so are the 240 m tiles here.
    statistics = realism.TileClouds()
    for seed in range(4):
        config = simulator.SimulationConfig(num_tiles_x=2, num_tiles_y=2, seed=seed)
        for _, tile in simulator.simulate_tiles(config):
            statistics.add(tile.cloud_mask[tile.doy > 0], cloud=1, clear=0)
    figures = statistics.summary()
    assert figures["num_observations"] > 1000
    assert 0.5 < figures["mean_cloud_fraction"] < 0.7, figures
    assert 0.2 < figures["clear_share"] < 0.4 and 0.15 < figures["usable_share"] < 0.35, figures
    assert figures["overcast_share"] > 0.3, figures  # whole tiles under a deck of cloud


def test_shadows_displaced_from_their_clouds():
    doy = np.array([180, 350])
    layers = clouds.sample_cloud_layers(doy, np.array([0.3, 0.3]), 0.0, 256, 256, make_rng(1, "s"))
    offset = np.round(layers.shadow_offset).astype(int)
    assert np.all(offset[:, 0] < 0) and np.all(offset[:, 1] < 0)  # north-west of the cloud
    assert np.hypot(*offset[1]) > 2 * np.hypot(*offset[0])  # long winter shadows
    fields = clouds.cloud_fields(layers, 0, 0, 256, 256)
    shadow = fields["shadow"] >= clouds.SHADOW_DEPTH
    # A shadow is its cloud moved by the offset: the cloud field of the window one offset up-sun.
    for date in range(2):
        upsun = clouds.cloud_fields(layers, -offset[date, 0], -offset[date, 1], 256, 256)
        np.testing.assert_allclose(fields["shadow"][date], upsun["cloud"][date], atol=1e-5)
    cloud = fields["cloud"] >= clouds.CLOUD_OPACITY
    overlap = (shadow & cloud).sum() / max(shadow.sum(), 1)
    assert shadow[0].sum() > 100 and overlap < 0.6


def test_spatial_split_has_margins():
    groups = splits.block_groups(10, 12, num_folds=3, block_size=2, seed=0)
    named = splits.split_tileids(groups, num_folds=3)
    everything = set(map(str, range(120)))
    margin = {str(i) for i in np.flatnonzero(groups.ravel() == splits.MARGIN)}
    assert margin and named["eval"]
    for fold in range(3):
        train, test = set(named[f"train_fold{fold}"]), set(named[f"test_fold{fold}"])
        evaluation = set(named["eval"])
        assert train and test
        assert not train & test and not train & evaluation and not test & evaluation
        assert train | test | evaluation | margin == everything
        assert not margin & (train | test | evaluation)
    # No two tiles of different groups touch (8-neighbourhood) unless one of them is margin.
    padded = np.pad(groups, 1, constant_values=splits.MARGIN)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            neighbour = padded[1 + dy : 11 + dy, 1 + dx : 13 + dx]
            clash = (groups >= 0) & (neighbour >= 0) & (groups != neighbour)
            assert not clash.any()
    with pytest.raises(ValueError, match="blocks"):
        splits.block_groups(4, 4, num_folds=5, block_size=4, seed=0)


def test_synthesize_writes_a_dataset_root(tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    from data_pipeline import dataset_root, records, synthesize

    root = str(tmp_path / "root")
    settings = dict(
        out_dir=root, tiles_x=4, tiles_y=4, pix10=12, num_folds=2, block_size=2, years=["2016"]
    )
    with flagsaver.flagsaver(**settings):
        flags.FLAGS.mark_as_parsed()
        assert synthesize.main(["synthesize"]) == 0
        for name in ("dataset.ini", "classes.txt", "geotransforms.csv"):
            assert os.path.isfile(os.path.join(root, name))
        sections = dataset_root.read_dataset_ini(root)
        assert sections["2016"].datadir == "data16" and sections["2016"].pix10 == 12
        assert dataset_root.read_classes(root).num_classes == 17
        geotransforms = dataset_root.read_geotransforms(root)
        assert len(geotransforms) == 16 and geotransforms["1"].srid == 32632
        assert geotransforms["1"].xmin - geotransforms["0"].xmin == 120
        assert dataset_root.read_tileids(root, "eval")
        tile, schema = records.read_tile(os.path.join(root, "data16", "0.tfrecord.gz"))
        assert schema == records.COMPACT and tile.cloud_mask is not None
        assert not [name for name in os.listdir(os.path.join(root, "data16")) if "tmp" in name]
        # A second run refuses the non-empty root (exit 1, naming it), unless told to overwrite.
        with pytest.raises(SystemExit, match="is not empty"):
            synthesize.main(["synthesize"])
    with flagsaver.flagsaver(**settings, overwrite=True, schema="original"):
        assert synthesize.main(["synthesize"]) == 0
        assert records.read_tile(os.path.join(root, "data16", "0.tfrecord.gz"))[1] == "original"


def test_inject_clouds_tf_eager_and_in_tf_data():
    import tensorflow as tf

    from data_pipeline.simulation.clouds_tf import inject_clouds_tf

    tile = _tiles(simulator.SimulationConfig(1, 1, 12, (2016,), nobs=46, cloud_rate=0.0))[0][1]
    inputs = tuple(tf.constant(getattr(tile, k), tf.float32) for k in ("x10", "x20", "x60"))
    inputs += (tf.constant(tile.doy, tf.int32),)
    seed = tf.constant([4, 2])
    x10, x20, x60, mask = (t.numpy() for t in inject_clouds_tf(*inputs, seed, 0.8))
    again = inject_clouds_tf(*inputs, seed, 0.8)
    np.testing.assert_array_equal(x10, again[0].numpy())
    assert x20.shape == tile.x20.shape and x60.shape == tile.x60.shape
    assert mask.dtype == np.uint8 and mask.shape == tile.x10.shape[:3]
    assert (mask == 1).any() and not x10[tile.doy == 0].any()
    assert (x10[..., 2][mask == 1] - tile.x10[..., 2][mask == 1]).mean() > 1000
    _assert_mask_matches_brightness((x10, x20), (tile.x10, tile.x20), mask)
    clear = inject_clouds_tf(*inputs, seed, 0.0)
    np.testing.assert_array_equal(clear[0].numpy(), tile.x10)
    # Inside tf.data (graph mode) it gives the same tiles, up to rounding of fused float ops.
    dataset = tf.data.Dataset.from_tensors(inputs).map(lambda *t: inject_clouds_tf(*t, seed, 0.8))
    graph = next(iter(dataset))
    assert np.abs(graph[0].numpy() - x10).max() <= 1
