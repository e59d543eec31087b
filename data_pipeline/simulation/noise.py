"""Smooth multi-scale random fields (cubic B-spline lattice noise) evaluated on any pixel window."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np


def make_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one named stream of a seed, e.g. `make_rng(0, "clouds", 2016)`.

    Every random component draws from its own stream, so turning clouds off (or simulating only
    some tile rows) leaves every other draw unchanged.
    """
    words = [int(seed) & 0xFFFFFFFF]
    words += [zlib.crc32(key.encode()) if isinstance(key, str) else int(key) for key in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _bspline_weights(fraction: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights of the 4 lattice points around each position: [..., 4]."""
    f = fraction[..., None]
    f2, f3 = f * f, f * f * f
    return np.concatenate(
        [(1 - f) ** 3, 3 * f3 - 6 * f2 + 4, -3 * f3 + 3 * f2 + 3 * f + 1, f3], axis=-1
    ) / np.float32(6)


# The interpolated field of unit-variance lattice values has this standard deviation (2-D); we
# divide by it so that every octave has unit variance whatever its scale.
_FRACTIONS = np.linspace(0, 1, 257, dtype=np.float64)
BSPLINE_STD = float(np.mean(np.sum(_bspline_weights(_FRACTIONS) ** 2, axis=-1)))


def _interpolation(
    start: np.ndarray,
    size: int,
    stride: int,
    scale: float,
    origin: float,
    lattice_size: int,
    span: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Lattice rows to read and the [channels, size, span] matrix that interpolates them.

    Args:
      start: [channels] first pixel coordinate of the window for each channel.
      size: window length in output samples.
      stride: pixels between output samples.
      scale: lattice spacing in pixels.
      origin: pixel coordinate of lattice index 1.
      lattice_size: number of lattice points along this axis.
      span: number of lattice points read per channel.

    Returns:
      first: [channels] first lattice index read; weights: [channels, size, span] float32.
    """
    coords = (start[:, None] + np.arange(size) * stride + 0.5 - origin) / scale + 1.0  # [C, size]
    index = np.floor(coords).astype(np.int64)
    first = np.clip(index[:, 0] - 1, 0, lattice_size - span)
    local = np.clip(index - 1 - first[:, None], 0, span - 4)
    weights = _bspline_weights((coords - index).astype(np.float32))  # [C, size, 4]
    matrix = np.zeros((len(start), size, span), np.float32)
    channel = np.arange(len(start))[:, None, None]
    pixel = np.arange(size)[None, :, None]
    matrix[channel, pixel, local[..., None] + np.arange(4)] = weights
    return first, matrix


@dataclasses.dataclass(frozen=True)
class LatticeNoise:
    """A zero-mean, unit-variance smooth random field per channel over a canvas.

    A sum of octaves; each octave is a lattice of Gaussian values spaced `scale` pixels apart and
    interpolated with cubic B-splines, written as two small matrix products per window, so any
    window of the canvas (or of its margin) evaluates to the same values wherever it is cut.
    """

    lattices: tuple[np.ndarray, ...]  # each [channels, rows, columns]
    scales: tuple[tuple[float, float], ...]  # (row, column) spacing in pixels per octave
    weights: np.ndarray  # [channels, octaves]
    margin: int

    @classmethod
    def create(
        cls,
        rng: np.random.Generator,
        channels: int,
        height: int,
        width: int,
        scales: Sequence[float],
        amplitudes: Sequence[float] | np.ndarray | None = None,
        margin: int = 0,
        stretch: float = 1.0,
    ) -> LatticeNoise:
        """Draws the lattices of a canvas of `height` x `width` pixels plus `margin` all round.

        Args:
          rng: random generator.
          channels: independent fields (e.g. one per date).
          height: canvas height in pixels.
          width: canvas width in pixels.
          scales: lattice spacing of each octave in pixels (feature size).
          amplitudes: relative amplitude of each octave [octaves], or per channel
            [channels, octaves] (e.g. broken or layered clouds by date); default: equal.
          margin: pixels outside the canvas that can be evaluated too (e.g. for shadows).
          stretch: column spacing / row spacing, > 1 gives east-west streaks.
        """
        amplitudes = np.ones(len(scales)) if amplitudes is None else np.asarray(amplitudes)
        amplitudes = np.broadcast_to(amplitudes, (channels, len(scales)))
        norm = np.sqrt(np.sum(amplitudes**2, axis=1, keepdims=True))
        weights = (amplitudes / norm / BSPLINE_STD).astype(np.float32)
        lattices, octave_scales = [], []
        for scale in scales:
            row_scale, column_scale = float(scale), float(scale) * stretch
            rows = int(np.ceil((height + 2 * margin) / row_scale)) + 5
            columns = int(np.ceil((width + 2 * margin) / column_scale)) + 5
            lattices.append(rng.standard_normal((channels, rows, columns), dtype=np.float32))
            octave_scales.append((row_scale, column_scale))
        return cls(tuple(lattices), tuple(octave_scales), weights, margin)

    @property
    def channels(self) -> int:
        return self.lattices[0].shape[0]

    def evaluate(
        self,
        row: int | np.ndarray,
        column: int | np.ndarray,
        height: int,
        width: int,
        stride: int = 1,
        channels: np.ndarray | None = None,
    ) -> np.ndarray:
        """The field on a window: float32 [channels, height, width].

        Args:
          row: top pixel row of the window, scalar or [channels] (a different window per
            channel, e.g. the cloud that casts each date's shadow).
          column: left pixel column, scalar or [channels].
          height: window height in pixels.
          width: window width in pixels.
          stride: evaluate every `stride`-th pixel only (height and width count samples).
          channels: evaluate only these channels (int [n]); `row` and `column` then have n
            entries. The output has n channels.
        """
        channels = np.arange(self.channels) if channels is None else np.asarray(channels)
        num_channels = len(channels)
        rows = np.broadcast_to(np.asarray(row, np.float64), (num_channels,))
        columns = np.broadcast_to(np.asarray(column, np.float64), (num_channels,))
        field = np.zeros((num_channels, height, width), np.float32)
        if num_channels == 0:
            return field
        # When every channel reads the same window one interpolation matrix serves them all.
        shared = np.all(rows == rows[0]) and np.all(columns == columns[0])
        if shared:
            rows, columns = rows[:1], columns[:1]
        channel = channels[:, None, None]
        for lattice, (row_scale, column_scale), weight in zip(
            self.lattices, self.scales, self.weights[channels].T, strict=True
        ):
            row_span = min(int(np.ceil(height * stride / row_scale)) + 5, lattice.shape[1])
            column_span = min(int(np.ceil(width * stride / column_scale)) + 5, lattice.shape[2])
            first_row, row_matrix = _interpolation(
                rows, height, stride, row_scale, -self.margin, lattice.shape[1], row_span
            )
            first_column, column_matrix = _interpolation(
                columns, width, stride, column_scale, -self.margin, lattice.shape[2], column_span
            )
            if shared:
                block = lattice[
                    channels,
                    first_row[0] : first_row[0] + row_span,
                    first_column[0] : first_column[0] + column_span,
                ]
            else:
                block = lattice[
                    channel,
                    (first_row[:, None] + np.arange(row_span))[:, :, None],
                    (first_column[:, None] + np.arange(column_span))[:, None, :],
                ]
            # [C, h, r] @ [C, r, c] @ [C, c, w]: the separable B-spline interpolation.
            field += weight[:, None, None] * (row_matrix @ block @ column_matrix.transpose(0, 2, 1))
        return field


def coverage_thresholds(
    noise: LatticeNoise, coverage: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Per-channel thresholds above which `coverage` of the canvas lies: float32 [channels].

    Estimated on a sparse sample of the whole canvas, so every window cut from it uses the same
    threshold and small windows vary in cover the way parts of a real scene do.
    """
    step = max(1, min(8, min(height, width) // 48))  # at least ~48 x 48 samples
    sample = noise.evaluate(0, 0, -(-height // step), -(-width // step), stride=step)
    sample = sample.reshape(noise.channels, -1)
    quantiles = np.clip(1.0 - np.asarray(coverage, np.float64), 0.0, 1.0)
    thresholds = np.array(
        [np.quantile(values, q) for values, q in zip(sample, quantiles, strict=True)]
    )
    # Full cover lies below the sample's minimum (with room, so that it stays textured rather
    # than uniformly saturated); no cover lies above every value.
    minimum = sample.min(axis=1) - 0.5
    thresholds = np.where(quantiles <= 0, minimum, np.where(quantiles >= 1, np.inf, thresholds))
    return thresholds.astype(np.float32)
