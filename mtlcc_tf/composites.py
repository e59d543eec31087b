"""Per-pixel features of the classical baseline: cloud masks, window composites, gap filling.

The pipeline that the paper's table compares against: per observation, 13 bands on the 10 m grid
plus vegetation indices; per fixed window of the year (calendar months, or 10-day periods), the
median (or mean) of the usable observations; empty windows filled by linear interpolation over
time. 'masked' uses only clear observations, 'raw' all of them, clouds included. Pure numpy on
one tile at a time: [time, height, width, channels] in, [height, width, features] out.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
from absl import logging

from data_pipeline import records

VARIANTS = ("masked", "raw")
WINDOWS = ("monthly", "10day")
STATISTICS = ("median", "mean")
# Where the masked variant takes its cloud mask from. auto: the record's mask where it has one
# (simulated records), else the brightness rule (the original MTLCC records have no mask).
CLOUD_MASKS = ("auto", "record", "brightness")
RECORD, BRIGHTNESS = "record", "brightness"
# The channel order of the pipeline's inputs[..., :13] (records.decode -> to_model_inputs).
BANDS = records.BANDS10 + records.BANDS20 + records.BANDS60
NUM_BANDS = len(BANDS)
# Normalised differences (a - b) / (a + b): greenness, leaf water (Gao's NDWI), red edge.
INDICES = {"NDVI": ("B8", "B4"), "NDWI": ("B8", "B11"), "NDRE": ("B8A", "B5")}
CHANNELS = BANDS + tuple(INDICES)
# Brightness rule for records without a cloud mask: blue TOA reflectance above this is cloud.
# Clear land reads ~0.05-0.12 in B2 (L1C, haze included); thick cloud 0.3 and more. It misses
# thin cloud and all shadows (dark, not bright), which is what a simple rule buys.
DEFAULT_CLOUD_THRESHOLD = 0.2
_BLUE = BANDS.index("B2")
# First day of year of each calendar month (non-leap year), then the end.
_MONTH_STARTS = (1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 367)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How a tile's time series becomes per-pixel features.

    Attributes:
      variant: 'masked' (composites of clear observations) or 'raw' (of all observations).
      windows: 'monthly' (12 windows) or '10day' (37 windows: days 1-10, 11-20, ..., 361-366).
      statistic: 'median' or 'mean' of the observations in a window.
      cloud_mask: 'auto', 'record' (fail on records without a mask) or 'brightness'.
      cloud_threshold: B2 reflectance (0-1) above which the brightness rule says cloud.
    """

    variant: str = "masked"
    windows: str = "monthly"
    statistic: str = "median"
    cloud_mask: str = "auto"
    cloud_threshold: float = DEFAULT_CLOUD_THRESHOLD

    def validate(self) -> FeatureConfig:
        """Raises ValueError naming the bad setting; returns self for chaining."""
        for name, allowed in (
            ("variant", VARIANTS),
            ("windows", WINDOWS),
            ("statistic", STATISTICS),
            ("cloud_mask", CLOUD_MASKS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"FeatureConfig.{name}={getattr(self, name)!r}: expected one of {allowed}"
                )
        if not 0.0 < self.cloud_threshold < 1.0:
            raise ValueError(
                f"FeatureConfig.cloud_threshold={self.cloud_threshold}: a B2 reflectance in (0, 1)"
            )
        return self

    @property
    def num_features(self) -> int:
        return (len(window_edges(self.windows)) - 1) * len(CHANNELS)


def window_edges(windows: str) -> np.ndarray:
    """int [num_windows + 1]: the first day of year of every window, then 367 (the end)."""
    if windows == "monthly":
        return np.array(_MONTH_STARTS)
    if windows == "10day":
        return np.append(np.arange(1, 362, 10), 367)
    raise ValueError(f"unknown windows {windows!r}; expected one of {WINDOWS}")


def feature_names(windows: str) -> list[str]:
    """Names of the features in `tile_features` order, e.g. 'w03/NDVI' (window 3, from 1)."""
    num_windows = len(window_edges(windows)) - 1
    return [f"w{w + 1:02d}/{channel}" for w in range(num_windows) for channel in CHANNELS]


def spectral_channels(reflectance: np.ndarray) -> np.ndarray:
    """Appends the INDICES to the bands.

    Args:
      reflectance: float [time, height, width, 13] TOA reflectance (0-1) in `BANDS` order.

    Returns:
      float32 [time, height, width, 16] in `CHANNELS` order; an index is 0 where a + b is 0.
    """
    reflectance = np.asarray(reflectance, np.float32)
    indices = []
    for a, b in INDICES.values():
        first, second = reflectance[..., BANDS.index(a)], reflectance[..., BANDS.index(b)]
        total = first + second
        ratio = np.divide(first - second, total, out=np.zeros_like(total), where=total > 0)
        indices.append(ratio)
    return np.concatenate([reflectance, np.stack(indices, axis=-1)], axis=-1)


def brightness_cloud_mask(reflectance: np.ndarray, threshold: float) -> np.ndarray:
    """bool [time, height, width]: observations whose blue (B2) reflectance exceeds `threshold`."""
    return reflectance[..., _BLUE] > threshold


def composite(
    values: np.ndarray,
    doy: np.ndarray,
    usable: np.ndarray,
    edges: np.ndarray,
    statistic: str = "median",
) -> np.ndarray:
    """The median or mean of the usable observations of every window, per pixel and channel.

    Args:
      values: float [time, height, width, channels] of the real observations.
      doy: int [time] their days of year (1-366).
      usable: bool [time, height, width], the observations to include.
      edges: `window_edges`.
      statistic: 'median' or 'mean'.

    Returns:
      float32 [num_windows, height, width, channels]; NaN where a window has no usable observation.
    """
    window_of = np.searchsorted(edges, doy, side="right") - 1
    num_windows = len(edges) - 1
    out = np.full((num_windows, *values.shape[1:]), np.nan, np.float32)
    reduce = np.nanmedian if statistic == "median" else np.nanmean
    for window in range(num_windows):
        chosen = window_of == window
        if not np.any(chosen):
            continue
        kept = np.where(usable[chosen][..., None], values[chosen], np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            out[window] = reduce(kept, axis=0)
    return out


def fill_gaps(composites: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Fills NaN windows by linear interpolation in time between the nearest filled windows.

    Windows before the first or after the last filled one take its value (nearest); a series
    without any filled window stays NaN.

    Args:
      composites: float [num_windows, ...] with NaN gaps.
      times: float [num_windows], the window centres (days of year).

    Returns:
      float32, the same shape, gaps filled.
    """
    num_windows = composites.shape[0]
    flat = composites.reshape(num_windows, -1).astype(np.float32)
    filled = ~np.isnan(flat)
    index = np.arange(num_windows)[:, None]
    # The nearest filled window at or before / at or after each window (-1 / num_windows: none).
    before = np.maximum.accumulate(np.where(filled, index, -1), axis=0)
    after = np.minimum.accumulate(np.where(filled, index, num_windows)[::-1], axis=0)[::-1]
    has_before, has_after = before >= 0, after < num_windows
    before_value = np.take_along_axis(flat, np.clip(before, 0, num_windows - 1), axis=0)
    after_value = np.take_along_axis(flat, np.clip(after, 0, num_windows - 1), axis=0)
    times = np.asarray(times, np.float32)
    before_time = times[np.clip(before, 0, num_windows - 1)]
    after_time = times[np.clip(after, 0, num_windows - 1)]
    span = np.where(has_before & has_after, after_time - before_time, 1.0)
    weight = np.where(span > 0, (times[:, None] - before_time) / np.where(span > 0, span, 1), 0.0)
    between = before_value + weight * (after_value - before_value)
    out = np.where(has_before & has_after, between, np.where(has_before, before_value, after_value))
    out = np.where(filled, flat, out)  # before == after there; keep the exact value
    return out.reshape(composites.shape)


def tile_features(
    reflectance: np.ndarray,
    doy: np.ndarray,
    cloudy: np.ndarray | None,
    config: FeatureConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel features of one tile.

    Args:
      reflectance: float [time, height, width, 13] TOA reflectance (0-1) of the real observations
        (no padding), bands in `BANDS` order on the 10 m grid.
      doy: int [time] their days of year.
      cloudy: bool [time, height, width] observations to leave out in the 'masked' variant
        (ignored by 'raw'; required by 'masked').
      config: the feature settings.

    Returns:
      features: float32 [height, width, num_features] in `feature_names` order; 0 for a pixel
        without a single usable observation in the year.
      gaps: bool [num_windows, height, width], the windows that had no usable observation and
        were interpolated.
    """
    if config.variant == "masked" and cloudy is None:
        raise ValueError("the 'masked' variant needs a cloud mask")
    edges = window_edges(config.windows)
    times = (edges[:-1] + edges[1:] - 1) / 2.0
    channels = spectral_channels(reflectance)
    if config.variant == "masked":
        usable = ~np.asarray(cloudy, bool)
    else:
        usable = np.ones(channels.shape[:3], bool)
    composites = composite(channels, doy, usable, edges, config.statistic)
    gaps = np.isnan(composites[..., 0])
    filled = np.nan_to_num(fill_gaps(composites, times), nan=0.0)
    num_windows, height, width, num_channels = filled.shape
    features = filled.transpose(1, 2, 0, 3).reshape(height, width, num_windows * num_channels)
    return features, gaps


class FeatureMaker:
    """`tile_features` for a stream of tiles: picks each tile's cloud mask and counts gaps."""

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.mask_sources = {RECORD: 0, BRIGHTNESS: 0}
        self.num_gaps = 0  # pixel-window composites without a usable observation
        self.num_composites = 0
        self.num_unobserved_pixels = 0  # pixels without a single usable observation

    def __call__(
        self,
        reflectance: np.ndarray,
        doy: np.ndarray,
        cloud_mask: np.ndarray | None,
        source: str = "",
    ) -> np.ndarray:
        """float32 [height, width, num_features] of one tile.

        Args:
          reflectance: float [time, height, width, 13] of the real observations, as in
            `tile_features`.
          doy: int [time] their days of year.
          cloud_mask: uint8 [time, height, width] (records.CLEAR, CLOUD, SHADOW) of the record,
            or None when it has none.
          source: the record's file, for messages.
        """
        cloudy = None
        if self.config.variant == "masked":
            cloudy = self._cloudy(reflectance, cloud_mask, source)
        features, gaps = tile_features(reflectance, doy, cloudy, self.config)
        self.num_gaps += int(np.count_nonzero(gaps))
        self.num_composites += gaps.size
        self.num_unobserved_pixels += int(np.count_nonzero(np.all(gaps, axis=0)))
        return features

    def _cloudy(self, reflectance, cloud_mask, source) -> np.ndarray:
        mode = self.config.cloud_mask
        if cloud_mask is not None and mode in ("auto", RECORD):
            self.mask_sources[RECORD] += 1
            return cloud_mask != records.CLEAR  # clouds and their shadows
        if mode == RECORD:
            raise ValueError(
                f"{source}: the record has no cloud mask and cloud_mask='record'; use 'auto' or "
                "'brightness' to mask clouds by the B2 brightness rule"
            )
        if self.mask_sources[BRIGHTNESS] == 0:
            logging.warning(
                "%s has no cloud mask: clouds are masked where B2 reflectance > %.3f "
                "(shadows and thin clouds are not masked)",
                source, self.config.cloud_threshold,
            )  # fmt: skip
        self.mask_sources[BRIGHTNESS] += 1
        return brightness_cloud_mask(reflectance, self.config.cloud_threshold)

    def statistics(self) -> dict[str, Any]:
        """cloud_mask_sources (tiles per source), gap_fraction, num_unobserved_pixels."""
        return {
            "cloud_mask_sources": dict(self.mask_sources),
            "gap_fraction": self.num_gaps / max(self.num_composites, 1),
            "num_unobserved_pixels": self.num_unobserved_pixels,
        }
