"""A TSViT-style temporo-spatial transformer (Tarasiou et al., CVPR 2023), small and our own.

The tile is cut into square patches of `patch_size` pixels; every date of every patch becomes
one token (a linear embedding of its pixels' channels plus a learned embedding of its day of
year, one row per day, read from float32 inputs whatever the precision). A temporal transformer
looks over each patch's dates (padding dates masked out) together with one learned token per
output channel ("class tokens"); only those tokens go on. A spatial transformer then relates,
for each class token, all patches of the tile (with learned row and column embeddings), and a
linear map turns every patch's class token into its pixels' values of that channel. Time first,
then space: the factorisation that made TSViT the strongest model on the MTLCC benchmark.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mtlcc_tf.layers.dates import DOY_CHANNEL

MAX_PATCHES = 128  # per side (256 px at patch size 2): the learned row and column embeddings
_DAYS = 367  # rows of the day-of-year embedding (0: padding)


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x)).

    Call arguments:
        inputs: [batch, tokens, dim].
        attention_mask: bool [batch, tokens, tokens] (True: may attend) or None.
    """

    def __init__(self, dim, num_heads, key_dim, mlp_ratio=4, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.key_dim = dim, num_heads, key_dim
        self.mlp_ratio, self.dropout = mlp_ratio, dropout
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, key_dim, dropout=dropout, name="attention"
        )
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")
        self.mlp = keras.Sequential(
            [
                keras.layers.Dense(dim * mlp_ratio, activation="gelu", name="mlp1"),
                keras.layers.Dropout(dropout, name="mlp_dropout"),
                keras.layers.Dense(dim, name="mlp2"),
            ],
            name="mlp",
        )

    def build(self, inputs_shape, attention_mask_shape=None):
        tokens = (None, None, self.dim)
        self.attention_norm.build(tokens)
        self.attention.build(tokens, tokens)
        self.mlp_norm.build(tokens)
        self.mlp.build(tokens)
        self.built = True

    def call(self, inputs, attention_mask=None, training=None):
        normed = self.attention_norm(inputs)
        x = inputs + self.attention(
            normed, normed, attention_mask=attention_mask, training=training
        )
        return x + self.mlp(self.mlp_norm(x), training=training)

    def compute_output_spec(self, inputs, attention_mask=None, training=None):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim, num_heads=self.num_heads, key_dim=self.key_dim,
            mlp_ratio=self.mlp_ratio, dropout=self.dropout,
        )  # fmt: skip
        return config


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class TemporoSpatialTransformer(keras.layers.Layer):
    """TSViT-style encoder: [batch, time, H, W, channels] -> [batch, H, W, outputs].

    Call arguments:
        inputs: [batch, time, height, width, channels], doy / 365 in channel `DOY_CHANNEL`.
        sequence_length: int [batch]: real dates first, padding after them.

    Args:
        outputs: class tokens, i.e. output channels per pixel (TSViT: one per class).
        dim: token width (TSViT on MTLCC: 128).
        depth: blocks of the temporal and of the spatial transformer each (TSViT: 4 and 4).
        num_heads: attention heads (TSViT: 4).
        key_dim: size of each head's keys, queries and values (TSViT: 64).
        patch_size: patch side in pixels (TSViT on MTLCC: 2); tiles whose side is not a
            multiple are zero-padded, and the output cropped back.
        dropout: dropout in attention and MLPs while training.
    """

    def __init__(
        self, outputs, dim=32, depth=2, num_heads=4, key_dim=8, patch_size=2, dropout=0.0,
        **kwargs,
    ):  # fmt: skip
        kwargs["autocast"] = False  # the doy channel must stay exact (see day_embedding)
        super().__init__(**kwargs)
        if min(outputs, dim, depth, num_heads, key_dim, patch_size) < 1:
            raise ValueError(
                f"outputs={outputs}, dim={dim}, depth={depth}, num_heads={num_heads}, "
                f"key_dim={key_dim}, patch_size={patch_size}: each must be >= 1"
            )
        self.outputs, self.dim, self.depth = outputs, dim, depth
        self.num_heads, self.key_dim, self.patch_size, self.dropout = (
            num_heads, key_dim, patch_size, dropout,
        )  # fmt: skip
        self.embedding = keras.layers.Dense(dim, name="patch_embedding")
        # One learned row per day, as TSViT. The layer takes its inputs uncast (autocast off):
        # under mixed_bfloat16 a bf16 doy channel is off by up to a day or two, and a table
        # trained on such days reads rows it never trained in float32 (our first screen: the
        # same checkpoint, test OA 0.649 in bf16 and 0.564 in float32).
        self.day_embedding = keras.layers.Embedding(_DAYS, dim, name="day_embedding")
        block = {"dim": dim, "num_heads": num_heads, "key_dim": key_dim, "dropout": dropout}
        self.temporal = [TransformerBlock(**block, name=f"temporal{i}") for i in range(depth)]
        self.temporal_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="temporal_norm")
        self.row_embedding = keras.layers.Embedding(MAX_PATCHES, dim, name="row_embedding")
        self.column_embedding = keras.layers.Embedding(MAX_PATCHES, dim, name="column_embedding")
        self.spatial = [TransformerBlock(**block, name=f"spatial{i}") for i in range(depth)]
        self.spatial_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="spatial_norm")
        self.unembedding = keras.layers.Dense(patch_size * patch_size, name="patch_unembedding")

    def build(self, inputs_shape, sequence_length_shape=None):
        self.input_channels = inputs_shape[-1]
        tokens = (None, None, self.dim)
        self.embedding.build((None, self.patch_size**2 * self.input_channels))
        self.day_embedding.build((None, None))
        self.row_embedding.build((None,))
        self.column_embedding.build((None,))
        for block in (*self.temporal, *self.spatial):
            block.build(tokens)
        self.temporal_norm.build(tokens)
        self.spatial_norm.build(tokens)
        self.unembedding.build(tokens)
        self.class_tokens = self.add_weight(
            name="class_tokens", shape=(self.outputs, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )  # fmt: skip
        self.built = True

    def call(self, inputs, sequence_length, training=None):
        shape = tf.shape(inputs)
        batch, time, height, width = shape[0], shape[1], shape[2], shape[3]
        channels = inputs.shape[-1] or self.input_channels
        p, dim, k = self.patch_size, self.dim, self.outputs
        doy = tf.round(tf.cast(inputs[:, :, 0, 0, DOY_CHANNEL], tf.float32) * 365.0)
        real = tf.sequence_mask(sequence_length, time)  # [batch, time]

        # Patches: pad to a multiple of the patch size, then [B, T, rows, cols, p*p*C].
        padded_height, padded_width = -(-height // p) * p, -(-width // p) * p
        x = tf.pad(
            inputs,
            [[0, 0], [0, 0], [0, padded_height - height], [0, padded_width - width], [0, 0]],
        )
        rows, columns = padded_height // p, padded_width // p
        tf.debugging.assert_less_equal(
            tf.maximum(rows, columns), MAX_PATCHES,
            message=f"tile too large: at most {MAX_PATCHES * p} px a side for this model",
        )  # fmt: skip
        x = tf.reshape(x, [batch, time, rows, p, columns, p, channels])
        x = tf.transpose(x, [0, 2, 4, 1, 3, 5, 6])  # [B, rows, cols, T, p, p, C]
        patches = rows * columns
        x = tf.reshape(x, [batch * patches, time, p * p * channels])
        tokens = self.embedding(tf.cast(x, self.compute_dtype))  # [B*N, T, dim]
        days = self.date_tokens(doy)  # [B, T, dim]
        tokens = tokens + tf.repeat(tf.cast(days, tokens.dtype), patches, axis=0)

        # Time: each patch's dates with k class tokens in front; padding dates masked out.
        class_tokens = tf.cast(self.class_tokens, tokens.dtype)
        tokens = tf.concat(
            [tf.broadcast_to(class_tokens[None], [batch * patches, k, dim]), tokens], axis=1
        )
        keys = tf.concat(
            [tf.ones([batch, k], tf.bool), real], axis=1
        )  # [B, k + T]: class tokens and real dates may be attended to
        keys = tf.repeat(keys, patches, axis=0)[:, None, :]  # [B*N, 1, k + T]
        mask = tf.broadcast_to(keys, [batch * patches, k + time, k + time])
        for block in self.temporal:
            tokens = block(tokens, attention_mask=mask, training=training)
        tokens = self.temporal_norm(tokens[:, :k])  # [B*N, k, dim]

        # Space: for each class token, every patch of the tile.
        tokens = tf.reshape(tokens, [batch, patches, k, dim])
        tokens = tf.reshape(tf.transpose(tokens, [0, 2, 1, 3]), [batch * k, patches, dim])
        position = (
            self.row_embedding(tf.range(rows))[:, None, :]
            + self.column_embedding(tf.range(columns))[None, :, :]
        )  # [rows, cols, dim]
        tokens = tokens + tf.cast(tf.reshape(position, [1, patches, dim]), tokens.dtype)
        for block in self.spatial:
            tokens = block(tokens, training=training)
        pixels = self.unembedding(self.spatial_norm(tokens))  # [B*k, N, p*p]

        pixels = tf.reshape(pixels, [batch, k, rows, columns, p, p])
        pixels = tf.transpose(pixels, [0, 2, 4, 3, 5, 1])  # [B, rows, p, cols, p, k]
        pixels = tf.reshape(pixels, [batch, padded_height, padded_width, k])
        return pixels[:, :height, :width, :]

    def date_tokens(self, doy):
        """[..., dim]: what a date adds to its tokens, from days of year [...] (float)."""
        return self.day_embedding(tf.cast(tf.clip_by_value(doy, 0, _DAYS - 1), "int32"))

    def compute_output_spec(self, inputs, sequence_length, training=None):
        batch, _, height, width, _ = inputs.shape
        return keras.KerasTensor((batch, height, width, self.outputs), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            outputs=self.outputs, dim=self.dim, depth=self.depth, num_heads=self.num_heads,
            key_dim=self.key_dim, patch_size=self.patch_size, dropout=self.dropout,
        )  # fmt: skip
        return config
