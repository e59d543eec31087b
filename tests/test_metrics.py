"""Tests for mtlcc_tf.metrics: hand-worked summaries, masking, and MirroredStrategy aggregation."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlcc_tf import metrics  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# Rows are true classes, columns predicted classes.
CONFUSION = np.array(
    [
        [5, 1, 0],
        [2, 3, 1],
        [0, 1, 7],
    ]
)
NAMES = ["beet", "oat", "maize"]


def _numpy_confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    known = labels >= 0
    expected = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(expected, (labels[known], predicted[known]), 1)
    return expected


def _numpy_cross_entropy(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    known = labels >= 0
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probabilities, np.maximum(labels, 0)[..., None], -1)[..., 0]
    return float(-picked[known].sum()), float(known.sum())


def test_summary_matches_hand_computation():
    # N = 20, trace = 15. Supports (row sums) 6, 6, 8; predicted (column sums) 7, 5, 8.
    overall = 15 / 20
    chance = (6 * 7 + 6 * 5 + 8 * 8) / 20**2  # = 136 / 400 = 0.34
    kappa = (overall - chance) / (1 - chance)  # = 0.41 / 0.66
    f1 = [2 * 5 / (6 + 7), 2 * 3 / (6 + 5), 2 * 7 / (8 + 8)]  # 2TP / (support + predicted)
    iou = [5 / (6 + 7 - 5), 3 / (6 + 5 - 3), 7 / (8 + 8 - 7)]  # TP / (support + predicted - TP)

    summary = metrics.summarize(CONFUSION, NAMES)

    assert set(summary) == {
        "overall_accuracy",
        "kappa",
        "macro_f1",
        "weighted_f1",
        "miou",
        "per_class",
        "num_pixels",
    }
    assert summary["num_pixels"] == 20
    assert summary["overall_accuracy"] == pytest.approx(0.75)
    assert summary["kappa"] == pytest.approx(kappa)
    assert summary["kappa"] == pytest.approx(0.6212121212)
    assert summary["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert summary["weighted_f1"] == pytest.approx((6 * f1[0] + 6 * f1[1] + 8 * f1[2]) / 20)
    assert summary["miou"] == pytest.approx(16 / 27)  # (5/8 + 3/8 + 7/9) / 3
    assert summary["per_class"]["beet"] == pytest.approx(
        {"precision": 5 / 7, "recall": 5 / 6, "f1": 10 / 13, "iou": 5 / 8, "support": 6,
         "predicted": 7}
    )  # fmt: skip
    assert [summary["per_class"][name]["iou"] for name in NAMES] == pytest.approx(iou)
    assert summary["per_class"]["oat"]["precision"] == pytest.approx(3 / 5)
    assert summary["per_class"]["maize"]["recall"] == pytest.approx(7 / 8)
    json.dumps(summary)  # plain Python numbers only

    averages = metrics.class_averages(summary["per_class"])
    assert averages["macro"]["f1"] == pytest.approx(summary["macro_f1"])
    assert averages["macro"]["iou"] == pytest.approx(summary["miou"])
    assert averages["weighted"]["f1"] == pytest.approx(summary["weighted_f1"])
    assert averages["weighted"]["recall"] == pytest.approx(summary["overall_accuracy"])
    assert averages["macro"]["precision"] == pytest.approx((5 / 7 + 3 / 5 + 7 / 8) / 3)


def test_perfect_prediction():
    summary = metrics.summarize(np.diag([3, 4, 5]), NAMES)
    for key in ("overall_accuracy", "kappa", "macro_f1", "weighted_f1", "miou"):
        assert summary[key] == pytest.approx(1.0), key


def test_single_class_present_is_defined_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = metrics.summarize([[10, 0], [0, 0]], ["meadow", "hop"])
        # The model calls everything class 1 on balanced data: no better than chance.
        constant = metrics.summarize([[0, 5], [0, 5]], ["meadow", "hop"])

    # p_e == 1 makes kappa 0/0; agreement is perfect, so it is defined as 1.
    assert summary["kappa"] == 1.0
    assert summary["overall_accuracy"] == 1.0
    # "hop" is neither present nor predicted: all zero, and left out of the macro means.
    assert summary["per_class"]["hop"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0, "support": 0, "predicted": 0
    }  # fmt: skip
    assert summary["macro_f1"] == 1.0
    assert summary["miou"] == 1.0

    assert constant["overall_accuracy"] == 0.5
    assert constant["kappa"] == pytest.approx(0.0)  # p_e = (5*0 + 5*10) / 100 = 0.5 = p_o
    assert constant["per_class"]["meadow"]["precision"] == 0.0  # never predicted: 0, not NaN
    assert constant["macro_f1"] == pytest.approx((0 + 2 * 5 / 15) / 2)


def test_invalid_and_empty_matrices_raise():
    with pytest.raises(ValueError, match="empty"):
        metrics.summarize(np.zeros((3, 3)), NAMES)
    with pytest.raises(ValueError, match="empty"):
        metrics.overall_accuracy(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="square"):
        metrics.cohen_kappa(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.miou([[1, -1], [0, 1]])
    with pytest.raises(ValueError, match="class names"):
        metrics.summarize(CONFUSION, NAMES[:2])


def test_batch_confusion_matrix_masks_unknown_and_accepts_logits_or_ids():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 3, size=(2, 4, 4)).astype(np.int32)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    predicted = logits.argmax(-1)
    expected = _numpy_confusion(labels, predicted, 3)

    from_logits = metrics.batch_confusion_matrix(labels, logits, 3)
    from_ids = metrics.batch_confusion_matrix(labels, predicted, 3)

    assert from_logits.dtype == tf.int64
    np.testing.assert_array_equal(from_logits, expected)
    np.testing.assert_array_equal(from_ids, expected)
    assert int(tf.reduce_sum(from_logits)) == int((labels >= 0).sum())

    # A per-example 0/1 weight drops the second example.
    first_only = metrics.batch_confusion_matrix(labels, logits, 3, sample_weight=[1, 0])
    np.testing.assert_array_equal(first_only, _numpy_confusion(labels[:1], predicted[:1], 3))

    with pytest.raises(tf.errors.InvalidArgumentError, match="label id"):
        metrics.batch_confusion_matrix(np.full((1, 2, 2), 3), np.zeros((1, 2, 2)), 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="predicted id"):
        metrics.batch_confusion_matrix(np.zeros((1, 2, 2)), np.full((1, 2, 2), -2), 3)
    # Predictions at unknown pixels are ignored, whatever they hold.
    ignored = metrics.batch_confusion_matrix([[-1, 0]], [[-1, 0]], 3)
    np.testing.assert_array_equal(ignored, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="logits"):
        metrics.batch_confusion_matrix(labels, logits[..., None], 3)


def test_class_weights_follow_the_power_and_average_one_per_pixel():
    counts = [900, 100, 0, 25]
    np.testing.assert_allclose(metrics.class_weights(counts, 0.0), [1, 1, 0, 1])
    weights = np.array(metrics.class_weights(counts, 0.5))
    assert weights[2] == 0.0
    assert np.dot(weights, counts) / sum(counts) == pytest.approx(1.0)
    # inverse square-root frequency: 9x fewer pixels -> 3x the weight
    assert weights[1] / weights[0] == pytest.approx(3.0)
    assert weights[3] / weights[1] == pytest.approx(2.0)
    inverse = np.array(metrics.class_weights(counts, 1.0))
    assert inverse[3] * 25 == pytest.approx(inverse[0] * 900)  # every class weighs the same
    with pytest.raises(ValueError, match=">= 0"):
        metrics.class_weights(counts, -1.0)
    with pytest.raises(ValueError, match="no labelled pixels"):
        metrics.class_weights([0, 0], 0.5)


def test_weighted_cross_entropy_scales_each_pixel_by_its_class_weight():
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 3, size=(2, 4, 4)).astype(np.int32)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    weights = (0.5, 2.0, 1.0)
    sum_loss, num_known = metrics.masked_cross_entropy(labels, logits, weights)
    expected = 0.0
    for value in range(3):
        only = np.where(labels == value, labels, -1)
        expected += weights[value] * _numpy_cross_entropy(only, logits)[0]
    assert float(sum_loss) == pytest.approx(expected, rel=1e-5)
    assert float(num_known) == float((labels >= 0).sum())


def test_confusion_matrix_metric_streams_in_tf_function_and_resets():
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 4, size=(3, 2, 5, 5)).astype(np.int32)
    logits = rng.normal(size=(3, 2, 5, 5, 4)).astype(np.float32)
    metric = metrics.ConfusionMatrix(4)

    update = tf.function(metric.update_state)
    for batch_labels, batch_logits in zip(labels, logits, strict=True):
        update(batch_labels, batch_logits)

    np.testing.assert_array_equal(metric.result(), _numpy_confusion(labels, logits.argmax(-1), 4))
    metric.reset_state()
    np.testing.assert_array_equal(metric.result(), np.zeros((4, 4)))

    restored = metrics.ConfusionMatrix.from_config(metric.get_config())
    assert (restored.num_classes, restored.state_dtype) == (4, "int64")


def test_masked_cross_entropy_and_accuracy_counts():
    rng = np.random.default_rng(2)
    labels = rng.integers(-1, 3, size=(2, 3, 3)).astype(np.int32)
    labels[0, 0, 0] = -1
    logits = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    expected_sum, expected_count = _numpy_cross_entropy(labels, logits)
    logits[0, 0, 0] = np.nan  # garbage at an unknown pixel must not leak into the loss

    sum_loss, num_known = metrics.masked_cross_entropy(labels, logits)
    assert float(sum_loss) == pytest.approx(expected_sum, rel=1e-5)
    assert float(num_known) == expected_count

    predicted = np.nan_to_num(logits).argmax(-1)
    known = labels >= 0
    num_correct, num_known = metrics.masked_accuracy_counts(labels, predicted)
    assert float(num_correct) == float((predicted == labels)[known].sum())
    assert float(num_known) == float(known.sum())

    all_unknown = np.full((1, 2, 2), -1)
    sum_loss, num_known = metrics.masked_cross_entropy(all_unknown, np.zeros((1, 2, 2, 3)))
    assert (float(sum_loss), float(num_known)) == (0.0, 0.0)


# Runs in a fresh interpreter: logical CPU devices can only be configured before TF first runs
# an op, which the rest of this module has already done.
_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mtlcc_tf import metrics

    data = np.load(sys.argv[1])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        metric = metrics.ConfusionMatrix(int(data["num_classes"]))
    dataset = tf.data.Dataset.from_tensor_slices((data["labels"], data["logits"])).batch(4)

    @tf.function
    def step(labels, logits):
        def replica_step(labels, logits):
            metric.update_state(labels, logits)
            return metrics.masked_cross_entropy(labels, logits)
        sums = strategy.run(replica_step, args=(labels, logits))
        return [strategy.reduce("SUM", value, axis=None) for value in sums]

    def run_epoch():
        loss, count = 0.0, 0.0
        for labels, logits in strategy.experimental_distribute_dataset(dataset):
            batch_loss, batch_count = step(labels, logits)
            loss, count = loss + float(batch_loss), count + float(batch_count)
        return loss, count

    run_epoch()
    metric.reset_state()  # cross-replica reset must zero every replica's copy
    loss, count = run_epoch()
    print(json.dumps({
        "num_replicas": strategy.num_replicas_in_sync,
        "confusion": metric.result().numpy().tolist(),
        "per_replica": [v.numpy().tolist() for v in metric.confusion.value.values],
        "loss": loss,
        "count": count,
    }))
    """
)


def test_confusion_matrix_aggregates_under_mirrored_strategy(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 3, size=(8, 6, 6)).astype(np.int32)
    logits = rng.normal(size=(8, 6, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "data.npz", labels=labels, logits=logits, num_classes=3)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))

    completed = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, str(tmp_path / "data.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    expected = _numpy_confusion(labels, logits.argmax(-1), 3)
    assert result["num_replicas"] == 2
    np.testing.assert_array_equal(result["confusion"], expected)
    # Both replicas counted a share, and the result is their sum (not one replica's copy).
    per_replica = np.array(result["per_replica"])
    assert all(part.sum() > 0 for part in per_replica)
    np.testing.assert_array_equal(per_replica.sum(axis=0), expected)
    expected_loss, expected_count = _numpy_cross_entropy(labels, logits)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result["count"] == expected_count
