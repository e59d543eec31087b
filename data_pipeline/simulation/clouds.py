"""Clouds, their shadows, haze and cirrus over a scene: layers, fields, mask and radiometry."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline.simulation.noise import LatticeNoise, coverage_thresholds
from data_pipeline.simulation.spectra import BANDS, GROUP_FACTORS, GROUP_INDICES, GROUPS, block_mean

# Top-of-atmosphere reflectance of an opaque cloud, B1..B12: bright and nearly white up to the
# NIR, darker in the SWIR (water and ice absorb), bright in the cirrus band B10 in proportion to
# its top height (`_cloud_spectra`).
CLOUD_SPECTRUM = np.array(
    [0.75, 0.73, 0.72, 0.71, 0.71, 0.70, 0.70, 0.69, 0.68, 0.50, 0.30, 0.45, 0.30], np.float32
)
# Haze scatters mostly short wavelengths; cirrus is thin ice high above the water vapour, hence
# nearly as bright in B10 as in the visible.
HAZE_SPECTRUM = np.array(
    [0.30, 0.26, 0.20, 0.15, 0.13, 0.12, 0.11, 0.10, 0.10, 0.08, 0.02, 0.05, 0.03], np.float32
)
CIRRUS_SPECTRUM = np.array(
    [0.35, 0.33, 0.32, 0.31, 0.31, 0.30, 0.30, 0.30, 0.30, 0.28, 0.30, 0.20, 0.12], np.float32
)
# Share of the illumination that still reaches a shadow (diffuse sky light, which is blue).
DIFFUSE = np.array(
    [0.45, 0.38, 0.28, 0.22, 0.20, 0.17, 0.15, 0.13, 0.13, 0.12, 0.10, 0.08, 0.07], np.float32
)
CLOUD_SCALES = (160.0, 80.0, 40.0, 20.0, 10.0)  # pixels
# Octave amplitudes of the two kinds of cloud each date mixes: layered decks (large, smooth;
# winter) and broken cumulus (small cells; summer afternoons, but also at 10:30).
STRATIFORM_AMPLITUDES = (1.0, 0.6, 0.35, 0.2, 0.1)
CUMULUS_AMPLITUDES = (0.25, 0.35, 1.0, 0.8, 0.35)
EDGE_SOFTNESS = 0.3  # noise units over which a cloud's optical depth ramps up at its edge
MAX_SHADOW_OFFSET = 500  # pixels; clouds this far outside a window still cast shadows into it
CLEAR_DATE_SHARE = 0.2  # dates without any cloud, whatever the season
# Mask thresholds: opacity of clouds (and of haze or cirrus when they are that thick), and the
# share of direct sunlight a cloud blocks, above which a detector notices the atmosphere.
CLOUD_OPACITY = 0.15
THIN_OPACITY = 0.2
SHADOW_DEPTH = 0.3
# What a noticed pixel looks like then decides its label: cloud if it is at least this much
# brighter (reflectance) than its clear surface in blue (B2) or, over snow, in SWIR (B11); shadow
# if at least this much darker in NIR (B8); clear if neither (a thin cloud over a shadow can
# cancel out).
CLOUD_BRIGHTENING = 0.01
SHADOW_DARKENING = 0.01
_FIELDS = ("cloud", "shadow", "haze", "cirrus")
LATITUDE = 48.3  # degrees, north of Munich
OVERPASS_HOUR_ANGLE = -22.5  # degrees: Sentinel-2 passes at 10:30 local solar time


def seasonal_cover(doy: np.ndarray, cloud_rate: float) -> np.ndarray:
    """Typical cloud cover of a cloudy date on each day of year, before `sample_coverage` clips
    each date to 1: 1.3 in January, 0.7 in July at cloud_rate 1.

    Calibrated so that, with the clear dates, the cloud mask covers about 58 % of all
    pixel-observations (72 % in January, 48 % in July) and about 30 % of 240 m tile-observations
    are clear: Sentinel-2 over central Europe sees 60-70 % cloud (`python -m
    data_pipeline.inspect` reports these figures for a dataset).
    """
    season = np.cos(2 * np.pi * (np.asarray(doy, np.float64) - 15) / 365.0)
    return np.maximum(cloud_rate * (1.0 + 0.3 * season), 0.0)


def sample_coverage(doy: np.ndarray, cloud_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Cloud cover of each date: clear dates, then exponential around the seasonal mean.

    The same seed gives more cover on every date for a larger `cloud_rate` (the random factors
    do not depend on it), and none at all at 0.
    """
    clear = rng.random(len(doy)) < CLEAR_DATE_SHARE
    factor = rng.exponential(1.0, len(doy)) / (1 - CLEAR_DATE_SHARE)
    return np.where(clear, 0.0, np.minimum(seasonal_cover(doy, cloud_rate) * factor, 1.0))


def shadow_offsets(doy: np.ndarray, height_km: np.ndarray) -> np.ndarray:
    """Displacement (rows, columns) in 10 m pixels from a cloud to its shadow: float [time, 2].

    The sun at overpass stands in the south-east, low in winter: shadows fall to the
    north-north-west, a few hundred metres away in summer and kilometres in winter.
    """
    lat = np.radians(LATITUDE)
    hour = np.radians(OVERPASS_HOUR_ANGLE)
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + np.asarray(doy, np.float64)) / 365)
    cos_zenith = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour)
    zenith = np.arccos(np.clip(cos_zenith, 0.05, 1.0))
    azimuth = np.pi + np.arctan2(
        np.sin(hour), np.cos(hour) * np.sin(lat) - np.tan(decl) * np.cos(lat)
    )  # from north, clockwise
    length = np.minimum(height_km * np.tan(zenith) * 100.0, MAX_SHADOW_OFFSET)
    return np.stack([length * np.cos(azimuth), -length * np.sin(azimuth)], axis=-1)


def cloud_amplitudes(doy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Octave amplitudes per date [time, octaves]: a random mix of layered and broken cloud,
    broken (convective) more often in summer."""
    summer = np.sin(2 * np.pi * (np.asarray(doy, np.float64) - 100) / 365.0)
    broken = np.clip(rng.uniform(0.0, 1.0, len(doy)) + 0.3 * summer, 0.0, 1.0)[:, None]
    return (1 - broken) * np.array(STRATIFORM_AMPLITUDES) + broken * np.array(CUMULUS_AMPLITUDES)


@dataclasses.dataclass(frozen=True)
class CloudLayers:
    """Clouds, haze and cirrus of some dates over a canvas; any window of it can be evaluated."""

    threshold: np.ndarray  # [time] cloud noise level of the cloud edge
    thickness: np.ndarray  # [time] optical depth per noise unit above the edge
    spectra: np.ndarray  # [time, 13] opaque cloud reflectance
    shadow_offset: np.ndarray  # [time, 2] rows, columns from a cloud to its shadow
    haze: np.ndarray  # [time] haze optical depth
    cirrus: np.ndarray  # [time] cirrus optical depth per noise unit above its edge
    cirrus_threshold: np.ndarray  # [time]
    cloud_noise: LatticeNoise
    haze_noise: LatticeNoise
    cirrus_noise: LatticeNoise


def sample_cloud_layers(
    doy: np.ndarray,
    coverage: np.ndarray,
    haze_level: np.ndarray | float,
    height: int,
    width: int,
    rng: np.random.Generator,
) -> CloudLayers:
    """Draws cloud fields of the given cover per date over a `height` x `width` canvas.

    Args:
      doy: int [time] days of year (sun position, hence shadow direction and length).
      coverage: [time] share of the canvas under cloud on each date.
      haze_level: scalar or [time] in [0, 1]: how much haze and cirrus there can be (0: none).
      height: canvas height in pixels.
      width: canvas width in pixels.
      rng: random generator.
    """
    num_dates = len(doy)
    coverage = np.asarray(coverage, np.float64)
    haze_level = np.broadcast_to(np.asarray(haze_level, np.float64), (num_dates,))
    cloud_noise = LatticeNoise.create(
        rng, num_dates, height, width, CLOUD_SCALES, cloud_amplitudes(doy, rng),
        margin=MAX_SHADOW_OFFSET + 16,
    )  # fmt: skip
    haze_noise = LatticeNoise.create(rng, num_dates, height, width, (250.0, 90.0), (1.0, 0.5))
    cirrus_noise = LatticeNoise.create(
        rng, num_dates, height, width, (120.0, 40.0), (1.0, 0.5), stretch=4.0
    )
    top = rng.uniform(0.0, 1.0, num_dates)  # cloud-top height, 0 low to 1 high
    spectra = CLOUD_SPECTRUM * rng.uniform(0.7, 1.0, (num_dates, 1))
    spectra[:, BANDS.index("B10")] = 0.06 + 0.34 * top
    with_cirrus = rng.random(num_dates) < 0.25 * haze_level
    return CloudLayers(
        threshold=coverage_thresholds(cloud_noise, coverage, height, width),
        thickness=np.exp(rng.normal(np.log(5.0), 0.7, num_dates)).astype(np.float32),
        spectra=spectra.astype(np.float32),
        shadow_offset=shadow_offsets(doy, 0.8 + 1.7 * top),
        haze=(haze_level * (0.03 + 0.2 * coverage) * np.exp(rng.normal(0, 0.5, num_dates))).astype(
            np.float32
        ),
        cirrus=np.where(with_cirrus, rng.uniform(0.1, 0.35, num_dates), 0.0).astype(np.float32),
        cirrus_threshold=coverage_thresholds(
            cirrus_noise, rng.uniform(0.2, 0.8, num_dates), height, width
        ),
        cloud_noise=cloud_noise,
        haze_noise=haze_noise,
        cirrus_noise=cirrus_noise,
    )


def _opacity(noise: np.ndarray, threshold: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    depth = (
        np.maximum(noise - threshold[:, None, None], 0.0)
        * (thickness / EDGE_SOFTNESS)[:, None, None]
    )
    return -np.expm1(-depth)


def cloud_fields(
    layers: CloudLayers, row: int, column: int, height: int, width: int
) -> dict[str, np.ndarray]:
    """Opacity of clouds, haze and cirrus, and shadow depth, on a window: float32 [time, h, w].

    Only the dates that have a layer are evaluated (clear dates cost nothing).
    """
    num_dates = len(layers.threshold)
    fields = {name: np.zeros((num_dates, height, width), np.float32) for name in _FIELDS}
    cloudy = np.flatnonzero(np.isfinite(layers.threshold))
    if cloudy.size:
        noise = layers.cloud_noise.evaluate(row, column, height, width, channels=cloudy)
        threshold, thickness = layers.threshold[cloudy], layers.thickness[cloudy]
        fields["cloud"][cloudy] = _opacity(noise, threshold, thickness)
        # A pixel lies in shadow when the cloud one offset up-sun of it is opaque.
        offset = np.round(layers.shadow_offset[cloudy]).astype(np.int64)
        caster = layers.cloud_noise.evaluate(
            row - offset[:, 0], column - offset[:, 1], height, width, channels=cloudy
        )
        fields["shadow"][cloudy] = _opacity(caster, threshold, thickness)
    hazy = np.flatnonzero(layers.haze > 0)
    if hazy.size:
        noise = layers.haze_noise.evaluate(row, column, height, width, channels=hazy)
        depth = layers.haze[hazy, None, None] * np.maximum(1.0 + 0.5 * noise, 0.0)
        fields["haze"][hazy] = -np.expm1(-depth)
    cirrus = np.flatnonzero(layers.cirrus > 0)
    if cirrus.size:
        fields["cirrus"][cirrus] = _opacity(
            layers.cirrus_noise.evaluate(row, column, height, width, channels=cirrus),
            layers.cirrus_threshold[cirrus],
            layers.cirrus[cirrus] * EDGE_SOFTNESS / 0.5,
        )
    return fields


def _affine(
    fields: dict[str, np.ndarray], cloud_spectra: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The four layers, bottom up, as one affine map per pixel and band: out = R gain + light.

    Shadow: R (1 - s (1 - diffuse)); each layer above: R (1 - a) + a spectrum.

    Args:
      fields: [n, h, w] each, on any grid.
      cloud_spectra: [n, 13] opaque cloud reflectance of each of the n (dates).
      index: the bands to compute.

    Returns:
      gain and light, float32 [n, h, w, len(index)].
    """
    shadow, haze, cirrus, cloud = (
        fields[name][..., None] for name in ("shadow", "haze", "cirrus", "cloud")
    )
    transmitted = (1.0 - haze) * (1.0 - cirrus) * (1.0 - cloud)  # [n, h, w, 1]
    gain = transmitted - (shadow * transmitted) * (1.0 - DIFFUSE[index])
    weights = np.concatenate(
        [haze * (1.0 - cirrus) * (1.0 - cloud), cirrus * (1.0 - cloud), cloud], axis=-1
    )  # [n, h, w, 3]
    num = len(gain)
    spectra = np.stack(
        [
            np.broadcast_to(HAZE_SPECTRUM[index], (num, len(index))),
            np.broadcast_to(CIRRUS_SPECTRUM[index], (num, len(index))),
            cloud_spectra[:, index],
        ],
        axis=1,
    )  # [n, 3, bands]
    light = weights.reshape(num, -1, 3) @ spectra
    return gain, light.reshape(gain.shape)


def _cloudy(fields: dict):
    """Where cloud, or haze and cirrus together, are thick enough to notice."""
    thin = 1.0 - (1.0 - fields["haze"]) * (1.0 - fields["cirrus"])
    return (fields["cloud"] >= CLOUD_OPACITY) | (thin >= THIN_OPACITY)


def mask_labels(fields: dict, blue, nir, swir) -> tuple:
    """Where the mask says cloud and where shadow: the layers must be thick enough to notice,
    and what they do to the signal decides which (numpy arrays or tf tensors alike).

    Args:
      fields: `cloud_fields` at 10 m, [time, h, w] each.
      blue: [time, h, w] composited minus clear reflectance in B2.
      nir: the same in B8.
      swir: the same in B11 (only read where a cloudy pixel is not brighter in blue).

    Returns:
      Booleans (is_cloud, is_shadow), [time, h, w] each, never both.
    """
    cloudy = _cloudy(fields)
    noticed = cloudy | (fields["shadow"] >= SHADOW_DEPTH)
    # Snow is brighter than cloud up to the NIR: clouds over it darken the visible and show only
    # in the SWIR, where snow is dark.
    is_cloud = cloudy & ((blue >= CLOUD_BRIGHTENING) | (swir >= CLOUD_BRIGHTENING))
    return is_cloud, noticed & ~is_cloud & (nir <= -SHADOW_DARKENING)


def cloud_mask(
    fields: dict[str, np.ndarray],
    layers: CloudLayers,
    clear: dict[str, np.ndarray],
    clouded: dict[str, np.ndarray],
) -> np.ndarray:
    """uint8 [time, h, w]: 0 clear, 1 cloud, 2 shadow, as the sensor sees them (`mask_labels`).

    Args:
      fields: `cloud_fields` of the window at 10 m.
      layers: the layers the fields came from.
      clear: the window's reflectance per band group without the atmosphere's layers.
      clouded: `apply_clouds` of it.
    """
    x10, x20 = GROUPS["x10"], GROUPS["x20"]
    blue, nir = (
        clouded["x10"][..., x10.index(band)] - clear["x10"][..., x10.index(band)]
        for band in ("B2", "B8")
    )
    # B11 on the 10 m grid, each pixel with its own layers over its 20 m pixel's surface; only
    # where blue leaves the label open (clouds over snow: a few per cent of pixels).
    swir = np.zeros_like(blue)
    time, row, column = np.nonzero(_cloudy(fields) & (blue < CLOUD_BRIGHTENING))
    if time.size:
        points = {name: value[time, row, column, None, None] for name, value in fields.items()}
        gain, light = _affine(points, layers.spectra[time], np.array([BANDS.index("B11")]))
        factor = GROUP_FACTORS["x20"]
        surface = clear["x20"][time, row // factor, column // factor, x20.index("B11")]
        swir[time, row, column] = surface * (gain[:, 0, 0, 0] - 1.0) + light[:, 0, 0, 0]
    is_cloud, is_shadow = mask_labels(fields, blue, nir, swir)
    return np.where(is_cloud, 1, np.where(is_shadow, 2, 0)).astype(np.uint8)


def apply_clouds(
    reflectance: dict[str, np.ndarray], fields: dict[str, np.ndarray], layers: CloudLayers
) -> dict[str, np.ndarray]:
    """Adds shadows, haze, cirrus and clouds (in that order, bottom up) to clear reflectances.

    Args:
      reflectance: band group -> float32 [time, h / factor, w / factor, bands] reflectance.
      fields: `cloud_fields` of the same window at 10 m; coarser groups see their block mean
        (a 60 m pixel half covered by cloud is half as bright).
      layers: the layers the fields came from (for the cloud spectra).

    Returns:
      The same groups with the atmosphere's effects, float32.
    """
    out = {}
    coarse = {1: fields}
    for factor in sorted(set(GROUP_FACTORS.values()) - {1}):
        finer = max(f for f in coarse if factor % f == 0)
        coarse[factor] = {
            name: block_mean(value, factor // finer) for name, value in coarse[finer].items()
        }
    for group, values in reflectance.items():
        # out = values * gain + light: fewer passes over the big arrays than layer by layer.
        gain, light = _affine(coarse[GROUP_FACTORS[group]], layers.spectra, GROUP_INDICES[group])
        gain *= values
        gain += light
        out[group] = gain
    return out
