"""A model over a partition's tiles: one TileResult (prediction, labels, cloud mask) per tile.

Shared by evaluation (`evaluate_lib` scores and writes them), the classical baseline (which
makes its own TileResults) and the experiments; nothing here writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from data_pipeline import dataset_root, input_pipeline, records, transforms
from data_pipeline.data_config import DataConfig

TILE_COLUMNS = (
    "tileid", "section", "year", "accuracy", "cloud_coverage", "num_known_pixels",
    "num_correct_pixels", "num_observations", "mean_confidence", "source",
)  # fmt: skip


class ClassMismatchError(ValueError):
    """The model's classes and the dataset's classes.txt disagree; the message names both."""


@dataclasses.dataclass(frozen=True)
class TileResult:
    """One tile's prediction next to its labels and cloud mask (numpy, no batch axis).

    Attributes:
      tileid: the record's tile id (its file name for original-schema records).
      section: the dataset.ini section (year) the record belongs to.
      year: acquisition year of its observations, or None if it has none.
      source: the record file.
      probabilities: float32 [height, width, num_classes], softmax of the model's logits.
      labels: int32 [height, width] class indices, -1 unknown.
      cloud_mask: uint8 [num_observations, height, width] (CLEAR, CLOUD, SHADOW) of the
        observations the model saw, or None when the record has no mask.
      doy: int32 [num_observations] day of year of those observations.
    """

    tileid: str
    section: str
    year: int | None
    source: str
    probabilities: np.ndarray
    labels: np.ndarray
    cloud_mask: np.ndarray | None
    doy: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """int32 [height, width] predicted class indices."""
        return np.argmax(self.probabilities, axis=-1).astype(np.int32)

    @property
    def confidence(self) -> np.ndarray:
        """float32 [height, width] probability of the predicted class."""
        return np.max(self.probabilities, axis=-1)

    @property
    def num_observations(self) -> int:
        return int(self.doy.shape[0])

    @property
    def known(self) -> np.ndarray:
        """bool [height, width]: pixels with a known label."""
        return self.labels >= 0

    @property
    def num_known_pixels(self) -> int:
        return int(np.count_nonzero(self.known))

    @property
    def num_correct_pixels(self) -> int:
        return int(np.count_nonzero(self.known & (self.predictions == self.labels)))

    @property
    def accuracy(self) -> float:
        """Accuracy over known pixels; NaN for a tile without any."""
        known = self.num_known_pixels
        return self.num_correct_pixels / known if known else math.nan

    @property
    def pixel_cloud_coverage(self) -> np.ndarray | None:
        """float32 [height, width]: per pixel, the fraction of its observations cloudy or shadowed.

        None without a cloud mask; NaN for a tile without observations.
        """
        if self.cloud_mask is None:
            return None
        if self.num_observations == 0:
            return np.full(self.labels.shape, np.nan, np.float32)
        return np.mean(self.cloud_mask != records.CLEAR, axis=0).astype(np.float32)

    @property
    def cloud_coverage(self) -> float | None:
        """Fraction of pixel-observations that are cloud (1) or shadow (2) over real observations.

        None when the record has no cloud mask (e.g. the original dataset).
        """
        coverage = self.pixel_cloud_coverage
        return None if coverage is None else float(np.mean(coverage))

    def confusion(self, num_classes: int) -> np.ndarray:
        """int64 [K, K] confusion matrix of the tile's known pixels (rows true)."""
        known = self.known
        flat = self.labels[known].astype(np.int64) * num_classes + self.predictions[known]
        counts = np.bincount(flat, minlength=num_classes * num_classes)
        return counts.reshape(num_classes, num_classes)

    def row(self) -> dict[str, Any]:
        """The tile's line of tiles.csv; missing values (no mask, no known pixels) are empty."""
        coverage = self.cloud_coverage
        accuracy = self.accuracy
        return {
            "tileid": self.tileid,
            "section": self.section,
            "year": "" if self.year is None else self.year,
            "accuracy": "" if math.isnan(accuracy) else f"{accuracy:.6f}",
            "cloud_coverage": "" if coverage is None else f"{coverage:.6f}",
            "num_known_pixels": self.num_known_pixels,
            "num_correct_pixels": self.num_correct_pixels,
            "num_observations": self.num_observations,
            "mean_confidence": f"{float(np.mean(self.confidence)):.6f}",
            "source": self.source,
        }


def check_classes(
    model_classes: dataset_root.ClassTable,
    dataset_classes: dataset_root.ClassTable,
    model_source: str = "the model's run config",
    dataset_source: str = "the dataset's classes.txt",
) -> None:
    """Raises ClassMismatchError if a model trained on one class table meets another.

    Differing names with equal ids are only logged: renaming a class changes no prediction.

    Args:
      model_classes: the classes the model was trained with.
      dataset_classes: the classes of the dataset to evaluate on.
      model_source: the file `model_classes` came from, for the message.
      dataset_source: the file `dataset_classes` came from, for the message.
    """
    if model_classes.num_classes != dataset_classes.num_classes:
        raise ClassMismatchError(
            f"the model predicts {model_classes.num_classes} classes ({model_source}) but the "
            f"dataset has {dataset_classes.num_classes} ({dataset_source}); evaluate on a "
            "dataset with the classes the model was trained on"
        )
    if model_classes.known_ids != dataset_classes.known_ids:
        raise ClassMismatchError(
            f"class ids differ: {model_classes.known_ids} in {model_source} but "
            f"{dataset_classes.known_ids} in {dataset_source}; class index i means a different "
            "crop in each, so the metrics would be meaningless"
        )
    if model_classes.known_names != dataset_classes.known_names:
        logging.warning(
            "class names differ between %s and %s (ids agree): %s vs %s",
            model_source, dataset_source, model_classes.known_names, dataset_classes.known_names,
        )  # fmt: skip


def _output_classes(model: keras.Model) -> int | None:
    """The static number of classes of the model's logits, if it has one."""
    try:
        return model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def section_names(config: DataConfig, split: input_pipeline.SplitFiles) -> dict[str, str]:
    """Record folder -> dataset.ini section name, to tell the years of a tile id apart."""
    return {
        os.path.normpath(os.path.join(config.root, section.datadir)): section.name
        for section in split.sections
    }


def _tileid(tileid: bytes, source: str) -> str:
    # Original-schema records carry no tile id; their file name is the id.
    if tileid:
        return tileid.decode("utf-8")
    name = os.path.basename(source)
    for suffix in dataset_root.RECORD_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_views(views: int) -> int:
    """`views` if it is a number of test-time views `predict_tiles` takes; else ValueError."""
    if views not in transforms.VIEW_COUNTS:
        raise ValueError(
            f"test-time views must be one of {transforms.VIEW_COUNTS} (flips, then 90 degree "
            f"rotations), got {views}"
        )
    return views


def viewed_probabilities(model: keras.Model, inputs, sequence_length, views: int = 1):
    """Softmax of `model`'s logits, averaged over the first `views` of `transforms.VIEWS`.

    Each view (a flip and/or a quarter turn) of the tiles goes through the model and its
    probabilities are turned back before the average: test-time augmentation with the
    symmetries the model was trained under (`--augment`). 8 views need square tiles.

    Args:
      model: see `predict_tiles`.
      inputs: float [batch, time, height, width, channels].
      sequence_length: int [batch].
      views: 1 (the tiles as they are), 2, 4 (flips) or 8 (flips and rotations).

    Returns:
      float32 [batch, height, width, num_classes].
    """
    check_views(views)
    if views == 8:
        height, width = inputs.shape[2], inputs.shape[3]
        if height is not None and width is not None and height != width:
            raise ValueError(f"8 test-time views need square tiles, got {height} x {width}")
    sequence_length = tf.convert_to_tensor(sequence_length)
    total = None
    for index in range(views):
        viewed = transforms.view(inputs, index, (2, 3))
        logits = model({"inputs": viewed, "sequence_length": sequence_length}, training=False)
        probabilities = transforms.unview(
            tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), index, (1, 2)
        )
        total = probabilities if total is None else total + probabilities
    return total / float(views)


def predict_tiles(
    model: keras.Model, data_config: DataConfig, log_every: int = 50, views: int = 1
) -> Iterator[TileResult]:
    """Runs `model` over every tile of `data_config`'s partition, yielding one TileResult each.

    Reads the tiles with `input_pipeline.build_dataset` (so cloud injection, temporal subsampling
    and corrupt-record skipping behave as configured) and predicts a batch at a time.

    Args:
      model: takes {"inputs": [batch, T, H, W, 15], "sequence_length": [batch]} and returns
        logits [batch, H, W, num_classes].
      data_config: what to read; must have `training=False` (training data repeats forever).
      log_every: log progress (tiles and tiles/s) every this many tiles; 0 turns it off.
      views: test-time views averaged per tile (`viewed_probabilities`); 1 predicts once.

    Raises:
      ValueError: a training config, or a number of views it does not take.
      ClassMismatchError: the model's number of classes differs from the dataset's classes.txt.
    """
    if data_config.training:
        raise ValueError("predict_tiles needs DataConfig(training=False): training data repeats")
    check_views(views)
    split = input_pipeline.list_split_files(data_config)
    sections = section_names(data_config, split)
    num_classes = split.classes.num_classes
    classes_file = os.path.join(data_config.root, "classes.txt")
    output_classes = _output_classes(model)
    if output_classes is not None and output_classes != num_classes:
        raise ClassMismatchError(
            f"the model outputs {output_classes} classes but {classes_file} has {num_classes}"
        )
    dataset = input_pipeline.build_dataset(data_config)

    @tf.function(reduce_retracing=True)
    def predict_step(inputs, sequence_length):
        return viewed_probabilities(model, inputs, sequence_length, views)

    start = time.perf_counter()
    num_tiles = 0
    for batch in dataset:
        probabilities = predict_step(batch["inputs"], batch["sequence_length"]).numpy()
        if probabilities.shape[-1] != num_classes:
            raise ClassMismatchError(
                f"the model outputs {probabilities.shape[-1]} classes but {classes_file} has "
                f"{num_classes}"
            )
        batch = {key: value.numpy() for key, value in batch.items() if key != "inputs"}
        for index in range(probabilities.shape[0]):
            yield tile_result(batch, index, probabilities[index], sections)
            num_tiles += 1
            if log_every and num_tiles % log_every == 0:
                elapsed = time.perf_counter() - start
                logging.info(
                    "predicted %d tiles (%.2f tiles/s)", num_tiles, num_tiles / max(elapsed, 1e-9)
                )
    elapsed = time.perf_counter() - start
    logging.info(
        "predicted %d tiles in %.1f s (%.2f tiles/s)",
        num_tiles, elapsed, num_tiles / max(elapsed, 1e-9),
    )  # fmt: skip


def tile_result(
    batch: Mapping[str, np.ndarray], index: int, probabilities: np.ndarray, sections: dict
) -> TileResult:
    """The TileResult of tile `index` of a numpy batch of `input_pipeline.build_dataset`.

    Args:
      batch: the batch's entries as numpy (`inputs` is not needed).
      index: the tile's position in the batch.
      probabilities: float32 [height, width, num_classes] predicted for that tile.
      sections: `section_names` of the batch's split.
    """
    length = int(batch["sequence_length"][index])
    source = batch["source"][index].decode("utf-8")
    years = batch["year"][index][:length]
    # Observations were moved to the front by select_observations, so [:length] are the real ones.
    return TileResult(
        tileid=_tileid(batch["tileid"][index], source),
        section=sections.get(os.path.normpath(os.path.dirname(source)), ""),
        year=int(years[0]) if length else None,
        source=source,
        probabilities=probabilities,
        labels=batch["labels"][index],
        cloud_mask=batch["cloud_mask"][index][:length] if batch["has_cloud_mask"][index] else None,
        doy=batch["doy"][index][:length],
    )
