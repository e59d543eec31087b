"""Evaluation: files written, their consistency with the model's predictions, GeoTIFFs, errors."""

import csv
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import dataset_root, input_pipeline, records, transforms
from data_pipeline.data_config import DataConfig
from mtlcc_tf import evaluate_lib, images, model_dir, model_restore, models, tile_predictions
from mtlcc_tf.model_config import ModelConfig
from tests.conftest import CLASSES, write_random_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEOTRANSFORM = dataset_root.Geotransform(xmin=690000.0, xres=10.0, ymax=5360040.0, yres=10.0,
                                         srid=32632)  # fmt: skip


def tiny_model(num_classes: int = CLASSES.num_classes) -> keras.Model:
    keras.utils.set_random_seed(0)
    config = ModelConfig(num_classes=num_classes, convcell="gru", convrnn_filters=4)
    return models.build_model(config)


def eval_config(root: str, **kwargs) -> DataConfig:
    return DataConfig(root=root, partition="eval", training=False, augment=False, **kwargs)


def predictions_by_hand(model: keras.Model, config: DataConfig) -> dict[str, tuple]:
    """tileid -> (predicted class indices, labels, max probability), through the pipeline."""
    out = {}
    for batch in input_pipeline.build_dataset(config):
        logits = model({"inputs": batch["inputs"], "sequence_length": batch["sequence_length"]})
        probabilities = tf.nn.softmax(logits).numpy()
        for index, tileid in enumerate(batch["tileid"].numpy()):
            out[tileid.decode()] = (
                probabilities[index].argmax(-1),
                batch["labels"][index].numpy(),
                probabilities[index].max(-1),
            )
    return out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One evaluation with images on a 4-tile root (eval tiles 1 and 3; only 1 georeferenced)."""
    base = tmp_path_factory.mktemp("evaluate")
    root, out_dir = str(base / "root"), str(base / "out")
    tiles = write_random_root(root, num_tiles=4, pix10=12, nobs=5)
    dataset_root.write_geotransforms(root, {"1": GEOTRANSFORM})
    model = tiny_model()
    config = eval_config(root, batch_size=2)
    summary = evaluate_lib.evaluate(
        model, config, CLASSES, out_dir=out_dir, write_images=True,
        metadata={"checkpoint": "ckpt-7", "step": 7}, log_every=1,
    )  # fmt: skip
    return summary, out_dir, predictions_by_hand(model, config), tiles, root


def test_metrics_match_the_models_predictions(evaluated):
    summary, out_dir, by_hand, _, _ = evaluated
    with open(os.path.join(out_dir, "metrics.json")) as handle:
        written = json.load(handle)
    assert written == json.loads(json.dumps(summary))
    correct = sum(np.sum((p == y) & (y >= 0)) for p, y, _ in by_hand.values())
    known = sum(np.sum(y >= 0) for _, y, _ in by_hand.values())
    assert written["num_pixels"] == known
    assert written["overall_accuracy"] == pytest.approx(correct / known)
    assert written["num_tiles"] == 2
    assert written["checkpoint"] == "ckpt-7" and written["step"] == 7
    assert written["data"]["partition"] == "eval" and written["data"]["temporal_samples"] is None
    assert list(written["per_class"]) == list(CLASSES.known_names)
    assert {"precision", "recall", "f1", "iou", "support"} <= set(written["per_class"]["maize"])
    for key in ("kappa", "macro_f1", "weighted_f1", "miou"):
        assert 0.0 <= written[key] <= 1.0 or key == "kappa"
    assert np.sum(written["confusion_matrix"]) == known
    report = open(os.path.join(out_dir, "report.md")).read()
    assert "winter wheat" in report and f"{written['overall_accuracy']:.3f}" in report
    assert os.path.getsize(os.path.join(out_dir, "confusion_matrix.png")) > 1000


def test_tiles_csv_has_a_row_per_eval_tile(evaluated):
    _, out_dir, by_hand, tiles, root = evaluated
    with open(os.path.join(out_dir, "tiles.csv")) as handle:
        rows = {row["tileid"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"1", "3"}
    for tileid, row in rows.items():
        predicted, labels, _ = by_hand[tileid]
        known = labels >= 0
        assert float(row["accuracy"]) == pytest.approx(np.mean(predicted[known] == labels[known]))
        assert int(row["num_known_pixels"]) == np.count_nonzero(known)
        assert row["section"] == "2016" and row["year"] == "2016"
        # Cloud coverage straight from the written tile: cloudy or shadow over real observations.
        tile = tiles[os.path.join(root, "data16", f"{tileid}.tfrecord.gz")]
        real = tile.doy > 0
        assert int(row["num_observations"]) == np.count_nonzero(real)
        expected = np.mean(tile.cloud_mask[real] != records.CLEAR)
        assert float(row["cloud_coverage"]) == pytest.approx(expected, abs=1e-6)


def test_images_and_geotiffs(evaluated):
    _, out_dir, by_hand, _, _ = evaluated
    folder = os.path.join(out_dir, "images", "2016")
    for tileid in ("1", "3"):
        for kind in ("prediction", "labels", "confidence"):
            assert os.path.isfile(os.path.join(folder, f"{tileid}_{kind}.png"))
    assert not os.path.exists(os.path.join(folder, "3_prediction.tif"))  # not georeferenced
    predicted, _, confidence = by_hand["1"]
    values, geotransform, epsg, names = images.read_geotiff(
        os.path.join(folder, "1_prediction.tif")
    )
    assert geotransform == pytest.approx(GEOTRANSFORM.gdal()) and epsg == GEOTRANSFORM.srid
    assert values.dtype == np.uint8
    np.testing.assert_array_equal(values, np.asarray(CLASSES.known_ids)[predicted])
    assert names[22] == "winter wheat" and names[26] == "maize"
    values, geotransform, epsg, _ = images.read_geotiff(os.path.join(folder, "1_confidence.tif"))
    assert values.dtype == np.float32 and epsg == GEOTRANSFORM.srid
    np.testing.assert_allclose(values, confidence, atol=1e-6)


def test_original_schema_has_no_cloud_coverage(tmp_path):
    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=2, pix10=6, nobs=3, schema=records.ORIGINAL)
    seen = []
    summary = evaluate_lib.evaluate(
        tiny_model(), eval_config(root), out_dir=str(tmp_path / "out"), on_tile=seen.append
    )
    assert summary["num_tiles"] == 1 and len(seen) == 1
    tile = seen[0]
    # Original records carry no tile id or cloud mask: the id comes from the file name.
    assert tile.tileid == "1" and tile.cloud_mask is None and tile.cloud_coverage is None
    with open(tmp_path / "out" / "tiles.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["tileid"] == "1" and row["cloud_coverage"] == ""


def test_class_mismatch_names_the_files(tmp_path):
    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=2, pix10=6, nobs=3)
    fewer = dataset_root.ClassTable(ids=(0, 1, 5, 22), names=("unknown", "a", "b", "c"))
    with pytest.raises(tile_predictions.ClassMismatchError, match="classes.txt"):
        evaluate_lib.evaluate(tiny_model(), eval_config(root), fewer)
    other_ids = dataset_root.ClassTable(ids=(0, 1, 5, 22, 27), names=CLASSES.names)
    with pytest.raises(tile_predictions.ClassMismatchError, match="class ids differ"):
        tile_predictions.check_classes(other_ids, CLASSES)
    with pytest.raises(
        tile_predictions.ClassMismatchError, match=r"outputs 3 classes.*classes.txt"
    ):
        next(tile_predictions.predict_tiles(tiny_model(num_classes=3), eval_config(root)))
    with pytest.raises(ValueError, match="training=False"):
        next(tile_predictions.predict_tiles(tiny_model(), DataConfig(root=root)))


def test_tile_result_statistics():
    probabilities = np.zeros([2, 2, 3], np.float32)
    probabilities[..., 1] = 0.6
    probabilities[..., 0] = 0.4
    labels = np.array([[1, 0], [-1, 1]], np.int32)
    cloud_mask = np.array([[[0, 1], [2, 0]], [[0, 0], [0, 0]]], np.uint8)
    tile = tile_predictions.TileResult(
        "7", "2017", 2017, "x", probabilities, labels, cloud_mask, np.array([10, 20], np.int32)
    )
    assert tile.num_known_pixels == 3 and tile.num_correct_pixels == 2
    assert tile.accuracy == pytest.approx(2 / 3)
    assert tile.cloud_coverage == pytest.approx(2 / 8)
    np.testing.assert_allclose(tile.pixel_cloud_coverage, [[0, 0.5], [0.5, 0]])
    np.testing.assert_array_equal(tile.confusion(3), [[0, 1, 0], [0, 2, 0], [0, 0, 0]])
    no_labels = tile_predictions.TileResult(
        "8", "2017", None, "x", probabilities, -np.ones_like(labels), None, np.zeros([0], np.int32)
    )
    assert math.isnan(no_labels.accuracy) and no_labels.row()["accuracy"] == ""
    assert no_labels.row()["cloud_coverage"] == "" and no_labels.row()["year"] == ""


def make_model_dir(directory: str, root: str, step: int = 3) -> keras.Model:
    """A model directory as mtlcc_tf.train leaves it: config.json and a last checkpoint."""
    model_config = ModelConfig(num_classes=CLASSES.num_classes, convcell="gru", convrnn_filters=4)
    keras.utils.set_random_seed(1)
    model = models.build_model(model_config)
    model(model_restore.dummy_inputs(model_config))
    model_dir.write_run_config(directory, model_config, DataConfig(root=root), CLASSES)
    checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64))
    manager = tf.train.CheckpointManager(
        checkpoint, model_dir.checkpoint_dir(directory, "last"), max_to_keep=1
    )
    manager.save(checkpoint_number=step)
    return model


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip


def test_entry_point(tmp_path):
    root, directory, out_dir = (str(tmp_path / name) for name in ("root", "model", "out"))
    write_random_root(root, num_tiles=4, pix10=6, nobs=3)
    make_model_dir(directory, root, step=3)
    # Defaults: the training's dataset root, the best checkpoint falling back to the last one.
    done = run_module(
        "mtlcc_tf.evaluate", f"--model_dir={directory}", f"--out_dir={out_dir}",
        "--test_time_views=2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tiles/s" in done.stderr
    with open(os.path.join(out_dir, "metrics.json")) as handle:
        written = json.load(handle)
    assert written["step"] == 3 and written["checkpoint"].endswith("ckpt-3")
    assert written["test_time_views"] == 2
    with open(os.path.join(out_dir, "tiles.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["tileid"] for row in rows] == ["1", "3"]
    correct = sum(int(row["num_correct_pixels"]) for row in rows)
    assert written["overall_accuracy"] == pytest.approx(correct / written["num_pixels"])
    assert sorted(os.listdir(out_dir)) == [
        "confusion_matrix.png", "metrics.json", "report.md", "tiles.csv",
    ]  # fmt: skip


@pytest.mark.slow
def test_entry_point_errors(tmp_path):
    root, directory = str(tmp_path / "root"), str(tmp_path / "model")
    write_random_root(root, num_tiles=2, pix10=6, nobs=3)
    # What the entry point restores through, in process (test_entry_points runs it on a missing
    # folder: exit 1 and the message), then one run that fails after the restore.
    with pytest.raises(FileNotFoundError, match="no such directory"):
        model_restore.restore_for_inference(str(tmp_path / "nothing"), "best")
    os.makedirs(directory)
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        model_restore.restore_for_inference(directory, "best")
    model_config = ModelConfig(num_classes=CLASSES.num_classes, convrnn_filters=4)
    model_dir.write_run_config(directory, model_config, DataConfig(root=root), CLASSES)
    with pytest.raises((FileNotFoundError, ValueError), match="no checkpoint in"):
        model_restore.restore_for_inference(directory, "best")
    make_model_dir(directory, root)
    other = str(tmp_path / "other")
    write_random_root(other, num_tiles=2, pix10=6, nobs=3)
    dataset_root.write_classes(
        other, dataset_root.ClassTable((0, 1, 5), ("unknown", "sugar beet", "rape"))
    )
    mismatch = run_module("mtlcc_tf.evaluate", f"--model_dir={directory}", f"--datadir={other}")
    assert mismatch.returncode == 1
    assert (
        f"{directory}/config.json" in mismatch.stderr and f"{other}/classes.txt" in mismatch.stderr
    )


def test_restored_model_predicts_like_the_trained_one(tmp_path):
    root, directory = str(tmp_path / "root"), str(tmp_path / "model")
    write_random_root(root, num_tiles=2, pix10=6, nobs=3)
    model = make_model_dir(directory, root)
    restored, _ = model_restore.restore_model(directory, "last")
    expected = evaluate_lib.evaluate(model, eval_config(root))["overall_accuracy"]
    assert evaluate_lib.evaluate(restored, eval_config(root))["overall_accuracy"] == expected


def test_test_time_views_average_the_views_by_hand_and_make_predictions_equivariant(tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=[2, 3, 6, 6, 15]).astype(np.float32)
    sequence_length = np.array([3, 2], np.int32)

    def softmax(x):
        logits = model({"inputs": x, "sequence_length": sequence_length}, training=False)
        return tf.nn.softmax(logits).numpy()

    np.testing.assert_allclose(
        tile_predictions.viewed_probabilities(model, inputs, sequence_length).numpy(),
        softmax(inputs),
        atol=1e-6,
    )
    by_hand = np.zeros_like(softmax(inputs))
    for quarter_turns, flip in transforms.VIEWS:
        viewed = np.flip(inputs, 3) if flip else inputs
        probabilities = np.rot90(softmax(np.rot90(viewed, quarter_turns, (2, 3)).copy()),
                                 -quarter_turns, (1, 2))  # fmt: skip
        by_hand += np.flip(probabilities, 2) if flip else probabilities
    averaged = tile_predictions.viewed_probabilities(model, inputs, sequence_length, 8).numpy()
    np.testing.assert_allclose(averaged, by_hand / 8, atol=1e-5)
    np.testing.assert_allclose(averaged.sum(-1), 1.0, atol=1e-5)
    # Averaged over all 8, a turned tile gets the turned map (not so for a single view).
    turned = np.rot90(inputs, 1, (2, 3)).copy()
    of_turned = tile_predictions.viewed_probabilities(model, turned, sequence_length, 8).numpy()
    np.testing.assert_allclose(of_turned, np.rot90(averaged, 1, (1, 2)), atol=1e-5)
    assert not np.allclose(softmax(turned), np.rot90(softmax(inputs), 1, (1, 2)), atol=1e-3)

    with pytest.raises(ValueError, match="one of"):
        tile_predictions.check_views(3)
    with pytest.raises(ValueError, match="square"):
        tile_predictions.viewed_probabilities(model, inputs[:, :, :4], sequence_length, 8)
    flips = tile_predictions.viewed_probabilities(model, inputs[:, :, :4], sequence_length, 4)
    assert flips.shape == (2, 4, 6, CLASSES.num_classes)

    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=4, pix10=6, nobs=3)
    out_dir = str(tmp_path / "out")
    summary = evaluate_lib.evaluate(
        model, eval_config(root, batch_size=2), out_dir=out_dir, views=4
    )
    assert summary["test_time_views"] == 4
    with open(os.path.join(out_dir, "report.md")) as handle:
        assert "softmax averaged over 4 flips" in handle.read()
    assert evaluate_lib.evaluate(model, eval_config(root))["test_time_views"] == 1
