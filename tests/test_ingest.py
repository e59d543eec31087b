"""GeoTIFF ingestion: simulated tiles and scenes round-trip; bad rasters fail naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from data_pipeline import dataset_root, ingest_lib, rasters, records, scenes, tile_folders
from data_pipeline.simulation import geotiff, simulator, writer

CONFIG = simulator.SimulationConfig(
    num_tiles_x=3, num_tiles_y=2, pix10=12, years=(2016,), nobs=4, num_observations=4
)
FIELDS = ("x10", "x20", "x60", "doy", "year", "labels")
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """Runs an entry point in its own process: entry points share flag names (--out_dir)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip


def assert_same_tile(actual: records.Tile, expected: records.Tile, time=slice(None)) -> None:
    for field in FIELDS:
        want = getattr(expected, field)
        want = want[time] if field not in ("labels",) else want
        np.testing.assert_array_equal(getattr(actual, field), want, err_msg=field)


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("port"))
    splits = {"eval": ["0", "5"], "train_fold0": ["1", "2"], "test_fold0": ["3"]}
    return folder, geotiff.write_tile_folders(folder, CONFIG, tileids=splits)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("scene"))
    return folder, geotiff.write_scene_folder(folder, CONFIG)


def test_tile_folders_ingest_equals_the_simulated_tiles(port, tmp_path):
    folder, simulated = port
    root = str(tmp_path / "root")
    summary = ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=root))
    assert summary["tiles"] == 6 and summary["pix10"] == 12 and summary["nobs"] == {2016: 4}
    for expected in simulated[2016]:
        tile, schema = records.read_tile(
            os.path.join(root, "data16", f"{expected.tileid}.tfrecord.gz")
        )
        assert schema == records.COMPACT and tile.cloud_mask is None
        assert_same_tile(tile, expected)
    assert dataset_root.read_geotransforms(root) == writer.geotransforms(2, 3, 12)
    (section,) = dataset_root.read_dataset_ini(root).values()
    assert (section.name, section.datadir, section.pix10, section.nobs) == ("2016", "data16", 12, 4)
    assert dataset_root.read_classes(root) == writer.class_table()
    assert dataset_root.read_tileids(root, "eval") == ["0", "5"]


def test_original_schema_and_refusing_a_non_empty_root(port, tmp_path):
    folder, simulated = port
    root = str(tmp_path / "root")
    config = ingest_lib.IngestConfig(input=folder, out_dir=root, schema=records.ORIGINAL)
    ingest_lib.ingest(config)
    tile, schema = records.read_tile(os.path.join(root, "data16", "2.tfrecord.gz"))
    assert schema == records.ORIGINAL
    assert_same_tile(tile, simulated[2016][2])
    with pytest.raises(FileExistsError, match="overwrite"):
        ingest_lib.ingest(config)


def test_tfrecord2tif_then_ingest_round_trips(tmp_path):
    config = simulator.SimulationConfig(
        num_tiles_x=2, num_tiles_y=1, pix10=12, years=(2017,), nobs=6
    )
    root = str(tmp_path / "root")
    tiles = [tile for _, tile in simulator.simulate_tiles(config)]
    for tile in tiles:
        record = records.Tile(**{f: getattr(tile, f) for f in (*FIELDS, "tileid", "cloud_mask")})
        records.write_tile(os.path.join(root, "data17", f"{tile.tileid}.tfrecord.gz"), record)
    dataset_root.write_geotransforms(root, writer.geotransforms(1, 2, 12))
    ported = tmp_path / "ported"
    records_of = [os.path.join(root, "data17", f"{tile.tileid}.tfrecord.gz") for tile in tiles]
    tile_folders.record_to_geotiffs(records_of[0], str(ported / "data" / "0"), root)
    done = run_module(
        "data_pipeline.tfrecord2tif", f"--record={records_of[1]}", f"--out_dir={ported}/data/1"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    dataset_root.write_classes(str(ported), writer.class_table())
    back = str(tmp_path / "back")
    done = run_module("data_pipeline.ingest", f"--input={ported}", f"--out_dir={back}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"tiles": 2' in done.stdout
    done = run_module("data_pipeline.ingest", f"--input={ported}", f"--out_dir={back}")
    assert done.returncode == 1 and "--overwrite" in done.stderr
    real = slice(0, int(np.count_nonzero(tiles[1].doy)))
    tile, _ = records.read_tile(os.path.join(back, "data17", "1.tfrecord.gz"))
    assert_same_tile(tile, tiles[1], real)
    assert dataset_root.read_geotransforms(back) == writer.geotransforms(1, 2, 12)
    grid = rasters.read_grid(str(ported / "data" / "1" / rasters.LABELS_FILE))
    assert (
        grid.epsg == writer.SRID and grid.geotransform == writer.geotransforms(1, 2, 12)["1"].gdal()
    )


def test_scene_ingest_cuts_the_simulated_tiles(scene, tmp_path):
    folder, simulated = scene
    root = str(tmp_path / "root")
    labels = os.path.join(folder, rasters.LABELS_FILE)
    config = ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=labels)
    cache = gdal.GetCacheMax()
    summary = ingest_lib.ingest(config)
    assert summary["tiles"] == "3 x 2" and summary["epsg"] == writer.SRID
    # Two rows of 256 px blocks of 12 files of 36 px width and the labels, plus 64 MiB; restored.
    assert 64 < summary["gdal_cache_mib"] < 66 and gdal.GetCacheMax() == cache
    for expected in simulated[2016]:
        tile, _ = records.read_tile(os.path.join(root, "data16", f"{expected.tileid}.tfrecord.gz"))
        assert_same_tile(tile, expected)
    assert dataset_root.read_geotransforms(root) == writer.geotransforms(2, 3, 12)


def test_scene_ragged_border_is_dropped(scene, tmp_path):
    folder, simulated = scene
    root = str(tmp_path / "root")
    labels = os.path.join(folder, rasters.LABELS_FILE)
    config = ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=18, labels=labels)
    summary = ingest_lib.ingest(config)  # 36 x 24 pixels: 2 x 1 tiles of 18
    assert summary["tiles"] == "2 x 1" and summary["dropped_border_pixels"] == [0, 6]
    tile, _ = records.read_tile(os.path.join(root, "data16", "0.tfrecord.gz"))
    np.testing.assert_array_equal(tile.x10[:, :12, :12], simulated[2016][0].x10)
    np.testing.assert_array_equal(tile.x60[:, :2, :2], simulated[2016][0].x60)


def write_vector(path: str, parcels: list[tuple[int, str]], epsg: int | None = writer.SRID):
    """A GeoPackage (or a Shapefile, for `.shp`) of (class id, WKT polygon in the scene's CRS)
    parcels, stored in `epsg` (reprojected) or with no CRS (None)."""
    scene_srs, srs = osr.SpatialReference(), None
    scene_srs.ImportFromEPSG(writer.SRID)
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        for each in (scene_srs, srs):  # x = easting / longitude, as GeoPackages store them
            each.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    driver = "ESRI Shapefile" if path.endswith(".shp") else "GPKG"
    source = ogr.GetDriverByName(driver).CreateDataSource(path)
    # No spatial index: some SQLite builds lack the R*Tree module GeoPackages use for it.
    options = [] if path.endswith(".shp") else ["SPATIAL_INDEX=NO"]
    layer = source.CreateLayer("parcels", srs, ogr.wkbPolygon, options=options)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    for class_id, wkt in parcels:
        geometry = ogr.CreateGeometryFromWkt(wkt)
        if srs is not None:
            geometry.Transform(osr.CoordinateTransformation(scene_srs, srs))
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", class_id)
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    source = None


def write_parcels(path: str, class_id: int) -> None:
    """A GeoPackage with one 60 m x 60 m parcel at the scene's upper-left corner."""
    x, y = writer.ORIGIN_EASTING, writer.ORIGIN_NORTHING
    write_vector(
        path,
        [(class_id, f"POLYGON(({x} {y},{x + 60} {y},{x + 60} {y - 60},{x} {y - 60},{x} {y}))")],
    )


def test_scene_with_vector_labels_is_rasterised(scene, tmp_path):
    folder, _ = scene
    class_id = writer.class_table().known_ids[2]
    parcels = str(tmp_path / "parcels.gpkg")
    write_parcels(parcels, class_id)
    root = str(tmp_path / "root")
    config = ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=parcels)
    ingest_lib.ingest(config)
    tile, _ = records.read_tile(os.path.join(root, "data16", "0.tfrecord.gz"))
    expected = np.zeros((12, 12), np.int32)
    expected[:6, :6] = class_id
    np.testing.assert_array_equal(tile.labels, expected)
    assert not [name for name in os.listdir(root) if name.startswith(".labels")]
    bad = ingest_lib.IngestConfig(
        input=folder, out_dir=str(tmp_path / "bad"), labels=parcels, label_attribute="crop"
    )
    with pytest.raises(rasters.RasterError, match="no attribute 'crop'") as error:
        ingest_lib.ingest(bad)
    assert parcels in str(error.value)


def random_parcels(seed: int, num_parcels: int = 12) -> list[tuple[int, str]]:
    """Quadrilaterals with off-grid corners all over the 360 m x 240 m scene, classes cycling."""
    rng = np.random.default_rng(seed)
    ids = writer.class_table().known_ids[1:]
    parcels = []
    for index in range(num_parcels):
        center = rng.uniform([0, -240], [360, 0])
        offsets = rng.uniform(20, 70, (4, 2)) * [[-1, -1], [1, -1], [1, 1], [-1, 1]]
        corners = center + offsets + [writer.ORIGIN_EASTING, writer.ORIGIN_NORTHING]
        ring = ",".join(f"{x:.3f} {y:.3f}" for x, y in [*corners, corners[0]])
        parcels.append((ids[index % len(ids)], f"POLYGON(({ring}))"))
    return parcels


def test_vector_labels_in_another_crs_are_reprojected(scene, tmp_path):
    folder, _ = scene
    labels = {}
    for epsg in (writer.SRID, 4326):
        parcels = str(tmp_path / f"parcels{epsg}.gpkg")
        write_vector(parcels, random_parcels(seed=3), epsg)
        root = str(tmp_path / f"root{epsg}")
        config = ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=parcels)
        ingest_lib.ingest(config)
        labels[epsg] = np.stack([
            records.read_tile(os.path.join(root, "data16", f"{tileid}.tfrecord.gz"))[0].labels
            for tileid in range(6)
        ])  # fmt: skip
    assert len(np.unique(labels[writer.SRID])) >= 4 and (labels[writer.SRID] > 0).mean() > 0.3
    differing = (labels[writer.SRID] != labels[4326]).mean()
    assert differing < 0.02, differing  # only pixels whose centres lie on a parcel's edge
    for name in ("no_crs.gpkg", "no_crs.shp"):  # GPKG: an "Undefined geographic SRS"
        no_crs = str(tmp_path / name)
        write_vector(no_crs, random_parcels(seed=3), epsg=None)
        config = ingest_lib.IngestConfig(
            input=folder, out_dir=str(tmp_path / f"bad_{name}"), pix10=12, labels=no_crs
        )
        with pytest.raises(rasters.RasterError, match="has no CRS") as error:
            ingest_lib.ingest(config)
        assert str(error.value).startswith(f"{no_crs}: ")


def rewrite(path: str, epsg: int | None = None, shift: float = 0.0, num_bands=None, value=None):
    """Rewrites a GeoTIFF with another CRS, a shifted origin, fewer bands or one changed value."""
    dataset = rasters.open_raster(path)
    grid = rasters.grid_of(dataset)
    array = rasters.read_bands(path, num_bands or dataset.RasterCount, dataset=dataset)
    if value is not None:
        array[0, 0] = value
    geotransform = (grid.geotransform[0] + shift, *grid.geotransform[1:])
    dataset = None
    rasters.write_geotiff(path, array, geotransform, epsg or grid.epsg)


def _date(folder: str, index: int = 1) -> str:
    return sorted(scenes.find_dates(folder))[index]


BAD_SCENES = {
    "other extent": (
        lambda f: rewrite(f"{f}/{_date(f)}_10m.tif", shift=10.0),
        "_10m.tif",
        "geotransform",
    ),
    "other CRS": (lambda f: rewrite(f"{f}/{_date(f)}_20m.tif", epsg=32633), "_20m.tif", "CRS"),
    "missing band file": (lambda f: os.remove(f"{f}/{_date(f)}_60m.tif"), "_60m.tif", "missing"),
    "missing bands": (
        lambda f: rewrite(f"{f}/{_date(f)}_20m.tif", num_bands=3),
        "_20m.tif",
        "band",
    ),
    "unreadable": (
        lambda f: open(f"{f}/{_date(f)}_10m.tif", "wb").write(b"not a tiff" * 10),
        "_10m.tif",
        "unreadable",
    ),
    "labels outside the class table": (
        lambda f: rewrite(f"{f}/y.tif", value=999),
        "y.tif",
        r"\[999\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SCENES))
def test_bad_scene_fails_naming_the_file(scene, tmp_path, case):
    folder = str(tmp_path / "scene")
    shutil.copytree(scene[0], folder)
    damage, file_suffix, message = BAD_SCENES[case]
    damage(folder)
    config = ingest_lib.IngestConfig(
        input=folder, out_dir=str(tmp_path / "root"), pix10=12, labels=f"{folder}/y.tif"
    )
    with pytest.raises(rasters.RasterError, match=message) as error:
        ingest_lib.ingest(config)
    named = [word for word in str(error.value).split() if word.rstrip(":").endswith(file_suffix)]
    assert named and named[0].startswith(folder), str(error.value)


def test_bad_tile_folder_fails_naming_the_file(port, tmp_path):
    folder = str(tmp_path / "port")
    shutil.copytree(port[0], folder)
    labels = os.path.join(folder, "data", "4", rasters.LABELS_FILE)
    rewrite(labels, value=999)
    with pytest.raises(rasters.RasterError, match=r"\[999\]") as error:
        ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=str(tmp_path / "root")))
    assert labels in str(error.value)
    other = os.path.join(
        folder, "data", "2", f"{_date(os.path.join(folder, 'data', '2'), 0)}_10m.tif"
    )
    rewrite(other, shift=-20.0)  # the 10 m raster moves away from its 20 m and 60 m rasters
    with pytest.raises(rasters.RasterError, match="geotransform") as error:
        ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=str(tmp_path / "root2")))
    assert os.path.join(folder, "data", "2") in str(error.value)


def split_into_band_files(folder: str) -> None:
    """Replaces every date's stacks by one GeoTIFF per band, `<YYYYMMDD>_B04.tif` etc."""
    for date, files in scenes.find_dates(folder).items():
        for suffix, (_, names) in rasters.RESOLUTIONS.items():
            dataset = rasters.open_raster(files[suffix])
            grid = rasters.grid_of(dataset)
            array = rasters.read_bands(files[suffix], len(names), dataset=dataset)
            dataset = None
            for index, name in enumerate(names):
                path = os.path.join(folder, f"{date}_{scenes.file_band_name(name)}.tif")
                rasters.write_geotiff(path, array[..., index], grid.geotransform, grid.epsg)
            os.remove(files[suffix])


def test_scene_of_one_file_per_band(scene, tmp_path):
    folder = str(tmp_path / "scene")
    shutil.copytree(scene[0], folder)
    split_into_band_files(folder)
    assert os.path.isfile(os.path.join(folder, f"{_date(folder)}_B8A.tif"))
    root = str(tmp_path / "root")
    labels = os.path.join(folder, rasters.LABELS_FILE)
    ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=labels))
    for expected in scene[1][2016]:
        tile, _ = records.read_tile(os.path.join(root, "data16", f"{expected.tileid}.tfrecord.gz"))
        assert_same_tile(tile, expected)
    missing = os.path.join(folder, f"{_date(folder)}_B8A.tif")
    os.remove(missing)
    config = ingest_lib.IngestConfig(
        input=folder, out_dir=str(tmp_path / "root2"), pix10=12, labels=labels
    )
    with pytest.raises(rasters.RasterError, match="missing") as error:
        ingest_lib.ingest(config)
    assert missing in str(error.value)


def test_repeated_scene_ingests_into_equal_tiles(tmp_path):
    folder = str(tmp_path / "scene")
    labels = geotiff.write_repeated_scene(folder, 72, 60, num_dates=2, pattern_size=12)
    assert len(scenes.find_dates(folder)) == 2
    root = str(tmp_path / "root")
    ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=labels))
    first, _ = records.read_tile(os.path.join(root, "data16", "0.tfrecord.gz"))
    assert first.x10.any() and first.labels.any()
    for tileid in range(1, 30):  # 6 x 5 tiles, written in strips of 48 and 12 rows
        tile, _ = records.read_tile(os.path.join(root, "data16", f"{tileid}.tfrecord.gz"))
        for field in ("x10", "x20", "x60", "labels"):
            np.testing.assert_array_equal(getattr(tile, field), getattr(first, field), field)
