"""Figures to hold a dataset against published Sentinel-2 statistics: clear-sky NDVI per class and
cloud cover per tile-observation (for `inspect`; works on records with cloud masks)."""

from __future__ import annotations

import numpy as np

# x10 holds B4, B3, B2, B8.
RED, BLUE, NIR = 0, 2, 3
# Clear pixels this bright in blue (reflectance x 1e4) are snow, neither vegetation nor soil.
SNOW_BLUE = 3000
NDVI_BINS = 200  # over [-1, 1]: 0.01 wide
# A tile-observation is clear below this cloud fraction and overcast above 1 - it.
CLEAR_FRACTION = 0.01


def ndvi(x10: np.ndarray) -> np.ndarray:
    """NDVI from x10 [..., 4] (B4, B3, B2, B8), 0 where both bands are 0."""
    red, nir = x10[..., RED].astype(np.float64), x10[..., NIR].astype(np.float64)
    total = red + nir
    return np.divide(nir - red, total, out=np.zeros_like(total), where=total > 0)


def _bins(values: np.ndarray) -> np.ndarray:
    return np.clip(((values + 1.0) * NDVI_BINS / 2).astype(np.int64), 0, NDVI_BINS - 1)


def _quantile(counts: np.ndarray, q: float) -> float | None:
    """The q-quantile of a histogram over NDVI_BINS (bin centre), None when empty."""
    total = counts.sum()
    if not total:
        return None
    index = int(np.searchsorted(np.cumsum(counts), q * total))
    return round(-1.0 + (index + 0.5) * 2 / NDVI_BINS, 3)


class NdviLevels:
    """Histograms of clear, snow-free NDVI per class: all observations, and each pixel's peak."""

    def __init__(self, num_classes: int):
        self.observations = np.zeros((num_classes, NDVI_BINS), np.int64)
        self.peaks = np.zeros((num_classes, NDVI_BINS), np.int64)

    def add(self, x10: np.ndarray, labels: np.ndarray, clear: np.ndarray) -> None:
        """Adds one tile.

        Args:
          x10: [time, H, W, 4] reflectance x 1e4 of the real observations.
          labels: int [H, W] class index, negative for unknown.
          clear: bool [time, H, W], the cloud mask says clear.
        """
        usable = clear & (x10[..., BLUE] < SNOW_BLUE) & (labels >= 0)[None]
        values = ndvi(x10)
        num_classes = len(self.observations)
        classes = np.broadcast_to(labels, values.shape)
        self.observations += np.bincount(
            classes[usable] * NDVI_BINS + _bins(values[usable]), minlength=num_classes * NDVI_BINS
        ).reshape(num_classes, NDVI_BINS)
        peak = np.where(usable, values, -np.inf).max(axis=0)  # [H, W]
        seen = np.isfinite(peak)
        self.peaks += np.bincount(
            labels[seen] * NDVI_BINS + _bins(peak[seen]), minlength=num_classes * NDVI_BINS
        ).reshape(num_classes, NDVI_BINS)

    def summary(self, names: tuple[str, ...]) -> dict:
        """Per class: 5th, 50th and 95th percentile over its clear observations and the median of
        its pixels' yearly peak (None without clear observations), and the count."""
        return {
            name: {
                "p05": _quantile(counts, 0.05),
                "p50": _quantile(counts, 0.5),
                "p95": _quantile(counts, 0.95),
                "peak_median": _quantile(peaks, 0.5),
                "num_observations": int(counts.sum()),
            }
            for name, counts, peaks in zip(names, self.observations, self.peaks, strict=True)
        }


class TileClouds:
    """Cloud fraction of every tile-observation: how many are clear, partly or fully cloudy."""

    def __init__(self):
        self.cloud, self.cloud_or_shadow = [], []

    def add(self, mask: np.ndarray, cloud: int, clear: int) -> None:
        """Adds the observations of one tile: mask [time, H, W] of its real observations."""
        self.cloud += (mask == cloud).mean(axis=(1, 2)).tolist()
        self.cloud_or_shadow += (mask != clear).mean(axis=(1, 2)).tolist()

    def summary(self) -> dict:
        """Shares of clear (< 1 % cloud), partly and overcast (> 99 %) tile-observations, the mean
        cloud (and cloud or shadow) fraction, and the share usable (< 1 % cloud or shadow)."""
        cloud, cloud_or_shadow = np.asarray(self.cloud), np.asarray(self.cloud_or_shadow)
        if not cloud.size:
            return {"num_observations": 0}
        clear = cloud < CLEAR_FRACTION
        overcast = cloud > 1 - CLEAR_FRACTION
        figures = {
            "clear_share": clear.mean(),
            "partly_share": np.mean(~clear & ~overcast),
            "overcast_share": overcast.mean(),
            "mean_cloud_fraction": cloud.mean(),
            "mean_cloud_or_shadow_fraction": cloud_or_shadow.mean(),
            "usable_share": np.mean(cloud_or_shadow < CLEAR_FRACTION),
        }
        return {
            "num_observations": int(cloud.size),
            **{name: round(float(value), 4) for name, value in figures.items()},
        }
