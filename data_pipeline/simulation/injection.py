"""Test-time cloud injection in numpy: simulated clouds added to an existing observation stack."""

from __future__ import annotations

import numpy as np

from data_pipeline.simulation.clouds import (
    apply_clouds,
    cloud_fields,
    cloud_mask,
    sample_cloud_layers,
)
from data_pipeline.simulation.noise import make_rng


def inject_clouds(
    x10: np.ndarray,
    x20: np.ndarray,
    x60: np.ndarray,
    doy: np.ndarray,
    seed: int,
    fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Adds simulated clouds, shadows, haze and cirrus to a tile's observations.

    Deterministic for a seed. Each real observation (doy > 0) is chosen with probability
    `fraction` and gets a cloud layer of random cover (10-100 % of a canvas four times the tile,
    so the tile itself may end up clear or overcast) with shadows cast from clouds inside or
    outside the tile; the others, and padding, are returned unchanged.

    Args:
      x10: [time, H, W, 4] reflectance x 1e4 (any real or integer dtype).
      x20: [time, H/2, W/2, 6].
      x60: [time, H/6, W/6, 3].
      doy: int [time] day of year, 0 for padding.
      seed: random seed.
      fraction: probability that an observation gets clouds, in [0, 1].

    Returns:
      x10, x20, x60 with clouds (same dtypes) and the added clouds' mask uint8 [time, H, W]
      (0 clear, 1 cloud, 2 shadow, judged against the input as the clear surface; clouds
      already in the input are not detected).
    """
    doy = np.asarray(doy)
    num_dates, height, width = x10.shape[:3]
    rng = make_rng(seed, "inject")
    chosen = (doy > 0) & (rng.random(num_dates) < fraction)
    coverage = np.where(chosen, rng.uniform(0.1, 1.0, num_dates), 0.0)
    canvas = (max(4 * height, 96), max(4 * width, 96))
    layers = sample_cloud_layers(
        np.where(doy > 0, doy, 180), coverage, chosen.astype(np.float64), *canvas, rng
    )
    fields = cloud_fields(layers, 0, 0, height, width)
    inputs = {"x10": x10, "x20": x20, "x60": x60}
    clear = {
        name: np.asarray(value, np.float32) * np.float32(1e-4) for name, value in inputs.items()
    }
    clouded = apply_clouds(clear, fields, layers)
    outputs = []
    for name, value in inputs.items():
        new = np.clip(np.rint(clouded[name] * 1e4), 0, 65535)
        outputs.append(np.where(chosen[:, None, None, None], new, value).astype(value.dtype))
    mask = cloud_mask(fields, layers, clear, clouded)
    mask = np.where(chosen[:, None, None], mask, 0).astype(np.uint8)
    return outputs[0], outputs[1], outputs[2], mask
