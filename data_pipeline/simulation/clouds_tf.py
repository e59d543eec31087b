"""Test-time cloud injection in pure TensorFlow (stateless random ops), for use inside tf.data.

The simulator's cloud model (`clouds`, numpy, which writes the records' clouds) in graph-mode
ops: multi-scale B-spline noise thresholded to a random cover, soft edges, shadows cast from one
sun-dependent offset up-sun (clouds outside the tile cast shadows into it), haze and cirrus; the
same spectra and mask thresholds. Thresholds come from the noise's (Gaussian) distribution
instead of an empirical quantile. This is the package's one cloud injection (the input
pipeline's `cloud_injection`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_pipeline.simulation import clouds
from data_pipeline.simulation.noise import BSPLINE_STD
from data_pipeline.simulation.spectra import BANDS, GROUP_FACTORS, GROUP_INDICES, GROUPS

_HAZE_SCALES, _HAZE_AMPLITUDES = (250.0, 90.0), (1.0, 0.5)
_CIRRUS_SCALES, _CIRRUS_AMPLITUDES, _CIRRUS_STRETCH = (120.0, 40.0), (1.0, 0.5), 4.0


def _bspline_matrix(coords: tf.Tensor, lattice_size: tf.Tensor) -> tf.Tensor:
    """[channels, n, lattice_size] cubic B-spline interpolation weights at lattice coords."""
    index = tf.floor(coords)
    f = (coords - index)[..., None]
    weights = (
        tf.concat(
            [(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], axis=-1
        )
        / 6.0
    )
    points = tf.cast(index, tf.int32)[..., None] - 1 + tf.range(4)
    points = tf.clip_by_value(points, 0, lattice_size - 1)
    return tf.reduce_sum(tf.one_hot(points, lattice_size) * weights[..., None], axis=-2)


def _lattice_size(extent, scale: float) -> tf.Tensor:
    """Lattice points covering `extent` pixels at `scale` spacing, with the B-spline's support."""
    return tf.cast(tf.math.ceil(tf.cast(extent, tf.float32) / scale), tf.int32) + 4


class _Noise:
    """Unit-variance multi-octave lattice noise per channel over [0, extent) pixels."""

    def __init__(self, seed, channels, extent, scales, amplitudes, stretch=1.0):
        # amplitudes: [octaves] or [channels, octaves]; weights: [channels, octaves].
        amplitudes = tf.broadcast_to(
            tf.cast(amplitudes, tf.float32), tf.stack([channels, len(scales)])
        )
        norm = tf.sqrt(tf.reduce_sum(amplitudes**2, axis=1, keepdims=True))
        self.weights = amplitudes / norm / BSPLINE_STD
        self.scales = [(float(s), float(s) * stretch) for s in scales]
        seeds = tf.random.experimental.stateless_split(seed, num=len(scales))
        self.lattices = []
        for octave, (row_scale, column_scale) in enumerate(self.scales):
            # Sizes may be tensors: tiles of a shape unknown when the graph is traced work too.
            shape = tf.stack(
                [
                    channels,
                    _lattice_size(extent[0], row_scale),
                    _lattice_size(extent[1], column_scale),
                ]
            )
            self.lattices.append(tf.random.stateless_normal(shape, seeds[octave]))

    def evaluate(self, row: tf.Tensor, column: tf.Tensor, height, width) -> tf.Tensor:
        """float32 [channels, height, width] on windows starting at row, column ([channels])."""
        field = 0.0
        for octave, (lattice, (row_scale, column_scale)) in enumerate(
            zip(self.lattices, self.scales, strict=True)
        ):
            weight = self.weights[:, octave, None, None]
            rows = (row[:, None] + tf.range(height, dtype=tf.float32)[None] + 0.5) / row_scale
            columns = (column[:, None] + tf.range(width, dtype=tf.float32)[None] + 0.5) / (
                column_scale
            )
            row_matrix = _bspline_matrix(rows + 1.0, tf.shape(lattice)[1])
            column_matrix = _bspline_matrix(columns + 1.0, tf.shape(lattice)[2])
            field += weight * (row_matrix @ lattice @ tf.transpose(column_matrix, [0, 2, 1]))
        return field


def _shadow_offsets(doy: tf.Tensor, height_km: tf.Tensor) -> tf.Tensor:
    """[time, 2] rows, columns from cloud to shadow; as `clouds.shadow_offsets`."""
    lat = np.radians(clouds.LATITUDE)
    hour = np.radians(clouds.OVERPASS_HOUR_ANGLE)
    decl = np.radians(23.44) * tf.sin(2 * np.pi * (284.0 + doy) / 365.0)
    cos_zenith = np.sin(lat) * tf.sin(decl) + np.cos(lat) * tf.cos(decl) * np.cos(hour)
    zenith = tf.acos(tf.clip_by_value(cos_zenith, 0.05, 1.0))
    azimuth = np.pi + tf.atan2(
        tf.fill(tf.shape(doy), np.float32(np.sin(hour))),
        np.cos(hour) * np.sin(lat) - tf.tan(decl) * np.cos(lat),
    )
    length = tf.minimum(height_km * tf.tan(zenith) * 100.0, clouds.MAX_SHADOW_OFFSET)
    return tf.stack([length * tf.cos(azimuth), -length * tf.sin(azimuth)], axis=-1)


def _opacity(noise, threshold, thickness):
    depth = (
        tf.maximum(noise - threshold[:, None, None], 0.0)
        * (thickness / clouds.EDGE_SOFTNESS)[:, None, None]
    )
    return -tf.math.expm1(-depth)


def _composite(
    reflectance: tf.Tensor, field: dict[str, tf.Tensor], index: np.ndarray, spectra: tf.Tensor
) -> tf.Tensor:
    """Shadow, haze, cirrus and cloud over clear reflectance [time, h, w, len(index)], bottom up.

    `field` holds [time, h, w, 1] opacities on the reflectance's grid; `spectra` [time, 13] the
    opaque cloud of each date. As `clouds.apply_clouds`, layer by layer.
    """
    reflectance *= 1.0 - field["shadow"] * (1.0 - clouds.DIFFUSE[index])
    reflectance = reflectance * (1.0 - field["haze"]) + field["haze"] * clouds.HAZE_SPECTRUM[index]
    reflectance = (
        reflectance * (1.0 - field["cirrus"]) + field["cirrus"] * clouds.CIRRUS_SPECTRUM[index]
    )
    cloud_spectra = tf.gather(spectra, index, axis=1)[:, None, None, :]
    return reflectance * (1.0 - field["cloud"]) + field["cloud"] * cloud_spectra


def inject_clouds_tf(
    x10: tf.Tensor,
    x20: tf.Tensor,
    x60: tf.Tensor,
    doy: tf.Tensor,
    seed: tf.Tensor,
    fraction: float | tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Adds simulated clouds to one tile; deterministic for `seed`, graph- and tf.data-safe.

    Args:
      x10: float32 [time, H, W, 4] reflectance x 1e4 (H, W multiples of 6; static or not).
      x20: float32 [time, H/2, W/2, 6].
      x60: float32 [time, H/6, W/6, 3].
      doy: int [time] day of year, 0 for padding (never clouded).
      seed: int32 or int64 [2], a stateless seed.
      fraction: probability that a real observation gets clouds.

    Returns:
      x10, x20, x60 with clouds (float32, >= 0) and the mask uint8 [time, H, W] of what was added
      (0 clear, 1 cloud, 2 shadow, judged against the input as the clear surface).
    """
    height, width = tf.shape(x10)[1], tf.shape(x10)[2]
    num_dates = tf.shape(doy)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=13)

    def uniform(index, low=0.0, high=1.0):
        return tf.random.stateless_uniform([num_dates], seeds[index], low, high)

    doy_float = tf.cast(doy, tf.float32)
    chosen = (doy > 0) & (uniform(0) < fraction)
    level = tf.cast(chosen, tf.float32)
    coverage = tf.where(chosen, uniform(1, 0.1, 0.999), 0.0)
    # The noise is Gaussian with unit variance: its (1 - cover) quantile is the cloud edge.
    threshold = tf.where(chosen, tf.math.ndtri(1.0 - coverage), np.float32(np.inf))
    thickness = tf.exp(tf.random.stateless_normal([num_dates], seeds[2], np.log(5.0), 0.7))
    top = uniform(3)
    offset = _shadow_offsets(tf.where(doy > 0, doy_float, 180.0), 0.8 + 1.7 * top)
    extent = (height + clouds.MAX_SHADOW_OFFSET + 8, width + clouds.MAX_SHADOW_OFFSET + 8)
    summer = tf.sin(2 * np.pi * (doy_float - 100.0) / 365.0)
    broken = tf.clip_by_value(uniform(12) + 0.3 * summer, 0.0, 1.0)[:, None]
    amplitudes = (1 - broken) * np.array(clouds.STRATIFORM_AMPLITUDES, np.float32) + (
        broken * np.array(clouds.CUMULUS_AMPLITUDES, np.float32)
    )
    cloud_noise = _Noise(seeds[4], num_dates, extent, clouds.CLOUD_SCALES, amplitudes)
    zero = tf.zeros([num_dates])
    cloud = _opacity(cloud_noise.evaluate(zero, zero, height, width), threshold, thickness)
    # Shadows fall north-west of their cloud, so the cloud casting one lies south-east of it.
    caster = tf.clip_by_value(-tf.round(offset), 0.0, float(clouds.MAX_SHADOW_OFFSET))
    shadow = _opacity(
        cloud_noise.evaluate(caster[:, 0], caster[:, 1], height, width), threshold, thickness
    )
    haze_noise = _Noise(seeds[5], num_dates, (height, width), _HAZE_SCALES, _HAZE_AMPLITUDES)
    haze_depth = (
        level
        * (0.03 + 0.2 * coverage)
        * tf.exp(tf.random.stateless_normal([num_dates], seeds[6], 0.0, 0.5))
    )
    haze = -tf.math.expm1(
        -haze_depth[:, None, None]
        * tf.maximum(1.0 + 0.5 * haze_noise.evaluate(zero, zero, height, width), 0.0)
    )
    cirrus_noise = _Noise(
        seeds[7], num_dates, (height, width), _CIRRUS_SCALES, _CIRRUS_AMPLITUDES, _CIRRUS_STRETCH
    )
    with_cirrus = uniform(8) < 0.25 * level
    cirrus = _opacity(
        cirrus_noise.evaluate(zero, zero, height, width),
        tf.math.ndtri(1.0 - uniform(9, 0.2, 0.8)),
        tf.where(with_cirrus, uniform(10, 0.1, 0.35), 0.0) * clouds.EDGE_SOFTNESS / 0.5,
    )

    b10 = BANDS.index("B10")
    brightness = uniform(11, 0.7, 1.0)
    spectra = clouds.CLOUD_SPECTRUM[None, :] * brightness[:, None]
    spectra = tf.concat([spectra[:, :b10], (0.06 + 0.34 * top)[:, None], spectra[:, b10 + 1 :]], 1)
    fields = {"cloud": cloud, "shadow": shadow, "haze": haze, "cirrus": cirrus}
    outputs, change = [], {}
    for group, values in (("x10", x10), ("x20", x20), ("x60", x60)):
        factor = GROUP_FACTORS[group]
        field = {
            name: tf.nn.avg_pool2d(value[..., None], factor, factor, "VALID")
            for name, value in fields.items()
        }
        clear = tf.cast(values, tf.float32) * 1e-4
        reflectance = _composite(clear, field, GROUP_INDICES[group], spectra)
        if group == "x10":
            for band in ("B2", "B8"):
                index = GROUPS["x10"].index(band)
                change[band] = reflectance[..., index] - clear[..., index]
        clouded = tf.maximum(tf.round(reflectance * 1e4), 0.0)
        outputs.append(tf.where(chosen[:, None, None, None], clouded, tf.cast(values, tf.float32)))
    # The mask judges what the sensor sees, as `clouds.cloud_mask`; B11 on the 10 m grid: each
    # pixel's own layers over its 20 m pixel's surface.
    factor = GROUP_FACTORS["x20"]
    swir = tf.cast(x20[..., GROUPS["x20"].index("B11"), None], tf.float32) * 1e-4
    swir = tf.repeat(tf.repeat(swir, factor, axis=1), factor, axis=2)
    fine = {name: value[..., None] for name, value in fields.items()}
    index = np.array([BANDS.index("B11")])
    change["B11"] = (_composite(swir, fine, index, spectra) - swir)[..., 0]
    is_cloud, is_shadow = clouds.mask_labels(fields, change["B2"], change["B8"], change["B11"])
    mask = tf.where(is_cloud, 1, tf.where(is_shadow, 2, 0))
    mask = tf.where(chosen[:, None, None], mask, 0)
    return outputs[0], outputs[1], outputs[2], tf.cast(mask, tf.uint8)
