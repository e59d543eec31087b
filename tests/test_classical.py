"""Classical baseline: composites on constructed series, training and scoring, the entry point."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import dataset_root, records
from data_pipeline.data_config import DataConfig
from mtlcc_tf import classical_lib, composites, pixel_features
from tests.conftest import CLASSES, write_random_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B4, B2, B8 = (composites.BANDS.index(band) for band in ("B4", "B2", "B8"))
NDVI = composites.CHANNELS.index("NDVI")
NUM_CHANNELS = len(composites.CHANNELS)


def channel(features: np.ndarray, window: int, index: int) -> np.ndarray:
    """One channel of one window (0-based) of `tile_features`' output."""
    return features[..., window * NUM_CHANNELS + index]


def constructed_series():
    """One row of two pixels: January has a cloud, February and November-December are empty.

    Pixel 0's B4 is 0.1, 0.9 (cloudy), 0.3 in January (days 5, 15, 25) and 0.5 in March; pixel 1
    is cloudy in every observation.
    """
    doy = np.array([5, 15, 25, 75, 105, 135, 166, 196, 227, 258, 288])
    reflectance = np.full([len(doy), 1, 2, composites.NUM_BANDS], 0.1, np.float32)
    reflectance[:, 0, 0, B8] = 0.4
    reflectance[:4, 0, 0, B4] = [0.1, 0.9, 0.3, 0.5]
    reflectance[1, 0, 0, B2] = 0.8  # the cloud is bright in blue, too
    cloudy = np.zeros([len(doy), 1, 2], bool)
    cloudy[1, 0, 0] = True
    cloudy[:, 0, 1] = True
    return reflectance, doy, cloudy


def test_masked_composite_ignores_clouds_and_interpolates_gaps():
    reflectance, doy, cloudy = constructed_series()
    config = composites.FeatureConfig(variant="masked").validate()
    features, gaps = composites.tile_features(reflectance, doy, cloudy, config)
    assert features.shape == (1, 2, config.num_features) and config.num_features == 12 * 16
    assert channel(features, 0, B4)[0, 0] == pytest.approx(0.2)  # median of 0.1 and 0.3
    # February (centre day 45.5) lies between January (16) and March (75) composites.
    assert channel(features, 1, B4)[0, 0] == pytest.approx(0.2 + 0.3 * (45.5 - 16) / (75 - 16))
    # November and December take October's value (nearest).
    assert channel(features, 10, B4)[0, 0] == pytest.approx(0.1)
    assert channel(features, 11, B4)[0, 0] == pytest.approx(0.1)
    # Indices are computed per observation, then composited: the median of 0.6 and 0.1 / 0.7.
    assert channel(features, 0, NDVI)[0, 0] == pytest.approx((0.3 / 0.5 + 0.1 / 0.7) / 2)
    assert channel(features, 4, NDVI)[0, 0] == pytest.approx((0.4 - 0.1) / 0.5)
    assert gaps[:, 0, 0].tolist() == [False, True] + [False] * 8 + [True, True]
    # A pixel cloudy all year has no usable observation: every window is a gap, features are 0.
    assert gaps[:, 0, 1].all() and not features[0, 1].any()


def test_raw_composite_keeps_clouds():
    reflectance, doy, cloudy = constructed_series()
    config = composites.FeatureConfig(variant="raw", statistic="mean").validate()
    features, gaps = composites.tile_features(reflectance, doy, None, config)
    assert channel(features, 0, B4)[0, 0] == pytest.approx((0.1 + 0.9 + 0.3) / 3)
    assert channel(features, 0, B4)[0, 1] == pytest.approx(0.1)  # clouds count as observations
    expected_gaps = [False, True] + [False] * 8 + [True, True]
    assert gaps[:, 0, 1].tolist() == gaps[:, 0, 0].tolist() == expected_gaps
    with pytest.raises(ValueError, match="needs a cloud mask"):
        composites.tile_features(reflectance, doy, None, composites.FeatureConfig())


def test_ten_day_windows_and_feature_names():
    edges = composites.window_edges("10day")
    assert len(edges) == 38 and edges[0] == 1 and edges[-2] == 361 and edges[-1] == 367
    names = composites.feature_names("10day")
    assert len(names) == composites.FeatureConfig(windows="10day").num_features == 37 * 16
    assert names[0] == "w01/B4" and names[-1] == "w37/NDRE"
    reflectance, doy, cloudy = constructed_series()
    config = composites.FeatureConfig(windows="10day")
    features, gaps = composites.tile_features(reflectance, doy, cloudy, config)
    assert features.shape[-1] == len(names) and gaps.shape == (37, 1, 2)
    # Day 15 (the cloud) is alone in window 2 (days 11-20): a gap filled from its neighbours.
    assert gaps[1, 0, 0] and channel(features, 1, B4)[0, 0] == pytest.approx(0.2)


def test_fill_gaps_and_brightness_rule():
    series = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan], np.float32)[:, None]
    filled = composites.fill_gaps(series, np.arange(6, dtype=np.float32))
    np.testing.assert_allclose(filled[:, 0], [1, 1, 2, 3, 4, 4])
    assert np.isnan(composites.fill_gaps(np.full([3, 1], np.nan), np.arange(3))).all()
    reflectance, _, _ = constructed_series()
    mask = composites.brightness_cloud_mask(reflectance, 0.2)
    assert mask[:, 0, 0].tolist() == [False, True] + [False] * 9 and not mask[:, 0, 1].any()
    for bad in (dict(variant="cloudless"), dict(windows="weekly"), dict(cloud_threshold=2.0)):
        with pytest.raises(ValueError, match="FeatureConfig"):
            composites.FeatureConfig(**bad).validate()


def test_pixel_sample_is_capped_uniform_and_seeded():
    def draw(seed, capacity=100, chunks=20):
        sample = pixel_features.PixelSample(capacity, seed)
        for chunk in range(chunks):
            labels = np.full(50, chunk, np.int32)
            sample.add(np.arange(50, dtype=np.float32)[:, None] + 100 * chunk, labels)
        return sample.arrays()

    features, labels = draw(seed=0)
    assert features.shape == (100, 1) and len(set(features[:, 0])) == 100
    assert len(np.unique(labels)) > 10  # drawn from all over the stream, not the first chunks
    np.testing.assert_array_equal(draw(seed=0)[1], labels)
    assert not np.array_equal(draw(seed=1)[1], labels)
    assert len(draw(seed=0, capacity=5000)[1]) == 1000  # fewer pixels than the cap: all of them


def write_separable_root(root: str, num_tiles: int = 4, pix10: int = 12, **kwargs) -> None:
    """A root whose classes differ in summer NIR, under bright clouds that the mask marks.

    Even tile ids are training tiles, odd ones eval and test tiles (as in write_random_root).
    """
    rng = np.random.default_rng(0)
    doy = np.arange(10, 360, 20)  # 18 observations, none in some 10-day windows
    nobs = len(doy)
    section = dataset_root.DatasetSection("2016", "data16", pix10, nobs)
    for index in range(num_tiles):
        labels = rng.choice(np.array(CLASSES.known_ids), (pix10, pix10))
        labels[0, 0] = 0
        class_index = np.vectorize(CLASSES.index_of().get)(labels)
        x10 = np.full((nobs, pix10, pix10, 4), 800.0)
        summer = (doy > 120) & (doy < 250)
        x10[summer, ..., 3] = 2000 + 1000 * class_index  # B8
        x10 += rng.normal(0, 100, x10.shape)
        cloud_mask = (rng.random((nobs, pix10, pix10)) < 0.4).astype(np.uint8)
        x10[cloud_mask == records.CLOUD] = 6000
        tile = records.Tile(
            tileid=str(index),
            x10=np.clip(x10, 1, None).astype(np.int64),
            x20=np.full((nobs, pix10 // 2, pix10 // 2, 6), 1000, np.int64),
            x60=np.full((nobs, pix10 // 6, pix10 // 6, 3), 1000, np.int64),
            doy=doy,
            year=np.full(nobs, 2016),
            labels=labels,
            cloud_mask=cloud_mask,
        )
        path = os.path.join(root, section.datadir, f"{index}.tfrecord.gz")
        records.write_tile(path, tile, **kwargs)
    dataset_root.write_dataset_ini(root, [section])
    dataset_root.write_classes(root, CLASSES)
    ids = [str(i) for i in range(num_tiles)]
    dataset_root.write_tileids(root, "train_fold0", ids[0::2])
    dataset_root.write_tileids(root, "test_fold0", ids[1::2])
    dataset_root.write_tileids(root, "eval", ids[1::2])


def data_configs(root: str, partition: str = "eval") -> tuple[DataConfig, DataConfig]:
    train = DataConfig(root=root, partition="train", training=False, augment=False)
    return train, DataConfig(root=root, partition=partition, training=False, augment=False)


@pytest.fixture(scope="module")
def separable_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("classical") / "root")
    write_separable_root(root)
    return root


def test_train_and_evaluate_writes_what_evaluate_writes(separable_root, tmp_path):
    out_dir = str(tmp_path / "out")
    features = composites.FeatureConfig(windows="10day")
    classifier = classical_lib.ClassifierConfig(num_trees=10, max_train_pixels=200)
    summary = classical_lib.train_and_evaluate(
        *data_configs(separable_root), features, classifier, out_dir=out_dir, log_every=1
    )
    assert sorted(os.listdir(out_dir)) == [
        "confusion_matrix.png", "metrics.json", "report.md", "tiles.csv",
    ]  # fmt: skip
    with open(os.path.join(out_dir, "metrics.json")) as handle:
        written = json.load(handle)
    assert written == json.loads(json.dumps(summary))
    assert written["overall_accuracy"] > 0.95 and written["kappa"] > 0.9
    assert written["num_tiles"] == 2 and written["num_pixels"] == 2 * (12 * 12 - 1)
    assert list(written["per_class"]) == list(CLASSES.known_names)
    baseline = written["baseline"]
    assert baseline["variant"] == "masked" and baseline["classifier"] == "random_forest"
    assert baseline["num_training_pixels"] == 200
    assert baseline["num_training_pixels_available"] == 2 * (12 * 12 - 1)
    assert baseline["num_training_tiles"] == 2 and baseline["num_features"] == 37 * 16
    assert len(baseline["feature_names"]) == 37 * 16
    assert baseline["train"]["cloud_mask_sources"] == {"record": 2, "brightness": 0}
    assert 0 < baseline["evaluation"]["gap_fraction"] < 1
    assert baseline["evaluation"]["num_tiles"] == 2
    assert baseline["train_seconds"] >= baseline["fit_seconds"] > 0
    assert baseline["evaluation"]["seconds"] > 0
    with open(os.path.join(out_dir, "report.md")) as handle:
        report = handle.read()
    assert "classical baseline: random_forest (10 trees) on 10day median" in report
    with open(os.path.join(out_dir, "tiles.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["tileid"] for row in rows] == ["1", "3"] and rows[0]["cloud_coverage"]


def test_raw_variant_and_gradient_boosting(separable_root):
    features = composites.FeatureConfig(variant="raw")
    classifier = classical_lib.ClassifierConfig(
        classifier="hist_gradient_boosting", num_trees=5, num_jobs=1
    )
    summary = classical_lib.train_and_evaluate(
        *data_configs(separable_root, "test"), features, classifier
    )
    baseline = summary["baseline"]
    assert baseline["variant"] == "raw" and baseline["classifier"] == "hist_gradient_boosting"
    assert baseline["train"]["cloud_mask_sources"] == {"record": 0, "brightness": 0}
    assert summary["data"]["partition"] == "test" and 0 <= summary["overall_accuracy"] <= 1


def test_records_without_a_cloud_mask_use_the_brightness_rule(tmp_path):
    root = str(tmp_path / "root")
    write_separable_root(root, schema=records.ORIGINAL)  # the original schema has no mask
    features = composites.FeatureConfig()
    classifier = classical_lib.ClassifierConfig(num_trees=5)
    summary = classical_lib.train_and_evaluate(*data_configs(root), features, classifier)
    assert summary["baseline"]["train"]["cloud_mask_sources"] == {"record": 0, "brightness": 2}
    assert summary["overall_accuracy"] > 0.9  # the clouds here are bright: the rule finds them
    with pytest.raises(ValueError, match=r"0\.tfrecord\.gz: the record has no cloud mask"):
        classical_lib.train_and_evaluate(
            *data_configs(root), composites.FeatureConfig(cloud_mask="record"), classifier
        )


def test_bad_input_is_named(tmp_path):
    classifier = classical_lib.ClassifierConfig(num_trees=2)
    features = composites.FeatureConfig()
    missing = str(tmp_path / "nothing")
    with pytest.raises(dataset_root.DatasetError, match="nothing: dataset root does not exist"):
        classical_lib.train_and_evaluate(*data_configs(missing), features, classifier)
    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=2, pix10=6, nobs=3)
    dataset_root.write_tileids(root, "eval", ["17", "18"])
    with pytest.raises(dataset_root.DatasetError, match=r"eval\.tileids: empty split"):
        classical_lib.train_and_evaluate(*data_configs(root), features, classifier)
    unlabelled = str(tmp_path / "unlabelled")
    tiles = write_random_root(unlabelled, num_tiles=2, pix10=6, nobs=3)
    for path, tile in tiles.items():
        tile.labels[:] = 0
        records.write_tile(path, tile)
    with pytest.raises(ValueError, match=r"train_fold0\.tileids: .* nothing to train on"):
        classical_lib.train_and_evaluate(*data_configs(unlabelled), features, classifier)
    with pytest.raises(ValueError, match="num_trees=0"):
        classical_lib.ClassifierConfig(num_trees=0).validate()
    with pytest.raises(ValueError, match="classifier='svm'"):
        classical_lib.ClassifierConfig(classifier="svm").validate()


def run_classical(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtlcc_tf.classical", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip


@pytest.mark.slow
def test_entry_point(separable_root, tmp_path):
    out_dir = str(tmp_path / "out")
    done = run_classical(
        f"--datadir={separable_root}", f"--out_dir={out_dir}", "--num_trees=5",
        "--partitions=train,test", "--variant=raw", "--max_train_pixels=100",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training features" in done.stderr and "overall accuracy" in done.stderr
    # One fit, each partition in its own folder.
    assert done.stderr.count("training features") == 1
    assert sorted(os.listdir(out_dir)) == ["test", "train"]
    with open(os.path.join(out_dir, "train", "metrics.json")) as handle:
        assert json.load(handle)["data"]["partition"] == "train"
    out_dir = os.path.join(out_dir, "test")
    with open(os.path.join(out_dir, "metrics.json")) as handle:
        written = json.load(handle)
    assert 0.5 < written["overall_accuracy"] <= 1 and -1 <= written["kappa"] <= 1
    assert written["baseline"]["variant"] == "raw"
    assert written["baseline"]["num_training_pixels"] == 100
    assert written["data"]["partition"] == "test"
    assert sorted(os.listdir(out_dir)) == [
        "confusion_matrix.png", "metrics.json", "report.md", "tiles.csv",
    ]  # fmt: skip
    bad = run_classical(f"--datadir={separable_root}", f"--out_dir={out_dir}", "--partitions=x")
    assert bad.returncode != 0 and "--partitions: one or more of train, test, eval" in bad.stderr
    missing = run_classical(f"--datadir={tmp_path / 'nothing'}", f"--out_dir={out_dir}")
    assert missing.returncode == 1
    assert "classical: " in missing.stderr and "nothing: dataset root does not exist" in (
        missing.stderr
    )
