"""Tensor functions the layers share: spatial padding and the gates' layer normalisation."""

import tensorflow as tf

from mtlcc_tf import ops
from mtlcc_tf.choices import PADDINGS


def check_padding(padding: str) -> str:
    """`padding` if it is one of `PADDINGS`; ValueError naming the choices otherwise."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def spatial_padding(inputs: tf.Tensor, kernel_size: int, padding: str) -> tuple[tf.Tensor, str]:
    """Pads [batch, height, width, channels] for a stride-1 convolution that keeps the size.

    Reflect padding is channel-wise, so conv(pad([x, h])) == conv_x(pad(x)) + conv_h(pad(h)):
    the cells may split their convolution into input and recurrent parts.

    Returns:
        The padded tensor and the `padding` argument for `tf.nn.conv2d`.
    """
    if padding == "same" or kernel_size == 1:
        return inputs, "SAME"
    border = kernel_size // 2
    if inputs.dtype == tf.float32 and ops.use_fused():
        return ops.reflect_pad(inputs, border), "VALID"
    paddings = [[0, 0], [border, border], [border, border], [0, 0]]
    return tf.pad(inputs, paddings, mode="REFLECT"), "VALID"


def layer_norm(
    inputs: tf.Tensor,
    num_groups: int,
    scale: tf.Tensor,
    offset: tf.Tensor,
    epsilon: float,
    spatial: bool = True,
) -> tf.Tensor:
    """Layer-normalises each of `num_groups` channel groups of a float32 feature map.

    Like `tf.contrib.layers.layer_norm` applied to every gate separately in the original: the
    statistics of one group run over height × width × its channels (or over its channels only
    when `spatial` is False, for the per-pixel baseline); scale and offset are per channel.

    Written for speed on CPU, where each pass over memory is a visible share of a training
    step (layer normalisation is ~17% of one): per-channel sums of x and x², the variance as
    E[x²] - E[x]² (float32; fine for gate pre-activations), and the output as one
    multiply-add with per-(sample, channel) factors. `tf.math.reduce_euclidean_norm` would
    save the x² tensor (~1.5% of a training step) but has no XLA kernel.

    Args:
        inputs: [batch, height, width, num_groups * filters], float32.
        num_groups: How many gates are stacked along the channel axis.
        scale: [num_groups * filters] learned scale.
        offset: [num_groups * filters] learned offset.
        epsilon: Added to the variance.
        spatial: Whether the statistics also run over height and width.

    Returns:
        A tensor like `inputs`.
    """
    channels = inputs.shape[-1]
    filters = channels // num_groups
    if spatial:
        # [batch, 1, 1, channels]
        sums = tf.reduce_sum(inputs, axis=[1, 2], keepdims=True)
        squares = tf.reduce_sum(tf.square(inputs), axis=[1, 2], keepdims=True)
        count = tf.cast(tf.shape(inputs)[1] * tf.shape(inputs)[2] * filters, inputs.dtype)
    else:
        sums, squares, count = inputs, tf.square(inputs), float(filters)
    # [..., num_groups, 1]: statistics per group.
    group_shape = tf.concat([tf.shape(sums)[:-1], [num_groups, filters]], axis=0)
    mean = tf.reduce_sum(tf.reshape(sums, group_shape), axis=-1, keepdims=True) / count
    mean_square = tf.reduce_sum(tf.reshape(squares, group_shape), axis=-1, keepdims=True) / count
    inverse_std = tf.math.rsqrt(tf.maximum(mean_square - tf.square(mean), 0.0) + epsilon)
    # [..., num_groups, filters] -> [..., channels]
    factor = inverse_std * tf.reshape(scale, [num_groups, filters])
    shift = tf.reshape(offset, [num_groups, filters]) - mean * factor
    shape = tf.shape(sums)
    return inputs * tf.reshape(factor, shape) + tf.reshape(shift, shape)
