"""Classification head of the original and masked pooling of per-step logits over time."""

import keras
import tensorflow as tf

from mtlcc_tf.choices import HEAD_KINDS
from mtlcc_tf.layers.functional import check_padding, spatial_padding


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class ClassificationHead(keras.layers.Layer):
    """Maps features to float32 class scores; softmax is left to the loss / the user.

    'original' is the original's `conv_bn_relu`: a convolution without bias, batch
    normalisation (decay 0.9, epsilon 1e-3) and leaky ReLU (slope 0.2). 'logits' is one
    convolution with bias. Batch normalisation and the output run in float32.

    Call arguments:
        inputs: [batch, height, width, channels], or [batch, time, height, width, channels] to
            classify every step.
        sequence_length: [batch] int, only with per-step inputs: batch statistics then skip
            padding steps.
        training: Batch statistics (True) or moving averages.

    Returns:
        float32 [batch, (time,) height, width, num_classes].

    Args:
        num_classes: Output channels.
        kernel_size: Side of the square convolution kernel.
        kind: 'original' or 'logits'.
        padding: 'reflect' (the original) or 'same'.
    """

    def __init__(
        self,
        num_classes: int,
        kernel_size: int = 3,
        kind: str = "original",
        padding: str = "reflect",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}")
        check_padding(padding)
        self.num_classes = num_classes
        self.kernel_size = kernel_size
        self.kind = kind
        self.padding = padding
        self.conv = keras.layers.Conv2D(
            num_classes,
            kernel_size,
            padding="same" if padding == "same" else "valid",
            use_bias=kind == "logits",
            name="conv",
            dtype=self.dtype_policy,
        )
        self.batch_norm = None
        if kind == "original":
            self.batch_norm = keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-3, name="batch_norm", dtype="float32"
            )

    def build(self, inputs_shape, sequence_length_shape=None):
        self.conv.build((None, None, None, inputs_shape[-1]))
        if self.batch_norm is not None:
            self.batch_norm.build((None, None, None, self.num_classes))

    def call(self, inputs, sequence_length=None, training=None):
        per_step = len(inputs.shape) == 5
        shape = tf.shape(inputs)
        # [frames, height, width, channels]
        frames = tf.reshape(inputs, tf.concat([[-1], shape[-3:]], axis=0)) if per_step else inputs
        padded, _ = spatial_padding(frames, self.kernel_size, self.padding)
        scores = self.conv(padded)
        if self.batch_norm is not None:
            frame_mask = None
            if per_step and sequence_length is not None:
                # [frames, height, width]: statistics over real steps only.
                frame_mask = tf.reshape(tf.sequence_mask(sequence_length, shape[1]), [-1, 1, 1])
                frame_mask = tf.broadcast_to(frame_mask, tf.shape(scores)[:3])
            scores = self.batch_norm(scores, training=training, mask=frame_mask)
            scores = tf.nn.leaky_relu(scores, alpha=0.2)
        scores = tf.cast(scores, tf.float32)
        if per_step:
            scores = tf.reshape(scores, tf.concat([shape[:-1], [self.num_classes]], axis=0))
        return scores

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            kernel_size=self.kernel_size,
            kind=self.kind,
            padding=self.padding,
        )
        return config


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class TemporalPooling(keras.layers.Layer):
    """Averages ('avg') or sums ('sum') per-step scores over each sample's real steps.

    The original reduced over all steps, padding included; here padding steps are skipped.

    Call arguments:
        inputs: [batch, time, height, width, classes].
        sequence_length: [batch] int.

    Returns:
        [batch, height, width, classes] in float32.

    Args:
        mode: 'avg' or 'sum'.
    """

    def __init__(self, mode: str = "avg", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in ("avg", "sum"):
            raise ValueError(f"mode must be 'avg' or 'sum', got {mode!r}")
        self.mode = mode

    def call(self, inputs, sequence_length):
        # [batch, time, 1, 1, 1]
        mask = tf.sequence_mask(sequence_length, tf.shape(inputs)[1], dtype=inputs.dtype)
        total = tf.reduce_sum(inputs * mask[:, :, None, None, None], axis=1)
        if self.mode == "sum":
            return total
        count = tf.maximum(tf.cast(sequence_length, inputs.dtype), 1.0)
        return total / count[:, None, None, None]

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
