"""Training reports: TensorBoard scalars, tile panels, confusion figures, hparams and progress."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from mtlcc_tf import images, metrics, reports

TRAIN = "train"
VALIDATION = "validation"
# Scalar names that stay stable across versions (dashboards and tests rely on them).
SCALAR_KEYS = ("loss", "overall_accuracy", "kappa", "macro_f1", "miou", "weighted_f1")
RGB_CHANNELS = (0, 1, 2)  # B4, B3, B2 reflectance (x 1e-4) in `inputs`
RGB_GAIN = 3.5  # top-of-atmosphere reflectance is dark: brighten before clipping to [0, 1]
PANEL_WIDTH = 96  # pixels per panel after nearest-neighbour upscaling


class Writers:
    """The `train` and `validation` summary writers; no-op writers on non-chief workers."""

    def __init__(self, model_dir: str, chief: bool):
        if chief:
            self.train = tf.summary.create_file_writer(os.path.join(model_dir, TRAIN))
            self.validation = tf.summary.create_file_writer(os.path.join(model_dir, VALIDATION))
        else:
            self.train = self.validation = tf.summary.create_noop_writer()

    def flush(self) -> None:
        self.train.flush()
        self.validation.flush()

    def close(self) -> None:
        self.train.close()
        self.validation.close()


def _metadata(plugin_name: str, data_class: int, description: str = "") -> bytes:
    """SummaryMetadata in the format of TensorBoard's own summary ops (content version 0)."""
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name),
        summary_description=description,
        data_class=data_class,
    ).SerializeToString()


# tf.summary.scalar, .image and .text need the tensorboard package, which TensorFlow no longer
# installs; tf.summary.write with TensorBoard's metadata writes the same events without it.
def scalar(name: str, value: float, step: int) -> None:
    metadata = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=metadata)


def image(name: str, pixels: np.ndarray, step: int, description: str = "") -> None:
    """Writes one uint8 [height, width, 3 or 4] image as PNG."""
    pixels = np.asarray(pixels, np.uint8)
    encoded = tf.io.encode_png(pixels).numpy()
    height, width = pixels.shape[:2]
    tensor = tf.constant([str(width).encode(), str(height).encode(), encoded])
    metadata = _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE, description)
    tf.summary.write(name, tensor, step=step, metadata=metadata)


def text(name: str, markdown: str, step: int) -> None:
    metadata = _metadata("text", summary_pb2.DATA_CLASS_TENSOR)
    tf.summary.write(name, tf.constant(markdown), step=step, metadata=metadata)


def write_scalars(writer, step: int, scalars: Mapping[str, float]) -> None:
    with writer.as_default():
        for name, value in scalars.items():
            if value is not None:
                scalar(name, float(value), step)


def hparams_text(hparams: Mapping[str, Any]) -> str:
    """A Markdown table of hyperparameters (the fallback when the hparams plugin is missing)."""
    rows = [f"| {name} | {value} |" for name, value in sorted(hparams.items())]
    return "\n".join(["| hyperparameter | value |", "|---|---|", *rows])


def write_hparams(writer, hparams: Mapping[str, Any]) -> None:
    """Records the run's hyperparameters: a text table, and the hparams plugin's summary when
    the tensorboard package is installed."""
    clean = {
        name: value if isinstance(value, (bool, int, float, str)) else str(value)
        for name, value in hparams.items()
    }
    with writer.as_default():
        try:
            from tensorboard.plugins.hparams import api as hparams_api
        except ImportError:
            hparams_api = None
        if hparams_api is not None:
            hparams_api.hparams(clean)
        text("hparams", hparams_text(clean), step=0)


def train_scalars(
    confusion: np.ndarray,
    class_names: Sequence[str],
    losses: Sequence[float],
    learning_rate: float,
    samples_per_second: float,
) -> dict[str, float]:
    """Training scalars of the steps since the last summary (no metrics without known pixels)."""
    scalars = {"loss": float(np.mean(losses))}
    if confusion.sum() > 0:
        summary = metrics.summarize(confusion, class_names)
        scalars.update({key: summary[key] for key in SCALAR_KEYS[1:]})
    scalars["learning_rate"] = learning_rate
    scalars["samples_per_second"] = samples_per_second
    return scalars


def true_colour(inputs_t: np.ndarray) -> np.ndarray:
    """uint8 [height, width, 3] true-colour picture of one observation [height, width, 15]."""
    rgb = np.clip(inputs_t[..., list(RGB_CHANNELS)] * RGB_GAIN, 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def clear_and_cloudy_steps(
    inputs: np.ndarray, sequence_length: int, cloud_mask: np.ndarray | None
) -> tuple[int, int]:
    """Time indices of the clearest and the cloudiest real observation of a tile.

    Args:
        inputs: [time, height, width, channels].
        sequence_length: number of real observations (at the start of the time axis).
        cloud_mask: [time, height, width] (non-zero = cloud or shadow), or None to rank by
            brightness instead (clouds are bright).
    """
    length = max(1, int(sequence_length))
    if cloud_mask is not None:
        score = (cloud_mask[:length] > 0).mean(axis=(1, 2))
    else:
        score = inputs[:length][..., list(RGB_CHANNELS)].mean(axis=(1, 2, 3))
    return int(np.argmin(score)), int(np.argmax(score))


def tile_panel(
    inputs: np.ndarray,
    sequence_length: int,
    labels: np.ndarray,
    probabilities: np.ndarray,
    num_classes: int,
    cloud_mask: np.ndarray | None = None,
) -> np.ndarray:
    """One row of panels for a tile: clear date, cloudy date, label, prediction, confidence.

    Args:
        inputs: [time, height, width, channels] model inputs of one tile.
        sequence_length: its number of real observations.
        labels: [height, width] class indices, -1 unknown (black).
        probabilities: [height, width, num_classes] softmax output.
        num_classes: K.
        cloud_mask: [time, height, width] or None.

    Returns:
        uint8 [scaled_height, 5 * scaled_width + separators, 3].
    """
    clear, cloudy = clear_and_cloudy_steps(inputs, sequence_length, cloud_mask)
    confidence = probabilities.max(axis=-1)
    confidence_rgb = np.round(np.stack([confidence] * 3, axis=-1) * 255).astype(np.uint8)
    panels = [
        true_colour(inputs[clear]),
        true_colour(inputs[cloudy]),
        images.colorize(labels, num_classes),
        images.colorize(probabilities.argmax(axis=-1), num_classes),
        confidence_rgb,
    ]
    scale = max(1, PANEL_WIDTH // labels.shape[1])
    separator = np.full((labels.shape[0] * scale, 2, 3), 255, np.uint8)
    row = []
    for panel in panels:
        row += [np.kron(panel, np.ones((scale, scale, 1), np.uint8)), separator]
    return np.concatenate(row[:-1], axis=1)


def write_tile_panels(writer, step: int, tiles: Mapping[str, np.ndarray], logits: np.ndarray):
    """Writes one image per validation tile: [clear | cloudy | label | prediction | confidence].

    Args:
        writer: the validation writer.
        step: training step.
        tiles: a numpy batch (inputs, sequence_length, labels, cloud_mask, has_cloud_mask,
            tileid).
        logits: [batch, height, width, num_classes].
    """
    probabilities = tf.nn.softmax(logits, axis=-1).numpy()
    num_classes = logits.shape[-1]
    with writer.as_default():
        for index in range(len(tiles["inputs"])):
            mask = tiles["cloud_mask"][index] if tiles["has_cloud_mask"][index] else None
            panel = tile_panel(
                tiles["inputs"][index],
                tiles["sequence_length"][index],
                tiles["labels"][index],
                probabilities[index],
                num_classes,
                mask,
            )
            tileid = tiles["tileid"][index]
            tileid = tileid.decode() if isinstance(tileid, bytes) else str(tileid)
            description = "clear date | cloudiest date | label | prediction | confidence"
            image(f"tiles/{index}_{tileid}", panel, step, description)


def write_confusion_matrix(writer, step: int, confusion: np.ndarray, names: Sequence[str]):
    figure = reports.plot_confusion_matrix(confusion, names, normalize=True)
    with writer.as_default():
        image("confusion_matrix", reports.figure_to_image_tensor(figure).numpy()[0], step)


class Progress:
    """A console progress line with loss, samples/s and ETA.

    On a terminal it redraws one line; otherwise (logs, CI) it prints a plain line at most every
    `interval_seconds`, and always at the last step.
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int,
        global_batch_size: int,
        interval_seconds: float = 10.0,
        stream=None,
    ):
        self.total_steps = total_steps
        self.global_batch_size = global_batch_size
        self.interval_seconds = interval_seconds
        self.stream = stream or sys.stdout
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start_time = time.monotonic()
        self.start_step = initial_step
        self.last_print = 0.0

    def samples_per_second(self, step: int) -> float:
        elapsed = time.monotonic() - self.start_time
        return (step - self.start_step) * self.global_batch_size / max(elapsed, 1e-9)

    def update(self, step: int, loss: float) -> None:
        now = time.monotonic()
        last = step >= self.total_steps
        interval = 0.2 if self.interactive else self.interval_seconds
        if not last and now - self.last_print < interval:
            return
        self.last_print = now
        rate = self.samples_per_second(step)
        remaining = (self.total_steps - step) * self.global_batch_size / max(rate, 1e-9)
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if rate > 0 else "?"
        done = step / max(self.total_steps, 1)
        text = f"step {step}/{self.total_steps} loss {loss:.4f} {rate:.1f} samples/s ETA {eta}"
        if self.interactive:
            bar = "=" * int(done * 30)
            self.stream.write(f"\r[{bar:<30}] {text}" + ("\n" if last else ""))
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Prints a line of its own (ends a redrawn progress line first)."""
        self.stream.write(("\n" if self.interactive else "") + text + "\n")
        self.stream.flush()
