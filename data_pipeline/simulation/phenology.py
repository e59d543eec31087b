"""Per-parcel phenology with jittered dates and vigour, as fractions of ground cover per pixel."""

from __future__ import annotations

import numpy as np

from data_pipeline.simulation import crops
from data_pipeline.simulation.crops import INF
from data_pipeline.simulation.scene import Scene

# Ground cover components, in the order of the last axis of `cover_fractions`.
COVERS = ("soil", "green", "broadleaf", "dry", "flower", "plastic", "urban")
MAX_CUTS = 6
_DATES = ("till", "up", "senescence", "harvest", "flower")
_REGROWTH_DAYS = 12.0  # grass regrows after a cut
_HAY_DAYS = 4.0  # cut grass dries on the field before it is baled
_RESIDUE_DAYS = 30.0  # stubble and straw decay or are ploughed in
# Each parcel's peak cover is its profile's times a uniform factor in this range, at most
# MAX_COVER: a closed canopy leaves a few per cent of soil in view at its peak.
PEAK_JITTER = (0.95, 1.15)
MAX_COVER = 0.99


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # tanh form: no overflow for the "never" dates (1e4).
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def unit_parameters(scene: Scene, year_index: int, rng: np.random.Generator) -> dict:
    """Phenology parameters of every unit in one year, jittered per parcel.

    Each parcel shifts all its dates together (sowing date, weather, variety) plus a little per
    event, and varies in vigour; the whole year shifts too (a warm or cold spring). What covers a
    field before spring tillage and after harvest (catch crop, next winter crop, bare soil) is
    drawn per parcel, so those months carry no class information, as in reality.

    Returns:
      Arrays over units: every `crops.Profile` field plus `pre_green`, `pre_dry`, `autumn`,
      `autumn_cover`, `cuts` [units, MAX_CUTS] (mowing days, INF unused) and `cut_depth`.
    """
    table = crops.profile_table()
    profile = scene.profiles[year_index]
    params = {name: values[profile].copy() for name, values in table.items()}
    num_units = len(profile)
    shift = rng.normal(0.0, 4.0) + rng.normal(0.0, 6.0, num_units)
    for name in _DATES:
        dated = params[name] < INF
        params[name][dated] += (shift + rng.normal(0.0, 3.0, num_units))[dated]
    harvested = params["harvest"] < INF
    params["harvest"][harvested] += rng.normal(0.0, 4.0, num_units)[harvested]
    params["harvest"] = np.maximum(
        params["harvest"], params["senescence"] + 2.5 * params["senescence_width"]
    )
    planted = params["plastic_start"] < INF
    plastic_shift = rng.normal(0.0, 4.0, num_units)
    params["plastic_start"][planted] += plastic_shift[planted]
    params["plastic_end"][planted] += plastic_shift[planted]
    params["peak"] = np.minimum(params["peak"] * rng.uniform(*PEAK_JITTER, num_units), MAX_COVER)
    params["base"] = params["base"] * rng.uniform(0.7, 1.3, num_units)

    # Before spring tillage: bare, last autumn's frozen catch crop, or green weeds.
    summer = params["till"] < INF
    winter_state = rng.choice(3, num_units, p=[0.5, 0.35, 0.15])
    params["pre_green"] = np.where(summer & (winter_state == 2), rng.uniform(0.1, 0.25), 0.0)
    params["pre_dry"] = np.where(summer & (winter_state == 1), rng.uniform(0.15, 0.4), 0.0)

    # After harvest: next winter crop, catch crop or bare stubble; late harvests leave no time
    # for a catch crop.
    harvest = params["harvest"]
    early = harvest < 250
    after = rng.choice(3, num_units, p=[0.45, 0.3, 0.25])
    sow = np.where(early, np.maximum(harvest + 15, rng.normal(275, 8, num_units)), harvest + 15)
    autumn = np.where(after == 0, sow, np.where(after == 1, harvest + 20, harvest + 25))
    cover = np.where(after == 0, np.where(early, 0.25, 0.12), np.where(after == 1, 0.55, 0.05))
    cover = np.where(~early & (after == 1), 0.0, cover)
    params["autumn"] = np.where(harvested, autumn, INF).astype(np.float32)
    params["autumn_cover"] = np.where(harvested, cover, 0.0).astype(np.float32)

    # Mowing: 3-5 (more or fewer around the profile's count) cuts, the first in mid May.
    mown = params["cuts"] > 0
    num_cuts = np.clip(params["cuts"].astype(int) + rng.integers(-1, 2, num_units), 0, MAX_CUTS)
    first = 130.0 + shift + rng.normal(0.0, 8.0, num_units)
    interval = rng.uniform(35.0, 50.0, num_units)
    cuts = first[:, None] + interval[:, None] * np.arange(MAX_CUTS)
    params["cuts"] = np.where(
        mown[:, None] & (np.arange(MAX_CUTS) < num_cuts[:, None]) & (cuts < 330), cuts, INF
    ).astype(np.float32)
    params["cut_depth"] = rng.uniform(0.55, 0.8, num_units).astype(np.float32)
    return {name: np.asarray(value, np.float32) for name, value in params.items()}


def cover_fractions(
    params: dict,
    units: np.ndarray,
    doy: np.ndarray,
    shift: np.ndarray,
    vigour: np.ndarray,
    urban: np.ndarray,
) -> np.ndarray:
    """Fractions of ground cover of pixels over time: float32 [time, pixels, len(COVERS)].

    Args:
      params: `unit_parameters` of the year.
      units: int [pixels] unit of each pixel.
      doy: int [time] days of year.
      shift: float [pixels] per-pixel delay of every date in days (soil, micro-climate).
      vigour: float [pixels] per-pixel multiplier of the peak cover.
      urban: float [pixels] in [0, 1], scales the profile's sealed-surface fraction.
    """
    p = {name: value[units] for name, value in params.items()}
    vigour = np.asarray(vigour, np.float32)
    t = doy.astype(np.float32)[:, None] - np.asarray(shift, np.float32)[None, :]  # [time, pixels]
    up = _sigmoid((t - p["up"]) / p["up_width"])
    canopy = p["base"] + (np.minimum(p["peak"] * vigour, MAX_COVER) - p["base"]) * up
    senescent = p["senescence_amount"] * _sigmoid((t - p["senescence"]) / p["senescence_width"])
    harvested = t >= p["harvest"]
    standing = np.where(harvested, 0.0, canopy)
    green = standing * (1.0 - senescent)
    dry = standing * senescent + p["base_dry"] * (1.0 - up)
    since_harvest = np.maximum(t - p["harvest"], 0.0)
    dry += np.where(harvested, p["residue"] * np.exp(-since_harvest / _RESIDUE_DAYS), 0.0)
    untilled = t < p["till"]
    green += np.where(untilled, p["pre_green"], 0.0)
    dry += np.where(untilled, p["pre_dry"], 0.0)
    green += np.where(harvested, p["autumn_cover"] * _sigmoid((t - p["autumn"]) / 7.0), 0.0)

    mown = np.flatnonzero(p["cuts"][:, 0] < INF)
    if mown.size:
        # Loops over the few cuts: reductions over a short last axis are slow in numpy.
        remaining = np.ones((len(t), mown.size), np.float32)
        hay = np.zeros((len(t), mown.size), np.float32)
        depth = p["cut_depth"][mown]
        for cut in p["cuts"][mown].T:
            since_cut = t[:, mown] - cut
            done = since_cut >= 0
            since_cut = np.maximum(since_cut, 0.0)  # exp() of future cuts would overflow
            remaining *= np.where(done, 1.0 - depth * np.exp(-since_cut / _REGROWTH_DAYS), 1.0)
            hay += np.where(done, depth * np.exp(-since_cut / _HAY_DAYS), 0.0)
        dry[:, mown] += green[:, mown] * np.minimum(hay, 1.0) * 0.8
        green[:, mown] *= remaining

    flower = p["flower_amount"] * np.exp(-0.5 * ((t - p["flower"]) / p["flower_width"]) ** 2)
    flower = np.minimum(flower * standing, green)
    green = np.maximum(green - flower, 0.0)
    dry = np.maximum(dry, 0.0)
    plastic = np.where((t >= p["plastic_start"]) & (t < p["plastic_end"]), p["plastic_amount"], 0)
    total = green + dry + flower + plastic
    sealed = np.clip(p["urban"] * urban, 0.0, 1.0)
    # Cover fractions never exceed the pixel; sealed surfaces take their share first.
    scale = (1.0 - sealed) / np.maximum(total, 1.0)
    out = np.empty((*t.shape, len(COVERS)), np.float32)
    out[..., 0] = np.maximum((1.0 - sealed) - total * scale, 0.0)
    green = green * scale
    out[..., 1] = green * (1.0 - p["broadleaf"])
    out[..., 2] = green * p["broadleaf"]
    for index, cover in enumerate((dry, flower, plastic), start=3):
        out[..., index] = cover * scale
    out[..., 6] = sealed
    return out
