"""Baseline encoder built from the stock `keras.layers.ConvLSTM2D`, masked by sequence length."""

import keras
import tensorflow as tf

from mtlcc_tf.layers.encoder import AGGREGATIONS, encoder_output_spec


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class StockConvLSTMEncoder(keras.layers.Layer):
    """Stacked (bidirectional) `keras.layers.ConvLSTM2D` with the encoder's call signature.

    What the stock layer does with padding: it takes a [batch, time] mask and, at a masked
    step, keeps the previous state (and output). Its backward layer reverses the whole time
    axis (`go_backwards`), so trailing padding comes first there and the state stays at its
    zero initial value until the last real observation: final states equal those of an
    unpadded run. Unlike `ConvRNNEncoder` it has no layer normalisation, pads with zeros,
    has glorot / orthogonal initialisation, and needs a static tile size (it builds its zero
    state from the shape known at build time).

    Call arguments and outputs are those of `ConvRNNEncoder` (without
    `return_state_sequences`: the stock layer does not expose per-step cell states).

    Args:
        filters: Hidden channels per direction.
        kernel_size: Side of the square convolution kernels.
        num_layers: Stacked recurrent layers.
        bidirectional: Wrap each layer in `keras.layers.Bidirectional`.
        dropout: The stock layer's input dropout.
        aggregation: 'state', 'avg_output' or 'sum_output'.
        unroll: Passed to the stock layer.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        aggregation: str = "state",
        unroll: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.aggregation = aggregation
        self.unroll = unroll
        # One attribute per layer, not a list: tf.train.Checkpoint does not see into the lists
        # Keras tracks.
        for layer in range(num_layers):
            recurrent = keras.layers.ConvLSTM2D(
                filters,
                kernel_size,
                padding="same",
                dropout=dropout,
                return_sequences=layer < num_layers - 1 or aggregation != "state",
                return_state=True,
                unroll=unroll,
                name=f"conv_lstm2d_layer{layer}",
                dtype=self.dtype_policy,
            )
            if bidirectional:
                recurrent = keras.layers.Bidirectional(
                    recurrent, name=f"bidirectional_layer{layer}", dtype=self.dtype_policy
                )
            setattr(self, f"recurrent_layer{layer}", recurrent)

    @property
    def recurrent_layers(self) -> list[keras.layers.Layer]:
        """The stacked recurrent layers, first to last."""
        return [getattr(self, f"recurrent_layer{layer}") for layer in range(self.num_layers)]

    def build(self, inputs_shape, sequence_length_shape=None):
        shape = tuple(inputs_shape)
        for recurrent in self.recurrent_layers:
            recurrent.build(shape)
            shape = shape[:-1] + (self.filters * (2 if self.bidirectional else 1),)

    def call(self, inputs, sequence_length, training=None):
        # [batch, time]
        mask = tf.sequence_mask(sequence_length, tf.shape(inputs)[1])
        sequence, cell_states = inputs, []
        for recurrent in self.recurrent_layers:
            # Bidirectional: (output, h_fw, c_fw, h_bw, c_bw); ConvLSTM2D: (output, h, c).
            sequence, *states = recurrent(sequence, mask=mask, training=training)
            cell_states.extend(states[1::2])
        if self.aggregation == "state":
            return tf.concat(cell_states, axis=-1)
        return sequence * tf.cast(mask, sequence.dtype)[:, :, None, None, None]

    def compute_output_spec(self, inputs, sequence_length, training=None):
        num_directions = 2 if self.bidirectional else 1
        return encoder_output_spec(
            inputs.shape, self.aggregation, self.num_layers, num_directions, self.filters,
            self.compute_dtype,
        )  # fmt: skip

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            aggregation=self.aggregation,
            unroll=self.unroll,
        )
        return config
