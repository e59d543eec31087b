"""Sentinel-2 acquisition dates of a year: a 5-day revisit with gaps, different every year."""

from __future__ import annotations

import calendar

import numpy as np

REVISIT_DAYS = 5
MIN_OBSERVATIONS = 30
MAX_OBSERVATIONS = 46


def acquisition_dates(
    year: int,
    rng: np.random.Generator,
    min_count: int = MIN_OBSERVATIONS,
    max_count: int = MAX_OBSERVATIONS,
) -> np.ndarray:
    """Days of year of one year's acquisitions: sorted, unique, irregular; int32 [count].

    The 5-day revisit starts on a random day; one to three outages (an anomaly, a processing
    backlog) remove runs of 10-35 days; some acquisitions come from the neighbouring orbit two
    days off; then `min_count`..`max_count` of what is left are kept at random (the original
    dataset holds 30-46 per year).

    Args:
      year: calendar year (leap years have 366 days).
      rng: random generator.
      min_count: fewest observations.
      max_count: most observations.
    """
    if not 1 <= min_count <= max_count:
        raise ValueError(f"need 1 <= min_count ({min_count}) <= max_count ({max_count})")
    num_days = 366 if calendar.isleap(year) else 365
    slots = np.arange(rng.integers(1, REVISIT_DAYS + 1), num_days + 1, REVISIT_DAYS)
    available = np.ones(len(slots), bool)
    for _ in range(rng.integers(1, 4)):
        start = rng.integers(1, num_days)
        available &= ~((slots >= start) & (slots < start + rng.integers(10, 36)))
    if available.sum() < max_count:  # outages never leave too few dates to choose from
        available[:] = True
    # Slots 5 days apart shifted by at most 2 days stay unique and in order.
    days = slots + np.where(rng.random(len(slots)) < 0.2, rng.choice([-2, 2], len(slots)), 0)
    days = np.clip(days, 1, num_days)[available]
    count = int(rng.integers(min_count, max_count + 1))
    return np.sort(rng.choice(days, size=min(count, len(days)), replace=False)).astype(np.int32)
