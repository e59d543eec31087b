"""Stacked, bidirectional convolutional recurrent encoder with variable sequence lengths."""

import keras
import tensorflow as tf

from mtlcc_tf.choices import AGGREGATIONS, RECURRENT_CELLS
from mtlcc_tf.layers.cells import ConvGRUCell, ConvLSTMCell, ConvRecurrentCell
from mtlcc_tf.layers.recurrence import run_recurrence

CELL_TYPES = dict(zip(RECURRENT_CELLS, (ConvLSTMCell, ConvGRUCell), strict=True))


def to_time_major(sequence: tf.Tensor) -> tf.Tensor:
    """Swaps the batch and time axes of a 5-D tensor (the swap is its own inverse)."""
    return tf.transpose(sequence, [1, 0, 2, 3, 4])


def reverse_within_length(sequence: tf.Tensor, sequence_length: tf.Tensor) -> tf.Tensor:
    """Reverses each sample of a time-major [time, batch, ...] tensor within its length."""
    return tf.reverse_sequence(sequence, sequence_length, seq_axis=0, batch_axis=1)


def encoder_output_spec(
    inputs_shape, aggregation: str, num_layers: int, num_directions: int, filters: int, dtype
) -> keras.KerasTensor:
    """Output spec of an encoder: [batch, H, W, C] for `state`, else [batch, T, H, W, C]."""
    batch, time, height, width, _ = inputs_shape
    if aggregation == "state":
        channels = num_layers * num_directions * filters
        return keras.KerasTensor((batch, height, width, channels), dtype=dtype)
    return keras.KerasTensor((batch, time, height, width, num_directions * filters), dtype=dtype)


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class ConvRNNEncoder(keras.layers.Layer):
    """Stack of (bidirectional) ConvLSTM / ConvGRU layers, as `convrnn_layer` of the original.

    Each direction of each layer has its own cell (own weights). Padding must sit at the end
    of the time axis: steps at or past `sequence_length` leave the states unchanged, and the
    backward direction runs over each sequence reversed within its length
    (`tf.reverse_sequence`), so it starts at the sample's last real observation. Layer l + 1
    reads the concatenated per-step outputs of both directions of layer l.

    Call arguments:
        inputs: [batch, time, height, width, channels].
        sequence_length: [batch] int, the number of real observations.
        training: Enables dropout.
        return_state_sequences: Return every per-step state instead (for analysis).

    Returns:
        With `aggregation='state'`: [batch, height, width, num_layers * num_directions *
        filters], the final states (LSTM: the cell state c, GRU: h) of both directions of every
        layer, concatenated per layer as in the original. With 'avg_output' / 'sum_output':
        [batch, time, height, width, num_directions * filters], the last layer's outputs,
        zero at padding steps. With `return_state_sequences`: a dict
        `{"layer{l}_{forward|backward}_{hidden|cell}": [batch, time, height, width, filters]}`
        of float32 states in input time order, zero at padding steps.

    Args:
        filters: Hidden channels per direction.
        kernel_size: Side of the square convolution kernels.
        cell_type: 'lstm' or 'gru'.
        num_layers: Stacked recurrent layers.
        bidirectional: Add a backward direction with its own weights.
        normalization: Layer normalisation in the cells (else biased convolutions).
        spatial_normalization: Normalisation statistics over space (False: per pixel).
        padding: 'reflect' or 'same'.
        peepholes: LSTM peepholes.
        dropout: Dropout rate on the input of every recurrent layer.
        aggregation: 'state', 'avg_output' or 'sum_output' (what `call` returns).
        unroll: Unroll the time loop when the number of steps is static.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        cell_type: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = True,
        normalization: bool = True,
        spatial_normalization: bool = True,
        padding: str = "reflect",
        peepholes: bool = False,
        dropout: float = 0.0,
        aggregation: str = "state",
        unroll: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type must be one of {tuple(CELL_TYPES)}, got {cell_type!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if peepholes and cell_type != "lstm":
            raise ValueError("peepholes exist only for cell_type='lstm'")
        self.filters = filters
        self.kernel_size = kernel_size
        self.cell_type = cell_type
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.normalization = normalization
        self.spatial_normalization = spatial_normalization
        self.padding = padding
        self.peepholes = peepholes
        self.dropout = dropout
        self.aggregation = aggregation
        self.unroll = unroll
        self.directions = ("forward", "backward") if bidirectional else ("forward",)

        cell_arguments = dict(
            filters=filters,
            kernel_size=kernel_size,
            padding=padding,
            normalization=normalization,
            spatial_normalization=spatial_normalization,
            dtype=self.dtype_policy,
        )
        if peepholes:
            cell_arguments["peepholes"] = True
        # One attribute per cell, not a list: tf.train.Checkpoint does not see into the lists
        # Keras tracks, so a checkpoint would silently miss the cells' weights.
        for layer in range(num_layers):
            for direction in self.directions:
                cell = CELL_TYPES[cell_type](
                    name=f"{cell_type}_layer{layer}_{direction}", **cell_arguments
                )
                setattr(self, f"layer{layer}_{direction}", cell)
        self.input_dropout = keras.layers.Dropout(dropout, name="input_dropout")

    @property
    def cells(self) -> list[ConvRecurrentCell]:
        """All cells, layer-major: `cells[layer * num_directions + direction]`."""
        return [
            getattr(self, f"layer{layer}_{direction}")
            for layer in range(self.num_layers)
            for direction in self.directions
        ]

    def build(self, inputs_shape, sequence_length_shape=None):
        channels = inputs_shape[-1]
        for index, cell in enumerate(self.cells):
            if index and index % len(self.directions) == 0:
                channels = self.filters * len(self.directions)
            cell.build((None, None, None, channels))

    def state_sequence_names(self) -> list[str]:
        """Keys of the dict returned with `return_state_sequences=True`."""
        state_names = CELL_TYPES[self.cell_type].state_names
        return [
            f"layer{layer}_{direction}_{state_name}"
            for layer in range(self.num_layers)
            for direction in self.directions
            for state_name in state_names
        ]

    def call(self, inputs, sequence_length, training=None, return_state_sequences=False):
        # [time, batch, height, width, channels]: the loop runs over the leading axis.
        sequence = to_time_major(inputs)
        # Longer than the time axis means "no padding" (`tf.reverse_sequence` needs <=).
        sequence_length = tf.minimum(tf.cast(sequence_length, tf.int32), tf.shape(sequence)[0])
        # [time, batch, 1, 1, 1]
        step_mask = tf.transpose(tf.sequence_mask(sequence_length, tf.shape(sequence)[0]))
        step_mask = tf.cast(step_mask, tf.float32)[:, :, None, None, None]
        final_states, state_sequences = [], {}
        for layer in range(self.num_layers):
            last_layer = layer == self.num_layers - 1
            sequence = self.input_dropout(sequence, training=training)
            num_state_names = len(CELL_TYPES[self.cell_type].state_names)
            needs_outputs = not last_layer or self.aggregation != "state"
            num_collected = num_state_names if return_state_sequences else int(needs_outputs)
            outputs = []
            for direction in self.directions:
                cell = getattr(self, f"layer{layer}_{direction}")
                backward = direction == "backward"
                cell_inputs = sequence
                if backward:
                    cell_inputs = reverse_within_length(sequence, sequence_length)
                states, sequences = run_recurrence(
                    cell,
                    cell.project_inputs(cell_inputs),
                    sequence_length,
                    unroll=self.unroll,
                    num_collected=num_collected,
                )
                # LSTM: the cell state c, as the original; GRU: h.
                final_states.append(states[-1])
                if backward:
                    sequences = [reverse_within_length(s, sequence_length) for s in sequences]
                sequences = [states_over_time * step_mask for states_over_time in sequences]
                if needs_outputs:
                    outputs.append(sequences[0])
                if return_state_sequences:
                    for name, states_over_time in zip(cell.state_names, sequences, strict=True):
                        key = f"layer{layer}_{direction}_{name}"
                        state_sequences[key] = to_time_major(states_over_time)
            if outputs:
                sequence = tf.cast(tf.concat(outputs, axis=-1), self.compute_dtype)
        if return_state_sequences:
            return state_sequences
        if self.aggregation == "state":
            return tf.cast(tf.concat(final_states, axis=-1), self.compute_dtype)
        return to_time_major(sequence)

    def compute_output_spec(
        self, inputs, sequence_length, training=None, return_state_sequences=False
    ):
        if return_state_sequences:
            batch, time, height, width, _ = inputs.shape
            shape = (batch, time, height, width, self.filters)
            return {
                name: keras.KerasTensor(shape, dtype="float32")
                for name in self.state_sequence_names()
            }
        return encoder_output_spec(
            inputs.shape, self.aggregation, self.num_layers, len(self.directions), self.filters,
            self.compute_dtype,
        )  # fmt: skip

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            cell_type=self.cell_type,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            normalization=self.normalization,
            spatial_normalization=self.spatial_normalization,
            padding=self.padding,
            peepholes=self.peepholes,
            dropout=self.dropout,
            aggregation=self.aggregation,
            unroll=self.unroll,
        )
        return config
