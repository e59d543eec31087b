"""A U-TAE-style temporal-attention encoder (Garnot & Landrieu, ICCV 2021), small and our own.

Each date goes through the same convolutional encoder (no mixing across time): levels at the
tile's resolution and at half, a quarter, ... of it (two by default). At the lowest level, a
lightweight temporal attention (L-TAE) looks over the dates of every pixel: a learned query per
head against keys of each date's features plus a positional encoding of its day of year
(irregular dates are just other positions), padding dates masked out; each head's softmax
weights average its group of channels over the dates. The heads' mean weights, upsampled,
average each higher level's features of the dates the same way, and a decoder joins the levels
back at the tile's resolution. The weights per date are what the analysis view returns, for the
cloud study.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mtlcc_tf.choices import ATTENTION_GROUPS as _GROUPS
from mtlcc_tf.choices import DOY_CHANNEL, attention_settings_problems

_PERIOD = 1000.0  # positional encoding: wavelengths from 2π to 2π·1000 days, as in L-TAE


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


def _level_names(level: int) -> tuple[str, str, str]:
    """(encoder, upsampling, decoder) names of resolution level `level` (0: the tile's).

    The two-level encoder keeps the names it had before more levels existed ('full', 'low',
    'upsample', 'decoder'), so its checkpoints restore.
    """
    if level == 0:
        return "full", "", ""
    if level == 1:
        return "low", "upsample", "decoder"
    return f"low{level}", f"upsample{level}", f"decoder{level}"


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class TemporalAttentionEncoder(keras.layers.Layer):
    """U-TAE-style encoder: [batch, time, H, W, channels] -> [batch, H, W, decoder_widths[0]].

    Call arguments:
        inputs: [batch, time, height, width, channels], doy / 365 in channel `DOY_CHANNEL`.
        sequence_length: int [batch]: real dates first, padding after them.
        return_attention: also return the heads' weights per date, float32
            [batch, num_heads, time, height / 2^(levels-1), width / 2^(levels-1)] (rounded up;
            0 at padding dates).

    Args:
        filters: sets the default widths, (filters, 2 * filters): two levels, the tile's
            resolution and half of it; a multiple of 4.
        num_heads: attention heads; must divide the attention's width.
        key_dim: size of each head's keys and query.
        dropout: dropout on the attention weights while training.
        widths: the per-date encoder's channels per resolution level (each level halves the
            resolution); multiples of 4. U-TAE's published setting: (64, 64, 64, 128).
        decoder_widths: the decoder's channels per level, the last equal to `widths[-1]`;
            default `widths`. U-TAE's: (32, 32, 64, 128).
        d_model: width of the attention (a per-pixel projection of the lowest level's
            features to it); default `widths[-1]` without projection. U-TAE's: 256.
    """

    def __init__(
        self, filters=32, num_heads=4, key_dim=8, dropout=0.0, widths=None,
        decoder_widths=None, d_model=None, **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        widths = tuple(widths or (filters, 2 * filters))
        decoder_widths = tuple(decoder_widths or widths)
        problems = attention_settings_problems(widths, decoder_widths, num_heads, d_model)
        if problems:
            raise ValueError("; ".join(problems))
        self.filters, self.num_heads, self.key_dim, self.dropout = (
            filters, num_heads, key_dim, dropout,
        )  # fmt: skip
        self.widths, self.decoder_widths, self.d_model = widths, decoder_widths, d_model
        self.encoders, self.upsamplers, self.decoders = [], [], []
        for level, width in enumerate(widths):
            name, upsample, decoder = _level_names(level)
            strides = 1 if level == 0 else 2
            first = name if level < 2 else f"{name}_"
            self.encoders.append(
                keras.Sequential(
                    _block(f"{first}1", width, strides=strides) + _block(f"{first}2", width),
                    name=name,
                )
            )
            if level:
                out = decoder_widths[level - 1]
                self.upsamplers.append(
                    keras.layers.Conv2DTranspose(out, 2, strides=2, name=upsample)
                )
                self.decoders.append(
                    keras.Sequential(
                        _block(f"{decoder}1" if level == 1 else f"{decoder}_1", out)
                        + _block(f"{decoder}2" if level == 1 else f"{decoder}_2", out),
                        name=decoder,
                    )
                )
        self.input_norm = keras.layers.GroupNormalization(groups=num_heads, name="ltae_norm")
        self.projection = (
            keras.layers.Dense(d_model, name="ltae_in") if d_model is not None else None
        )
        self.keys = keras.layers.Dense(num_heads * key_dim, name="ltae_keys")
        self.attention_dropout = keras.layers.Dropout(dropout, name="ltae_dropout")
        self.output_mlp = keras.Sequential(
            [
                keras.layers.Dense(widths[-1], name="ltae_dense"),
                keras.layers.ReLU(name="ltae_relu"),
            ],
            name="ltae_output",
        )

    @property
    def output_channels(self) -> int:
        return self.decoder_widths[0]

    def build(self, inputs_shape, sequence_length_shape=None):
        self.input_channels = inputs_shape[-1]  # the data may come without a static one
        # Built here, not on the first call: the optimizer must see every variable up front.
        image = (None, None, None)
        channels = self.input_channels
        for encoder, width in zip(self.encoders, self.widths, strict=True):
            encoder.build((*image, channels))
            channels = width
        attention_width = self.d_model or self.widths[-1]
        self.input_norm.build((*image, self.widths[-1]))
        if self.projection is not None:
            self.projection.build((*image, self.widths[-1]))
        self.keys.build((None, *image, attention_width))
        self.output_mlp.build((*image, attention_width))
        below = self.widths[-1]  # channels coming up from the level below
        for level in range(len(self.widths) - 1, 0, -1):
            self.upsamplers[level - 1].build((*image, below))
            out = self.decoder_widths[level - 1]
            self.decoders[level - 1].build((*image, out + self.widths[level - 1]))
            below = out
        self.query = self.add_weight(
            name="ltae_query", shape=(self.num_heads, self.key_dim),
            initializer=keras.initializers.RandomNormal(stddev=(2.0 / self.key_dim) ** 0.5),
        )  # fmt: skip
        self.built = True

    def call(self, inputs, sequence_length, training=None, return_attention=False):
        shape = tf.shape(inputs)
        batch, time = shape[0], shape[1]
        channels = inputs.shape[-1] or self.input_channels
        doy = tf.round(tf.cast(inputs[:, :, 0, 0, DOY_CHANNEL], tf.float32) * 365.0)
        real = tf.sequence_mask(sequence_length, time)  # [batch, time]

        # The same encoder for every date, level by level: [B*T, h_k, w_k, widths[k]].
        levels = [tf.reshape(inputs, [batch * time, shape[2], shape[3], channels])]
        for encoder in self.encoders:
            levels.append(encoder(levels[-1], training=training))
        levels = levels[1:]
        low = self.input_norm(levels[-1])
        if self.projection is not None:
            low = self.projection(low)
        low_shape = tf.shape(low)
        low_height, low_width = low_shape[1], low_shape[2]
        attention_width = low.shape[-1]
        low = tf.reshape(low, [batch, time, low_height, low_width, attention_width])
        position = tf.cast(day_of_year_encoding(doy, attention_width), low.dtype)
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
        features = self.output_mlp(
            tf.reshape(pooled, [batch, low_height, low_width, attention_width])
        )

        # The same weights (the heads' mean), resized, pool the dates at every higher level,
        # and the decoder joins the levels back up to the tile's resolution.
        mean_weights = tf.reshape(
            tf.reduce_mean(attention, axis=1), [batch * time, low_height, low_width, 1]
        )
        for level in range(len(self.widths) - 2, -1, -1):
            level_shape = tf.shape(levels[level])
            height, width = level_shape[1], level_shape[2]
            level_weights = tf.image.resize(mean_weights, [height, width], method="bilinear")
            level_weights = tf.reshape(level_weights, [batch, time, height, width])
            dates = tf.reshape(levels[level], [batch, time, height, width, self.widths[level]])
            skip = tf.einsum("bthw,bthwc->bhwc", tf.cast(level_weights, dates.dtype), dates)
            up = self.upsamplers[level](features)[:, :height, :width, :]
            features = self.decoders[level](tf.concat([up, skip], axis=-1), training=training)
        if return_attention:
            return features, attention
        return features

    def compute_output_spec(self, inputs, sequence_length, training=None, return_attention=False):
        batch, _, height, width, _ = inputs.shape
        features = keras.KerasTensor(
            (batch, height, width, self.output_channels), dtype=self.compute_dtype
        )
        if not return_attention:
            return features
        factor = 2 ** (len(self.widths) - 1)
        low = [None if size is None else -(-size // factor) for size in (height, width)]
        attention = keras.KerasTensor((batch, self.num_heads, None, *low), dtype="float32")
        return features, attention

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, num_heads=self.num_heads, key_dim=self.key_dim,
            dropout=self.dropout, widths=list(self.widths),
            decoder_widths=list(self.decoder_widths), d_model=self.d_model,
        )  # fmt: skip
        return config
