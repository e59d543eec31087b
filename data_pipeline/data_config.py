"""DataConfig: what the input pipeline reads and how; validated once, at start-up."""

from __future__ import annotations

import dataclasses

from data_pipeline import dataset_root


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input pipeline settings.

    Attributes:
      root: dataset root (dataset.ini, classes.txt, tileids/, record folders).
      years: dataset.ini sections to read (e.g. ("2016", "2017")); empty means all.
      partition: "train", "test" or "eval" (tile id lists under tileids/).
      fold: fold of the train/test partitions.
      temporal_samples: keep at most this many observations per tile (random sorted subset when
        training, evenly spaced otherwise); None keeps all of them.
      batch_size: global batch size (split across replicas when distributed).
      training: shuffle, repeat, random subsampling and augmentation.
      augment: random flips and 90 degree rotations (training only).
      skip_corrupt: skip unreadable or malformed records (each is logged) instead of failing.
      cloud_injection: fraction of observations that get simulated clouds added (0 = off).
      seed: seed of shuffling, subsampling, augmentation and cloud injection.
      drop_remainder: drop the last partial batch (always when training or distributed).
      deterministic: keep the order of training elements fixed for `seed` (parallel reads and
        maps wait for each other, somewhat slower). Evaluation order is always fixed.
    """

    root: str
    years: tuple[str, ...] = ()
    partition: str = "train"
    fold: int = 0
    temporal_samples: int | None = None
    batch_size: int = 4
    training: bool = True
    augment: bool = True
    skip_corrupt: bool = False
    cloud_injection: float = 0.0
    seed: int = 0
    drop_remainder: bool = False
    deterministic: bool = False

    def validate(self) -> DataConfig:
        """Raises ValueError naming the bad setting; returns self for chaining."""
        if not self.root:
            raise ValueError("DataConfig.root: no dataset root given")
        if self.partition not in dataset_root.PARTITIONS:
            raise ValueError(
                f"DataConfig.partition={self.partition!r}: expected one of "
                f"{dataset_root.PARTITIONS}"
            )
        if self.fold < 0:
            raise ValueError(f"DataConfig.fold={self.fold} must be >= 0")
        if self.temporal_samples is not None and self.temporal_samples < 1:
            raise ValueError(f"DataConfig.temporal_samples={self.temporal_samples} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"DataConfig.batch_size={self.batch_size} must be >= 1")
        if not 0.0 <= self.cloud_injection <= 1.0:
            raise ValueError(f"DataConfig.cloud_injection={self.cloud_injection} not in [0, 1]")
        return self
