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
    convolution with bias. 'hidden' (not in the original) puts a hidden layer first: the
    convolution maps to `hidden_filters` channels, batch norm and ReLU, then the original's
    block as a 1x1 convolution; the original's head is linear in the features up to its
    per-class batch norm. Batch normalisation and the output run in float32.

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
        kind: 'original', 'logits' or 'hidden'.
        padding: 'reflect' (the original) or 'same'.
        hidden_filters: Channels of the 'hidden' head's hidden layer.
    """

    def __init__(
        self,
        num_classes: int,
        kernel_size: int = 3,
        kind: str = "original",
        padding: str = "reflect",
        hidden_filters: int = 64,
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
        self.hidden_filters = hidden_filters
        self.hidden = self.hidden_norm = None
        if kind == "hidden":
            self.hidden = keras.layers.Conv2D(
                hidden_filters,
                kernel_size,
                padding="same" if padding == "same" else "valid",
                use_bias=False,
                name="hidden",
                dtype=self.dtype_policy,
            )
            self.hidden_norm = self._batch_norm("hidden_norm")
        self.conv = keras.layers.Conv2D(
            num_classes,
            1 if kind == "hidden" else kernel_size,
            padding="same" if padding == "same" else "valid",
            use_bias=kind == "logits",
            name="conv",
            dtype=self.dtype_policy,
        )
        self.batch_norm = None if kind == "logits" else self._batch_norm("batch_norm")

    @staticmethod
    def _batch_norm(name: str) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-3, name=name, dtype="float32"
        )

    def build(self, inputs_shape, sequence_length_shape=None):
        channels = inputs_shape[-1]
        if self.hidden is not None:
            self.hidden.build((None, None, None, channels))
            self.hidden_norm.build((None, None, None, self.hidden_filters))
            channels = self.hidden_filters
        self.conv.build((None, None, None, channels))
        if self.batch_norm is not None:
            self.batch_norm.build((None, None, None, self.num_classes))

    def call(self, inputs, sequence_length=None, training=None):
        per_step = len(inputs.shape) == 5
        shape = tf.shape(inputs)
        # [frames, height, width, channels]
        frames = tf.reshape(inputs, tf.concat([[-1], shape[-3:]], axis=0)) if per_step else inputs
        padded, _ = spatial_padding(frames, self.kernel_size, self.padding)
        frame_mask = None
        if per_step and sequence_length is not None:
            # [frames, height, width]: batch statistics over real steps only.
            frame_mask = tf.reshape(tf.sequence_mask(sequence_length, shape[1]), [-1, 1, 1])
            frame_mask = tf.broadcast_to(frame_mask, tf.shape(frames)[:3])
        if self.hidden is not None:
            hidden = self.hidden_norm(self.hidden(padded), training=training, mask=frame_mask)
            padded = tf.cast(tf.nn.relu(hidden), self.compute_dtype)
        scores = self.conv(padded)
        if self.batch_norm is not None:
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
            hidden_filters=self.hidden_filters,
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
