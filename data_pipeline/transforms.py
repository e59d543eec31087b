"""Pure tensor transforms of one decoded tile: labels, padding, subsampling, normalisation, flips.

Every function takes and returns a dict of tensors for ONE tile (no batch dimension) as produced
by `records.decode`, so it runs eagerly and inside `tf.data.Dataset.map` alike. Randomness comes
from stateless ops with an explicit `seed` (int32 [2]) so that a run is reproducible and a
checkpointed input pipeline resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

UNKNOWN_INDEX = -1
NUM_REFLECTANCE_CHANNELS = 13  # 4 + 6 + 3 bands (10, 20, 60 m), first in `inputs`
NUM_CHANNELS = NUM_REFLECTANCE_CHANNELS + 2  # then day of year, year
REFLECTANCE_SCALE = 1e-4
REFERENCE_YEAR = 2016
# Fields with a time axis, gathered together when observations are reordered or subsampled.
TIME_FIELDS = ("x10", "x20", "x60", "doy", "year", "cloud_mask")


def label_lookup_table(known_ids: Sequence[int]) -> tf.Tensor:
    """A dense id -> class index vector: known ids map to 0..K-1, id 0 to -1, other ids to -2."""
    size = max(max(known_ids), 0) + 1
    values = [-2] * size
    values[0] = UNKNOWN_INDEX
    for index, label_id in enumerate(known_ids):
        values[label_id] = index
    return tf.constant(values, tf.int32)


def map_labels(features: dict, lookup_table: tf.Tensor) -> dict:
    """Maps raw label ids to class indices; raises naming the file on ids not in classes.txt."""
    labels = features["labels"]
    in_range = tf.logical_and(labels >= 0, labels < tf.size(lookup_table))
    indices = tf.gather(lookup_table, tf.where(in_range, labels, 0))
    indices = tf.where(in_range, indices, -2)
    unknown = tf.boolean_mask(labels, indices < -1)
    check = tf.debugging.Assert(
        tf.size(unknown) == 0,
        [
            "label ids missing from classes.txt in",
            features["source"],
            "ids:",
            tf.unique(unknown)[0],
        ],
    )
    with tf.control_dependencies([check]):
        return {**features, "labels": tf.identity(indices)}


def valid_observations(features: dict) -> tf.Tensor:
    """bool [T]: real observations. Padding has doy 0 or an all-zero x10 (as in the original)."""
    has_signal = tf.reduce_any(features["x10"] > 0, axis=[1, 2, 3])
    return tf.logical_and(features["doy"] > 0, has_signal)


def _gather_time(features: dict, indices: tf.Tensor) -> dict:
    out = dict(features)
    for key in TIME_FIELDS:
        out[key] = tf.gather(features[key], indices)
    return out


def _pad_time(features: dict, length: int) -> dict:
    """Crops or zero-pads the time axis at the end to `length` steps."""
    out = dict(features)
    for key in TIME_FIELDS:
        value = features[key][:length]
        padding = tf.maximum(length - tf.shape(value)[0], 0)
        paddings = [[0, padding]] + [[0, 0]] * (len(value.shape) - 1)
        out[key] = tf.ensure_shape(
            tf.pad(value, paddings), [length, *value.shape[1:]]
        )  # fmt: skip
    return out


def select_observations(
    features: dict, length: int, num_samples: int | None = None, seed: tf.Tensor | None = None
) -> dict:
    """Keeps the real observations in time order, padded at the end to `length` steps.

    With `num_samples`, keeps at most that many: a random sorted subset when `seed` is given
    (training), evenly spaced ones otherwise (evaluation). Adds `sequence_length` (int32 scalar).

    Args:
      features: one decoded tile.
      length: time steps of the output (e.g. `num_samples`, or `nobs` to keep all).
      num_samples: at most this many observations are kept.
      seed: int32 [2] stateless seed; None for the deterministic choice.
    """
    valid = valid_observations(features)
    indices = tf.cast(tf.where(valid)[:, 0], tf.int32)  # real observations, in time order
    count = tf.size(indices)
    if num_samples is not None:
        keep = tf.minimum(count, num_samples)
        if seed is not None:
            scores = tf.random.stateless_uniform([count], seed=seed)
            chosen = tf.math.top_k(scores, k=keep).indices
        else:
            step = tf.cast(count, tf.float32) / tf.cast(tf.maximum(keep, 1), tf.float32)
            chosen = tf.cast(tf.range(keep, dtype=tf.float32) * step, tf.int32)
        indices = tf.gather(indices, tf.sort(chosen))
    out = _pad_time(_gather_time(features, indices), length)
    out["sequence_length"] = tf.minimum(tf.size(indices), length)
    return out


def inject_clouds(features: dict, fraction: float, seed: tf.Tensor) -> dict:
    """Adds simulated clouds and shadows to a `fraction` of the real observations.

    For the test-time cloud ablation. Runs on raw reflectances (before `to_model_inputs`); the
    cloud mask becomes the union of the record's own mask and the added clouds.

    Args:
      features: one tile, after `select_observations`.
      fraction: probability that a real observation gets clouds.
      seed: int32 [2] stateless seed; the same seed gives the same clouds.
    """
    from data_pipeline.simulation import clouds_tf  # the simulator is only needed here

    x10, x20, x60, added = clouds_tf.inject_clouds_tf(
        features["x10"], features["x20"], features["x60"], features["doy"], seed, fraction
    )
    out = {**features, "x10": x10, "x20": x20, "x60": x60}
    out["cloud_mask"] = tf.where(added > 0, added, features["cloud_mask"])
    return out


def to_model_inputs(features: dict) -> dict:
    """Stacks the model input `inputs` [T, H, W, 15] as the original did.

    Reflectances x 1e-4; 20 m and 60 m bands resized bilinearly onto the 10 m grid (done here in
    the input pipeline, so the model only ever sees one grid and stays fully convolutional);
    day of year / 365 and year - 2016 broadcast as two channels. Padding steps stay all zero.
    """
    x10 = features["x10"]
    size = tf.shape(x10)[1:3]
    x20 = tf.image.resize(features["x20"], size, method="bilinear")
    x60 = tf.image.resize(features["x60"], size, method="bilinear")
    reflectance = tf.concat([x10, x20, x60], axis=-1) * REFLECTANCE_SCALE
    time_steps = tf.shape(x10)[0]
    is_real = tf.cast(features["doy"] > 0, tf.float32)
    doy = tf.cast(features["doy"], tf.float32) / 365.0
    year = tf.cast(features["year"] - REFERENCE_YEAR, tf.float32) * is_real
    dates = tf.stack([doy, year], axis=-1)[:, None, None, :]  # [T, 1, 1, 2]
    dates = tf.broadcast_to(dates, tf.concat([[time_steps], size, [2]], axis=0))
    out = dict(features)
    out["inputs"] = tf.concat([reflectance, dates], axis=-1)
    return out


def augment(features: dict, seed: tf.Tensor) -> dict:
    """Random up-down and left-right flips and a multiple of 90 degree rotation.

    Labels and cloud masks follow the image. Rotation needs square tiles (MTLCC tiles are).
    """
    flips = tf.random.stateless_uniform([3], seed=seed, maxval=4, dtype=tf.int32)
    flip_up_down, flip_left_right, quarter_turns = flips[0] % 2, flips[1] % 2, flips[2]

    def spatial(value, image_axes):
        # image_axes: the (height, width) axes of this field.
        value = tf.cond(flip_up_down > 0, lambda: tf.reverse(value, [image_axes[0]]), lambda: value)
        value = tf.cond(
            flip_left_right > 0, lambda: tf.reverse(value, [image_axes[1]]), lambda: value
        )
        return rotate(value, quarter_turns, image_axes)

    out = dict(features)
    for key in ("inputs", "cloud_mask"):
        out[key] = spatial(features[key], (1, 2))
    out["labels"] = spatial(features["labels"], (0, 1))
    return out


def rotate(value: tf.Tensor, quarter_turns, axes: tuple[int, int]) -> tf.Tensor:
    """Rotates by quarter_turns x 90 degrees in the plane of `axes` (transpose + flip each).

    `quarter_turns` is a Python int (0-3; one branch is traced) or an int32 tensor.
    """
    permutation = list(range(len(value.shape)))
    permutation[axes[0]], permutation[axes[1]] = permutation[axes[1]], permutation[axes[0]]

    def turn(v):
        return tf.reverse(tf.transpose(v, permutation), [axes[0]])

    if isinstance(quarter_turns, int):
        for _ in range(quarter_turns % 4):
            value = turn(value)
        return value
    return tf.switch_case(
        quarter_turns,
        [
            lambda: value,
            lambda: turn(value),
            lambda: turn(turn(value)),
            lambda: turn(turn(turn(value))),
        ],
    )


# The eight symmetries of a square as (quarter turns, left-right flip first), ordered so that
# the first 2 and the first 4 are groups of their own without a transpose (non-square tiles too):
# identity, left-right flip, 180 degree turn, up-down flip, then the four with a transpose.
VIEWS = ((0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True))
VIEW_COUNTS = (1, 2, 4, 8)


def view(value: tf.Tensor, index: int, axes: tuple[int, int]) -> tf.Tensor:
    """`value` seen in `VIEWS[index]`: flipped left-right (along `axes[1]`) if so, then turned."""
    quarter_turns, flip = VIEWS[index]
    value = tf.convert_to_tensor(value)
    if flip:
        value = tf.reverse(value, [axes[1]])
    return rotate(value, quarter_turns, axes)


def unview(value: tf.Tensor, index: int, axes: tuple[int, int]) -> tf.Tensor:
    """The inverse of `view`: a map computed in `VIEWS[index]` back in the original frame."""
    quarter_turns, flip = VIEWS[index]
    value = rotate(tf.convert_to_tensor(value), -quarter_turns % 4, axes)
    if flip:
        value = tf.reverse(value, [axes[1]])
    return value


def _flatten_time(value: tf.Tensor) -> tf.Tensor:
    """[batch, time, ...] -> [batch * time, ...], so per-tile transforms see one long series."""
    return tf.reshape(value, tf.concat([[-1], tf.shape(value)[2:]], axis=0))


def batch_model_inputs(
    x10: tf.Tensor, x20: tf.Tensor, x60: tf.Tensor, doy: tf.Tensor, year: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Raw record tensors of a batch -> the model's {"inputs", "sequence_length"}.

    Does for a batch with a dynamic time axis what the evaluation pipeline does per tile with
    `select_observations(features, nobs)` (keep all real observations, in time order,
    padded at the end with zeros) followed by `to_model_inputs`. The padding test and
    the normalisation are the transforms' own functions, applied to [batch * time] flattened
    series; only the reordering is vectorised here because `select_observations` needs a static
    output length.

    Args:
      x10: float32 [batch, time, H, W, 4] reflectance x 1e4.
      x20: float32 [batch, time, H/2, W/2, 6] reflectance x 1e4.
      x60: float32 [batch, time, H/6, W/6, 3] reflectance x 1e4.
      doy: int32 [batch, time] day of year, 0 for padding.
      year: int32 [batch, time].

    Returns:
      inputs float32 [batch, time, H, W, 15] and sequence_length int32 [batch].
    """
    shape10 = tf.shape(x10)
    batch, time = shape10[0], shape10[1]
    flat = {"x10": _flatten_time(x10), "doy": tf.reshape(doy, [-1])}
    valid = tf.reshape(valid_observations(flat), [batch, time])
    # A stable sort on "is padding" moves real observations to the front, keeping their order.
    order = tf.argsort(tf.cast(tf.logical_not(valid), tf.int32), axis=1, stable=True)
    sequence_length = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    keep = tf.range(time)[tf.newaxis, :] < sequence_length[:, tf.newaxis]  # [batch, time]
    features = {}
    for key, value in {"x10": x10, "x20": x20, "x60": x60, "doy": doy, "year": year}.items():
        value = tf.gather(value, order, axis=1, batch_dims=1)
        mask = tf.reshape(
            keep, tf.concat([[batch, time], tf.ones([value.shape.rank - 2], tf.int32)], 0)
        )
        # Zeroed like select_observations' padding, so that the model sees identical inputs.
        value = tf.where(mask, value, tf.zeros_like(value))
        features[key] = _flatten_time(value) if value.shape.rank > 2 else tf.reshape(value, [-1])
    inputs = to_model_inputs(features)["inputs"]  # [batch * time, H, W, 15]
    inputs = tf.reshape(
        inputs, tf.concat([[batch, time], tf.shape(inputs)[1:]], axis=0)
    )  # fmt: skip
    inputs = tf.ensure_shape(inputs, [None, None, None, None, NUM_CHANNELS])
    return {"inputs": inputs, "sequence_length": sequence_length}
