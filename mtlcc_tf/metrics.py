"""Masked per-pixel losses, a distribution-safe streaming confusion matrix and its summaries."""

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Conventions shared with the data pipeline: known classes are 0..K-1 and every pixel whose label
# is negative (-1, "unknown") is left out of the loss and of every metric.
PER_CLASS_KEYS = ("precision", "recall", "f1", "iou", "support", "predicted")


# --------------------------------------------------------------------------------------------
# TensorFlow side: used inside `tf.function`s and `strategy.run`.
# --------------------------------------------------------------------------------------------


def _class_ids(labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    """Returns predicted class ids shaped like `labels`; logits are reduced by argmax."""
    labels_rank = labels.shape.rank
    predictions_rank = predictions.shape.rank
    if labels_rank is None or predictions_rank is None:
        raise ValueError("labels and predictions need a static rank.")
    if predictions_rank == labels_rank + 1:
        return tf.argmax(predictions, axis=-1, output_type=tf.int32)
    if predictions_rank == labels_rank:
        return tf.cast(predictions, tf.int32)
    raise ValueError(
        "predictions must be class ids shaped like labels or logits with one more (class) axis; "
        f"got labels shape {labels.shape} and predictions shape {predictions.shape}."
    )


def _broadcast_weight(sample_weight: Any, labels: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Broadcasts a [batch] or [batch, height, width] weight to the shape of `labels`."""
    weight = tf.cast(tf.convert_to_tensor(sample_weight), dtype)
    # Per-example weights of shape [batch] must align with the leading axis, not the trailing one
    # that numpy-style broadcasting would pick.
    for _ in range(labels.shape.rank - weight.shape.rank):
        weight = weight[..., tf.newaxis]
    return tf.broadcast_to(weight, tf.shape(labels))


def batch_confusion_matrix(
    labels: Any,
    predictions: Any,
    num_classes: int,
    sample_weight: Any = None,
    dtype: tf.DType | str = tf.int64,
) -> tf.Tensor:
    """Counts one batch into a confusion matrix, skipping unknown (negative) labels.

    Args:
      labels: int tensor `[batch, height, width]` (any shape works) of class indices, -1 = unknown.
      predictions: logits or probabilities `[batch, height, width, num_classes]`, or class ids
        shaped like `labels`.
      num_classes: K, the number of known classes.
      sample_weight: optional weights, `[batch]` or shaped like `labels`. With an integer `dtype`
        they are cast to integers, so use them as a 0/1 mask or pass a float `dtype`.
      dtype: dtype of the counts.

    Returns:
      `[num_classes, num_classes]` tensor; rows are true classes, columns predicted classes.

    Raises:
      ValueError: if the ranks of `labels` and `predictions` don't fit together.
      tf.errors.InvalidArgumentError: (at run time) if a label or predicted id is >= num_classes.
    """
    dtype = tf.as_dtype(dtype)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    predicted = _class_ids(labels, tf.convert_to_tensor(predictions))
    known = labels >= 0
    # Predictions at unknown pixels are never looked at, so they may hold anything (e.g. -1).
    predicted = tf.where(known, predicted, tf.zeros_like(predicted))
    weights = tf.cast(known, dtype)
    if sample_weight is not None:
        weights *= _broadcast_weight(sample_weight, labels, dtype)
    # Out-of-range ids would be dropped silently on GPU but raise on CPU: fail the same way on both.
    checks = [
        tf.debugging.assert_less(labels, num_classes, message="label id >= num_classes"),
        tf.debugging.assert_less(predicted, num_classes, message="predicted id >= num_classes"),
        tf.debugging.assert_non_negative(predicted, message="negative predicted id"),
    ]
    with tf.control_dependencies(checks):
        # A flat index per (true, predicted) pair turns the matrix into one segment sum, which
        # keeps shapes static (no boolean_mask) so the op also compiles under XLA.
        flat_index = tf.where(known, labels * num_classes + predicted, tf.zeros_like(labels))
    counts = tf.math.unsorted_segment_sum(
        tf.reshape(weights, [-1]), tf.reshape(flat_index, [-1]), num_classes * num_classes
    )
    return tf.reshape(counts, [num_classes, num_classes])


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class ConfusionMatrix(keras.metrics.Metric):
    """Streaming `[K, K]` confusion matrix (rows true, columns predicted) over known pixels.

    The state is created by `Metric.add_variable`, i.e. an ON_READ variable with SUM aggregation:
    under a `tf.distribute` strategy each replica counts its own shard inside `strategy.run` and
    `result()`, called in cross-replica context, returns the sum over replicas. Create the metric
    inside `strategy.scope()`.

    Counts are int64 by default, exact for any dataset size (float32 would stop counting at 2^24
    pixels per cell); pass `state_dtype="float64"` for fractional sample weights.
    """

    def __init__(
        self,
        num_classes: int,
        state_dtype: str = "int64",
        name: str = "confusion_matrix",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.state_dtype = state_dtype
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype=state_dtype,
            name="confusion",
        )

    def update_state(self, labels: Any, predictions: Any, sample_weight: Any = None) -> None:
        """Adds one batch; see `batch_confusion_matrix` for the accepted inputs."""
        self.confusion.assign_add(
            batch_confusion_matrix(
                labels, predictions, self.num_classes, sample_weight, dtype=self.state_dtype
            )
        )

    def result(self) -> tf.Tensor:
        return tf.convert_to_tensor(self.confusion)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "state_dtype": self.state_dtype,
        }


def masked_cross_entropy(
    labels: Any, logits: Any, class_weights: Any = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Summed softmax cross-entropy over known pixels and the number of known pixels.

    Returning the sum (not the mean) lets a distributed loop divide by the *global* number of known
    pixels, so replicas with many unknown pixels don't get more weight per pixel.

    Args:
      labels: int tensor `[batch, height, width]`, -1 = unknown.
      logits: `[batch, height, width, num_classes]`; computed in float32 (safe for mixed precision).
      class_weights: optional float `[num_classes]`: each pixel's loss is multiplied by its
        class's weight (the pixel count returned stays unweighted).

    Returns:
      `(sum_loss, num_known_pixels)`, both float32 scalars; `(0, 0)` when no pixel is known.
    """
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    known = labels >= 0
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(known, labels, tf.zeros_like(labels)), logits=logits
    )
    if class_weights is not None:
        weights = tf.cast(class_weights, tf.float32)
        per_pixel *= tf.gather(weights, tf.maximum(labels, 0))
    # tf.where rather than multiplying by the mask: 0 * NaN from a padded pixel would be NaN.
    sum_loss = tf.reduce_sum(tf.where(known, per_pixel, tf.zeros_like(per_pixel)))
    return sum_loss, tf.reduce_sum(tf.cast(known, tf.float32))


def class_weights(pixels_per_class, power: float) -> tuple[float, ...]:
    """Loss weights (share of class c)^-power, scaled so the mean weight per pixel is 1.

    power 0 gives all ones (plain cross-entropy), 0.5 inverse square-root frequency, 1 inverse
    frequency. Classes without pixels get weight 0 (they never occur in the loss anyway).

    Args:
      pixels_per_class: labelled training pixels per class index.
      power: the exponent, >= 0.
    """
    counts = np.asarray(pixels_per_class, np.float64)
    if power < 0:
        raise ValueError(f"class weight power must be >= 0, got {power}")
    if counts.sum() <= 0:
        raise ValueError("no labelled pixels to weight classes by")
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = (counts[present] / counts.sum()) ** -power
    weights /= (weights * counts).sum() / counts.sum()
    return tuple(float(weight) for weight in weights)


def masked_accuracy_counts(labels: Any, predictions: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Correctly classified and known pixel counts (float32 scalars) for overall accuracy.

    Args:
      labels: int tensor `[batch, height, width]`, -1 = unknown.
      predictions: logits `[batch, height, width, num_classes]` or class ids shaped like labels.

    Returns:
      `(num_correct, num_known_pixels)`.
    """
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    predicted = _class_ids(labels, tf.convert_to_tensor(predictions))
    known = labels >= 0
    correct = tf.logical_and(known, tf.equal(labels, predicted))
    return tf.reduce_sum(tf.cast(correct, tf.float32)), tf.reduce_sum(tf.cast(known, tf.float32))


# --------------------------------------------------------------------------------------------
# numpy side: summaries of a finished confusion matrix.
#
# Undefined ratios (0/0) are defined as 0 without warnings: precision of a class never predicted,
# recall of a class absent from the labels, and so on. A class that is neither present nor
# predicted ("inactive") has nothing to say about the model, so macro averages and mIoU average
# over *active* classes only (support > 0 or predicted > 0); a class predicted but absent still
# counts (with 0) because those predictions are all false positives.
# --------------------------------------------------------------------------------------------


def _as_confusion(confusion: Any) -> np.ndarray:
    """Validates a confusion matrix and returns it as float64 (exact up to 2^53 counts)."""
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion must be a non-empty square matrix, got shape {matrix.shape}.")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("confusion must hold finite, non-negative counts.")
    return matrix


def _total(matrix: np.ndarray) -> float:
    total = float(matrix.sum())
    if total <= 0:
        raise ValueError("confusion matrix is empty: no known pixels were counted.")
    return total


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio with 0 wherever the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def overall_accuracy(confusion: Any) -> float:
    """Fraction of known pixels on the diagonal. Raises ValueError for an empty matrix."""
    matrix = _as_confusion(confusion)
    return float(np.trace(matrix) / _total(matrix))


def cohen_kappa(confusion: Any) -> float:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e), with p_e = sum_k row_k * col_k / N^2.

    When p_e == 1 (every pixel is one class and is predicted as that class) kappa is 0/0; it is
    defined as 1.0 here, because agreement is then perfect. Raises ValueError for an empty matrix.
    """
    matrix = _as_confusion(confusion)
    total = _total(matrix)
    observed = np.trace(matrix) / total
    expected = float(np.sum(matrix.sum(axis=1) * matrix.sum(axis=0))) / total**2
    if np.isclose(expected, 1.0, rtol=0.0, atol=1e-12):
        return 1.0
    return float((observed - expected) / (1.0 - expected))


def per_class_metrics(confusion: Any) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1, IoU, support (true count) and predicted count.

    Returns:
      A dict of `[K]` arrays keyed by `PER_CLASS_KEYS`; undefined ratios are 0.
    """
    matrix = _as_confusion(confusion)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    return {
        "precision": _safe_divide(true_positives, predicted),
        "recall": _safe_divide(true_positives, support),
        # 2TP / (support + predicted) equals the harmonic mean of precision and recall, but is
        # defined (0) when one of them is.
        "f1": _safe_divide(2 * true_positives, support + predicted),
        "iou": _safe_divide(true_positives, support + predicted - true_positives),
        "support": support,
        "predicted": predicted,
    }


def _active(support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    active = (support > 0) | (predicted > 0)
    if not np.any(active):
        raise ValueError("confusion matrix is empty: no class is present or predicted.")
    return active


def macro_f1(confusion: Any) -> float:
    """Unweighted mean F1 over active classes (support > 0 or predicted > 0)."""
    stats = per_class_metrics(confusion)
    return float(np.mean(stats["f1"][_active(stats["support"], stats["predicted"])]))


def weighted_f1(confusion: Any) -> float:
    """Support-weighted mean F1 (sklearn's `average="weighted"`); absent classes weigh 0."""
    stats = per_class_metrics(confusion)
    return float(np.sum(stats["f1"] * stats["support"]) / _total(_as_confusion(confusion)))


def miou(confusion: Any) -> float:
    """Mean IoU over active classes (support > 0 or predicted > 0), as in PASTIS-style tables."""
    stats = per_class_metrics(confusion)
    return float(np.mean(stats["iou"][_active(stats["support"], stats["predicted"])]))


def class_averages(per_class: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Macro (over active classes) and support-weighted averages of a summary's `per_class`.

    Args:
      per_class: `summary["per_class"]`. Entries without `predicted` count as active iff their
        support is > 0.

    Returns:
      `{"macro": {...}, "weighted": {...}}`, each with precision, recall, f1 and iou; the macro
      f1/iou equal `macro_f1`/`miou` and the weighted f1 equals `weighted_f1`.
    """
    entries = list(per_class.values())
    support = np.array([entry["support"] for entry in entries], dtype=np.float64)
    predicted = np.array([entry.get("predicted", 0) for entry in entries], dtype=np.float64)
    active = _active(support, predicted)
    averages: dict[str, dict[str, float]] = {"macro": {}, "weighted": {}}
    for key in ("precision", "recall", "f1", "iou"):
        values = np.array([entry[key] for entry in entries], dtype=np.float64)
        averages["macro"][key] = float(np.mean(values[active]))
        averages["weighted"][key] = float(_safe_divide(np.sum(values * support), support.sum()))
    return averages


def summarize(confusion: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """All summary statistics of a confusion matrix as plain Python numbers (JSON-ready).

    Args:
      confusion: `[K, K]` counts, rows true, columns predicted.
      class_names: K names, in class-index order.

    Returns:
      A dict with keys `overall_accuracy`, `kappa`, `macro_f1`, `weighted_f1`, `miou`,
      `per_class` (name -> precision, recall, f1, iou, support, predicted) and `num_pixels`.

    Raises:
      ValueError: if the matrix is malformed or empty, or the names don't match its size.
    """
    matrix = _as_confusion(confusion)
    if len(class_names) != matrix.shape[0]:
        raise ValueError(f"got {len(class_names)} class names for a {matrix.shape} matrix.")
    if len(set(class_names)) != len(class_names):
        raise ValueError("class names must be unique.")
    stats = per_class_metrics(matrix)
    per_class = {
        name: {
            "precision": float(stats["precision"][index]),
            "recall": float(stats["recall"][index]),
            "f1": float(stats["f1"][index]),
            "iou": float(stats["iou"][index]),
            "support": int(stats["support"][index]),
            "predicted": int(stats["predicted"][index]),
        }
        for index, name in enumerate(class_names)
    }
    return {
        "overall_accuracy": overall_accuracy(matrix),
        "kappa": cohen_kappa(matrix),
        "macro_f1": macro_f1(matrix),
        "weighted_f1": weighted_f1(matrix),
        "miou": miou(matrix),
        "per_class": per_class,
        "num_pixels": int(_total(matrix)),
    }
