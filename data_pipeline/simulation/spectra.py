"""Endmember spectra of the 13 Sentinel-2 bands, linear mixing, clear-sky atmosphere (L1C)."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline.simulation.phenology import COVERS

BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
# Band groups of the original record format (records.BANDS10/20/60, repeated here so that the
# simulator does not import TensorFlow) and their pixel size in multiples of 10 m.
GROUPS = {
    "x10": ("B4", "B3", "B2", "B8"),
    "x20": ("B5", "B6", "B7", "B8A", "B11", "B12"),
    "x60": ("B1", "B9", "B10"),
}
GROUP_FACTORS = {"x10": 1, "x20": 2, "x60": 6}
GROUP_INDICES = {name: np.array([BANDS.index(b) for b in bands]) for name, bands in GROUPS.items()}

# Surface reflectance of pure covers, B1..B12 (after typical library spectra: a loamy soil, a
# grass-like (cereal, maize) and a broad-leaved (beet, rape, legumes) green canopy, which
# reflects more NIR, straw, yellow rape petals, black asparagus foil, roofs and asphalt, snow).
# A closed canopy absorbs nearly all red light (B4 about 0.02, NDVI about 0.9 at the surface).
ENDMEMBERS = {
    "soil": (0.09, 0.11, 0.15, 0.20, 0.22, 0.24, 0.255, 0.27, 0.28, 0.29, 0.30, 0.36, 0.31),
    "green": (0.025, 0.035, 0.08, 0.022, 0.12, 0.32, 0.42, 0.46, 0.47, 0.44, 0.35, 0.22, 0.10),
    "broadleaf": (0.025, 0.035, 0.085, 0.022, 0.13, 0.38, 0.50, 0.55, 0.56, 0.52, 0.35, 0.25, 0.11),
    "dry": (0.06, 0.08, 0.13, 0.17, 0.21, 0.25, 0.28, 0.30, 0.31, 0.31, 0.30, 0.40, 0.31),
    "flower": (0.04, 0.05, 0.22, 0.20, 0.25, 0.38, 0.45, 0.48, 0.49, 0.46, 0.30, 0.25, 0.12),
    "plastic": (0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.055, 0.055, 0.05, 0.05, 0.06, 0.06),
    "urban": (0.10, 0.11, 0.13, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.19, 0.20, 0.22, 0.20),
    "snow": (0.92, 0.92, 0.90, 0.88, 0.86, 0.84, 0.82, 0.80, 0.78, 0.65, 0.50, 0.10, 0.06),
}  # fmt: skip
MIXING_COVERS = (*COVERS, "snow")
MIXING_MATRIX = np.array([ENDMEMBERS[name] for name in MIXING_COVERS], np.float32)  # [K, 13]

# Clear-sky top-of-atmosphere: two-way transmittance and path reflectance (Rayleigh + aerosol,
# strongest in the blue) at a typical aerosol load. B9 sits in a water vapour band, B10 in a
# band that the atmosphere absorbs almost completely: the surface barely shows there.
_TRANSMITTANCE = np.array(
    [0.72, 0.78, 0.85, 0.90, 0.92, 0.93, 0.94, 0.95, 0.95, 0.35, 0.012, 0.96, 0.95], np.float32
)
# Path reflectance falls with wavelength (Rayleigh optical depth ~ wavelength^-4: 0.044 at B4's
# 665 nm gives 0.017 under a 35 degree summer sun, aerosol adds a little more).
_PATH = np.array(
    [0.11, 0.085, 0.055, 0.022, 0.019, 0.016, 0.014, 0.012, 0.011, 0.006, 0.0015, 0.003, 0.001],
    np.float32,
)
_SNOW_MONTHS = (80, 320)  # snow possible before / after these days of year


@dataclasses.dataclass(frozen=True)
class Atmosphere:
    """Per-date affine map from surface to top-of-atmosphere reflectance: gain * R + path."""

    gain: np.ndarray  # [time, 13]
    path: np.ndarray  # [time, 13]


def sample_atmosphere(doy: np.ndarray, rng: np.random.Generator) -> Atmosphere:
    """Draws each date's aerosol load and water vapour (summer air holds more of both)."""
    season = np.sin(2 * np.pi * (np.asarray(doy) - 100) / 365.0)  # +1 in July, -1 in January
    aerosol = np.exp(rng.normal(0.15 * season, 0.3))[:, None].astype(np.float32)
    gain = np.broadcast_to(_TRANSMITTANCE, (len(doy), len(BANDS))) ** aerosol
    gain = gain.copy()
    gain[:, BANDS.index("B9")] = _TRANSMITTANCE[BANDS.index("B9")] * np.exp(
        rng.normal(-0.2 * season, 0.2)
    )
    gain[:, BANDS.index("B10")] = _TRANSMITTANCE[BANDS.index("B10")] * rng.uniform(
        0.5, 1.5, len(doy)
    )
    return Atmosphere(gain=gain.astype(np.float32), path=(_PATH * aerosol).astype(np.float32))


def snow_coverage(doy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Share of the scene under snow on each date: float32 [time], zero outside winter."""
    winter = (np.asarray(doy) < _SNOW_MONTHS[0]) | (np.asarray(doy) > _SNOW_MONTHS[1])
    snowy = winter & (rng.random(len(doy)) < 0.3)
    return np.where(snowy, rng.uniform(0.3, 1.0, len(doy)), 0.0).astype(np.float32)


def top_of_atmosphere(fractions: np.ndarray, atmosphere: Atmosphere, group: str) -> np.ndarray:
    """Linear mixing of the covers, then the atmosphere, for one band group.

    Args:
      fractions: float32 [time, ..., len(MIXING_COVERS)] weighted cover fractions.
      atmosphere: the dates' atmosphere.
      group: "x10", "x20" or "x60".

    Returns:
      float32 [time, ..., bands of the group] top-of-atmosphere reflectance.
    """
    index = GROUP_INDICES[group]
    surface = fractions @ MIXING_MATRIX[:, index]
    extra = (1,) * (fractions.ndim - 2)
    gain = atmosphere.gain[:, index].reshape(len(atmosphere.gain), *extra, len(index))
    path = atmosphere.path[:, index].reshape(len(atmosphere.path), *extra, len(index))
    return surface * gain + path


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Averages `factor` x `factor` pixel blocks over axes 1 and 2: a coarser band's pixel.

    Args:
      values: [time, height, width, ...] with height and width multiples of `factor`.
      factor: block size in pixels.
    """
    if factor == 1:
        return values
    # Summing strided views is several times faster than a reshape and a two-axis mean.
    total = values[:, 0::factor, 0::factor].copy()
    for row in range(factor):
        for column in range(factor):
            if row or column:
                total += values[:, row::factor, column::factor]
    return total * np.asarray(1.0 / factor**2, values.dtype)
