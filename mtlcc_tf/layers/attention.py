"""A U-TAE-style temporal-attention encoder (Garnot & Landrieu, ICCV 2021), small and our own.

Each date goes through the same convolutional encoder (no mixing across time): one level at
the tile's resolution and one at half of it. At the lower level, a lightweight temporal
attention (L-TAE) looks over the dates of every pixel: a learned query per head against keys of
each date's features plus a positional encoding of its day of year (irregular dates are just
other positions), padding dates masked out; each head's softmax weights average its group of
channels over the dates. The heads' mean weights, upsampled, average the full-resolution
features of the dates the same way, and a decoder joins the two levels back at the tile's
resolution. The weights per date are what the analysis view returns, for the cloud study.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mtlcc_tf.layers.dates import DOY_CHANNEL

_PERIOD = 1000.0  # positional encoding: wavelengths from 2π to 2π·1000 days, as in L-TAE
_GROUPS = 4  # group normalisation


def day_of_year_encoding(doy: tf.Tensor, dims: int) -> tf.Tensor:
    """Sinusoidal encoding [..., dims] of days of year [...] (float): sin and cos pairs."""
    half = dims // 2
    rates = tf.pow(_PERIOD, -tf.range(half, dtype=tf.float32) / max(half, 1))
    angle = tf.cast(doy, tf.float32)[..., None] * rates
    encoding = tf.concat([tf.sin(angle), tf.cos(angle)], axis=-1)
    if dims % 2:
        encoding = tf.pad(encoding, [[0, 0]] * (len(encoding.shape) - 1) + [[0, 1]])
    return encoding


def _block(name: str, filters: int, strides: int = 1) -> list[keras.layers.Layer]:
    """Convolution, group normalisation, ReLU; named, so that weight paths are the same in
    every process (checkpoints are matched by path)."""
    return [
        keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name=f"{name}_conv"),
        keras.layers.GroupNormalization(groups=_GROUPS, name=f"{name}_norm"),
        keras.layers.ReLU(name=f"{name}_relu"),
    ]


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class TemporalAttentionEncoder(keras.layers.Layer):
    """U-TAE-style encoder: [batch, time, H, W, channels] -> [batch, H, W, filters].

    Call arguments:
        inputs: [batch, time, height, width, channels], doy / 365 in channel `DOY_CHANNEL`.
        sequence_length: int [batch]: real dates first, padding after them.
        return_attention: also return the heads' weights per date, float32
            [batch, num_heads, time, height / 2, width / 2] (0 at padding dates).

    Args:
        filters: channels at the tile's resolution (twice that at half of it); a multiple of 4.
        num_heads: attention heads; must divide 2 * filters.
        key_dim: size of each head's keys and query.
        dropout: dropout on the attention weights while training.
    """

    def __init__(self, filters=32, num_heads=4, key_dim=8, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if filters % _GROUPS or (2 * filters) % num_heads:
            raise ValueError(
                f"filters={filters} must be a multiple of {_GROUPS} and 2 * filters one of "
                f"num_heads={num_heads}"
            )
        self.filters, self.num_heads, self.key_dim, self.dropout = (
            filters, num_heads, key_dim, dropout,
        )  # fmt: skip
        low = 2 * filters
        self.full_encoder = keras.Sequential(
            _block("full1", filters) + _block("full2", filters), name="full"
        )
        self.low_encoder = keras.Sequential(
            _block("low1", low, strides=2) + _block("low2", low), name="low"
        )
        self.input_norm = keras.layers.GroupNormalization(groups=num_heads, name="ltae_norm")
        self.keys = keras.layers.Dense(num_heads * key_dim, name="ltae_keys")
        self.attention_dropout = keras.layers.Dropout(dropout, name="ltae_dropout")
        self.output_mlp = keras.Sequential(
            [keras.layers.Dense(low, name="ltae_dense"), keras.layers.ReLU(name="ltae_relu")],
            name="ltae_output",
        )
        self.upsample = keras.layers.Conv2DTranspose(filters, 2, strides=2, name="upsample")
        self.decoder = keras.Sequential(
            _block("decoder1", filters) + _block("decoder2", filters), name="decoder"
        )

    def build(self, inputs_shape, sequence_length_shape=None):
        self.input_channels = inputs_shape[-1]  # the data may come without a static one
        # Built here, not on the first call: the optimizer must see every variable up front.
        low = 2 * self.filters
        image = (None, None, None)
        self.full_encoder.build((*image, self.input_channels))
        self.low_encoder.build((*image, self.filters))
        self.input_norm.build((*image, low))
        self.keys.build((None, *image, low))
        self.output_mlp.build((*image, low))
        self.upsample.build((*image, low))
        self.decoder.build((*image, low))
        self.query = self.add_weight(
            name="ltae_query", shape=(self.num_heads, self.key_dim),
            initializer=keras.initializers.RandomNormal(stddev=(2.0 / self.key_dim) ** 0.5),
        )  # fmt: skip
        self.built = True

    def call(self, inputs, sequence_length, training=None, return_attention=False):
        shape = tf.shape(inputs)
        batch, time, height, width = shape[0], shape[1], shape[2], shape[3]
        channels = inputs.shape[-1] or self.input_channels
        low_channels = 2 * self.filters
        doy = tf.round(tf.cast(inputs[:, :, 0, 0, DOY_CHANNEL], tf.float32) * 365.0)
        real = tf.sequence_mask(sequence_length, time)  # [batch, time]

        per_date = tf.reshape(inputs, [batch * time, height, width, channels])
        full = self.full_encoder(per_date, training=training)  # [B*T, H, W, f]
        low = self.low_encoder(full, training=training)  # [B*T, h, w, 2f]
        low = self.input_norm(low)
        low_shape = tf.shape(low)
        low_height, low_width = low_shape[1], low_shape[2]
        low = tf.reshape(low, [batch, time, low_height, low_width, low_channels])
        position = tf.cast(day_of_year_encoding(doy, low_channels), low.dtype)
        keyed = low + position[:, :, None, None, :]

        keys = tf.reshape(
            self.keys(keyed),
            [batch, time, low_height, low_width, self.num_heads, self.key_dim],
        )
        query = tf.cast(self.query, keys.dtype)
        scores = tf.einsum("bthwnd,nd->bnthw", keys, query) / math.sqrt(self.key_dim)
        scores = tf.cast(scores, tf.float32)
        scores = tf.where(real[:, None, :, None, None], scores, tf.float32.min)
        attention = (
            tf.nn.softmax(scores, axis=2) * tf.cast(real, tf.float32)[:, None, :, None, None]
        )
        attention = self.attention_dropout(attention, training=training)

        values = tf.reshape(
            keyed, [batch, time, low_height, low_width, self.num_heads, -1]
        )  # each head averages its own group of channels
        weights = tf.cast(attention, values.dtype)
        pooled = tf.einsum("bnthw,bthwnc->bhwnc", weights, values)
        pooled = self.output_mlp(tf.reshape(pooled, [batch, low_height, low_width, low_channels]))

        # The same weights (the heads' mean) pool the full-resolution features of the dates.
        mean_weights = tf.reshape(
            tf.reduce_mean(attention, axis=1), [batch * time, low_height, low_width, 1]
        )
        full_weights = tf.image.resize(mean_weights, [height, width], method="bilinear")
        full_weights = tf.reshape(full_weights, [batch, time, height, width])
        full = tf.reshape(full, [batch, time, height, width, self.filters])
        skip = tf.einsum("bthw,bthwc->bhwc", tf.cast(full_weights, full.dtype), full)

        up = self.upsample(pooled)[:, :height, :width, :]
        features = self.decoder(tf.concat([up, skip], axis=-1), training=training)
        if return_attention:
            return features, attention
        return features

    def compute_output_spec(self, inputs, sequence_length, training=None, return_attention=False):
        batch, _, height, width, _ = inputs.shape
        features = keras.KerasTensor((batch, height, width, self.filters), dtype=self.compute_dtype)
        if not return_attention:
            return features
        low = [None if size is None else -(-size // 2) for size in (height, width)]
        attention = keras.KerasTensor((batch, self.num_heads, None, *low), dtype="float32")
        return features, attention

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, num_heads=self.num_heads, key_dim=self.key_dim,
            dropout=self.dropout,
        )  # fmt: skip
        return config
