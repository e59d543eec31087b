"""Per-pixel composite features of a partition's tiles, and a random sample of training pixels.

Tiles come through `input_pipeline.build_dataset` (so labels, splits, padding, corrupt records
and cloud injection behave as for the models; 20 m and 60 m bands come bilinearly resized to the
10 m grid, as the models see them); `composites` turns each pixel into features.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import logging

from data_pipeline import dataset_root, input_pipeline
from data_pipeline.data_config import DataConfig
from mtlcc_tf import composites


@dataclasses.dataclass
class PixelTile:
    """One tile of a numpy batch, reduced to what the features need."""

    reflectance: np.ndarray  # float32 [time, height, width, 13], real observations only
    doy: np.ndarray  # int32 [time]
    labels: np.ndarray  # int32 [height, width], class index, -1 unknown
    cloud_mask: np.ndarray | None  # uint8 [time, height, width] or None
    source: str


def read_batches(data_config: DataConfig) -> Iterator[dict[str, np.ndarray]]:
    """Numpy batches of the partition through the project's input pipeline, in file order.

    Features are computed one tile at a time; the batch size only sets how many tiles are
    classified in one call.
    """
    config = dataclasses.replace(data_config, training=False, augment=False)
    for batch in input_pipeline.build_dataset(config):
        yield {key: value.numpy() for key, value in batch.items()}


def tile_of(batch: dict[str, np.ndarray], index: int) -> PixelTile:
    """Tile `index` of a numpy batch of `read_batches`."""
    # select_observations put the real observations first: [:length] are they.
    length = int(batch["sequence_length"][index])
    reflectance = batch["inputs"][index, :length, ..., : composites.NUM_BANDS]
    has_mask = bool(batch["has_cloud_mask"][index])
    return PixelTile(
        reflectance=reflectance,
        doy=batch["doy"][index, :length],
        labels=batch["labels"][index],
        cloud_mask=batch["cloud_mask"][index, :length] if has_mask else None,
        source=batch["source"][index].decode("utf-8"),
    )


def features_of(make_features: composites.FeatureMaker, tile: PixelTile) -> np.ndarray:
    """float32 [height, width, num_features] of every pixel of the tile."""
    return make_features(tile.reflectance, tile.doy, tile.cloud_mask, tile.source)


class PixelSample:
    """A uniform random sample of at most `capacity` pixels from a stream, in bounded memory.

    Every pixel draws a random key; the sample is the `capacity` smallest keys seen (a
    reservoir), trimmed whenever the buffer holds twice that many.
    """

    def __init__(self, capacity: int, seed: int):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = 0
        self.num_seen = 0

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        keys = self.rng.random(len(labels))
        self.parts.append((keys, features, labels))
        self.size += len(labels)
        self.num_seen += len(labels)
        if self.size >= 2 * self.capacity:
            self._trim()

    def _trim(self) -> None:
        keys, features, labels = (np.concatenate(part) for part in zip(*self.parts, strict=True))
        if len(keys) > self.capacity:
            # Sorted by key, so the sample's order is random rather than by tile.
            keep = np.argsort(keys)[: self.capacity]
            keys, features, labels = keys[keep], features[keep], labels[keep]
        self.parts = [(keys, features, labels)]
        self.size = len(keys)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(features [n, num_features], labels [n]) of the sample."""
        if not self.parts:
            return np.zeros([0, 0], np.float32), np.zeros([0], np.int32)
        self._trim()
        _, features, labels = self.parts[0]
        return features, labels


def collect_training_pixels(
    data_config: DataConfig,
    features: composites.FeatureConfig,
    max_pixels: int,
    seed: int = 0,
    log_every: int = 50,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features and class indices of a random sample of the labelled pixels of a partition.

    Returns:
      features: float32 [num_pixels, num_features].
      labels: int32 [num_pixels] class indices.
      statistics: num_tiles, num_training_pixels_available and `FeatureMaker.statistics`.

    Raises:
      ValueError: the partition has no labelled pixel.
    """
    make_features = composites.FeatureMaker(features)
    sample = PixelSample(max_pixels, seed)
    num_tiles = 0
    start = time.perf_counter()
    for batch in read_batches(data_config):
        for index in range(len(batch["sequence_length"])):
            tile = tile_of(batch, index)
            known = tile.labels >= 0
            sample.add(features_of(make_features, tile)[known], tile.labels[known])
            num_tiles += 1
            if log_every and num_tiles % log_every == 0:
                logging.info(
                    "training features: %d tiles, %d labelled pixels (%.1f s)",
                    num_tiles, sample.num_seen, time.perf_counter() - start,
                )  # fmt: skip
    pixels, labels = sample.arrays()
    if not len(labels):
        split = dataset_root.tileids_filename(data_config.partition, data_config.fold)
        raise ValueError(
            f"{data_config.root}/tileids/{split}: its {num_tiles} tiles have no pixel with a "
            "known label: nothing to train on"
        )
    statistics = {
        "num_tiles": num_tiles,
        "num_training_pixels_available": sample.num_seen,
        **make_features.statistics(),
    }
    logging.info(
        "training features: %d tiles, %d of %d labelled pixels sampled, %d features (%.1f s)",
        num_tiles, len(labels), sample.num_seen, pixels.shape[1], time.perf_counter() - start,
    )  # fmt: skip
    return pixels, labels.astype(np.int32), statistics
