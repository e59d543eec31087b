"""Convolutional LSTM and GRU cells with the original's layer normalisation, split for speed."""

import math

import keras
import tensorflow as tf

from mtlcc_tf import ops
from mtlcc_tf.layers.functional import check_padding, layer_norm, spatial_padding


def _glorot_limit(kernel_size: int, input_channels: int, output_channels: int) -> float:
    fan_in = kernel_size * kernel_size * input_channels
    fan_out = kernel_size * kernel_size * output_channels
    return math.sqrt(6.0 / (fan_in + fan_out))


def _kernel_dtype(*parts: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """The parts of a pre-activation as the fused kernels take them: float32 and bfloat16 as
    they are, anything else (float16) cast to float32."""
    if parts[0].dtype in (tf.float32, tf.bfloat16):
        return parts
    return tuple(tf.cast(part, tf.float32) for part in parts)


class ConvRecurrentCell(keras.layers.Layer):
    """Shared arguments and plumbing of the convolutional recurrent cells.

    A cell is used in two parts so that the recurrence only holds hidden-to-hidden work:
    `project_inputs` convolves the inputs of all time steps at once, `step` advances one time
    step from a projected input. `call` chains both for a single step (the Keras cell API).
    States are kept in float32 whatever the compute dtype; only convolutions run in it.

    Args:
        filters: Channels of the hidden state.
        kernel_size: Side of the square convolution kernels.
        padding: 'reflect' (the original) or 'same' (zero padding, as keras.layers.ConvLSTM2D).
        normalization: Layer-normalise gate pre-activations (then convolutions have no bias).
        spatial_normalization: Normalise over height × width × channels (the original) rather
            than per pixel over channels (used by the per-pixel baseline).
        epsilon: Layer-normalisation variance epsilon.
    """

    state_names: tuple[str, ...] = ()
    num_input_gates = 0

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        padding: str = "reflect",
        normalization: bool = True,
        spatial_normalization: bool = True,
        epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_padding(padding)
        self.filters = filters
        self.kernel_size = kernel_size
        self.padding = padding
        self.normalization = normalization
        self.spatial_normalization = spatial_normalization
        self.epsilon = epsilon

    def _kernel(self, name: str, input_channels: int, output_channels: int, limit: float):
        return self.add_weight(
            name=name,
            shape=(self.kernel_size, self.kernel_size, input_channels, output_channels),
            initializer=keras.initializers.RandomUniform(-limit, limit),
        )

    def _vector(self, name: str, values: list[float]):
        # float32 even under mixed precision: used by the normalisation and gate arithmetic.
        return self.add_weight(
            name=name,
            shape=(len(values),),
            initializer=keras.initializers.Constant(values),
            autocast=False,
        )

    def _conv(self, inputs: tf.Tensor, kernel) -> tf.Tensor:
        padded, conv_padding = spatial_padding(inputs, self.kernel_size, self.padding)
        kernel = tf.cast(kernel, self.compute_dtype)
        return tf.nn.conv2d(tf.cast(padded, self.compute_dtype), kernel, 1, conv_padding)

    def _norm(self, inputs: tf.Tensor, num_groups: int, scale, offset) -> tf.Tensor:
        return layer_norm(
            inputs, num_groups, scale, offset, self.epsilon, spatial=self.spatial_normalization
        )

    def input_kernel(self) -> tf.Tensor:
        """The kernel of all input-to-hidden convolutions, [k, k, input_channels, gates]."""
        raise NotImplementedError

    def project_inputs(self, inputs: tf.Tensor) -> tf.Tensor:
        """Input-to-hidden convolution of every frame in one batched convolution.

        Args:
            inputs: [..., height, width, input_channels]; leading axes (e.g. time, batch) are
                folded into one batch axis.

        Returns:
            [..., height, width, num_input_gates * filters] in the compute dtype.
        """
        shape = tf.shape(inputs)
        frames = tf.reshape(inputs, tf.concat([[-1], shape[-3:]], axis=0))
        projected = self._conv(frames, self.input_kernel())
        gates = self.num_input_gates * self.filters
        projected = tf.reshape(projected, tf.concat([shape[:-1], [gates]], axis=0))
        projected.set_shape(inputs.shape[:-1] + [gates])
        return projected

    def initial_state(self, projected: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Zero states shaped like one step of `projected`, [batch, height, width, filters]."""
        shape = tf.concat([tf.shape(projected)[-4:-1], [self.filters]], axis=0)
        return tuple(tf.zeros(shape, tf.float32) for _ in self.state_names)

    def step(
        self, projected: tf.Tensor, states: tuple[tf.Tensor, ...]
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """One time step from a projected input [batch, height, width, gates] and states."""
        raise NotImplementedError

    def call(self, inputs, states, training=None):
        """One time step from raw inputs [batch, height, width, channels] (Keras cell API)."""
        del training  # Dropout is applied by the encoder, outside the cell.
        return self.step(self.project_inputs(inputs), tuple(states))

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            padding=self.padding,
            normalization=self.normalization,
            spatial_normalization=self.spatial_normalization,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class ConvLSTMCell(ConvRecurrentCell):
    """Convolutional LSTM cell of the original (MarcCoru/tensorflow-convlstm-cell).

    Gates are ordered input, forget, candidate, output as in `keras.layers.ConvLSTM2D`, and
    the kernel is split the same way (`kernel` over x_t, `recurrent_kernel` over h_{t-1}), so
    weights transfer between the two. With normalisation every gate pre-activation is
    layer-normalised and so is the new cell state, which (as in the original) is also the state
    carried to the next step. The forget bias of +1 lives in the initial bias / normalisation
    offset of the forget gate, which is equivalent to the original's constant +1.

    Args:
        filters: Channels of the hidden state.
        kernel_size: Side of the square convolution kernels.
        padding: 'reflect' or 'same'.
        normalization: Layer normalisation (on) or biased convolutions (off).
        spatial_normalization: Normalisation statistics over space too (the original).
        peepholes: Per-channel peephole weights from the cell state to the gates (the original
            had per-pixel ones, which would tie the cell to one tile size).
        forget_bias: Initial forget-gate bias.
        epsilon: Layer-normalisation variance epsilon.
    """

    state_names = ("hidden", "cell")
    num_input_gates = 4

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        padding: str = "reflect",
        normalization: bool = True,
        spatial_normalization: bool = True,
        peepholes: bool = False,
        forget_bias: float = 1.0,
        epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(
            filters, kernel_size, padding, normalization, spatial_normalization, epsilon, **kwargs
        )
        self.peepholes = peepholes
        self.forget_bias = forget_bias

    def build(self, inputs_shape, states_shape=None):
        input_channels = inputs_shape[-1]
        filters = self.filters
        # One glorot range for both parts, as for the original's single kernel over [x, h].
        limit = _glorot_limit(self.kernel_size, input_channels + filters, 4 * filters)
        self.kernel = self._kernel("kernel", input_channels, 4 * filters, limit)
        self.recurrent_kernel = self._kernel("recurrent_kernel", filters, 4 * filters, limit)
        gate_offset = [0.0] * filters + [self.forget_bias] * filters + [0.0] * (2 * filters)
        if self.normalization:
            self.gate_scale = self._vector("gate_scale", [1.0] * 4 * filters)
            self.gate_offset = self._vector("gate_offset", gate_offset)
            self.cell_scale = self._vector("cell_scale", [1.0] * filters)
            self.cell_offset = self._vector("cell_offset", [0.0] * filters)
        else:
            self.bias = self._vector("bias", gate_offset)
        if self.peepholes:
            peephole = keras.initializers.GlorotUniform()
            self.peephole_weights = self.add_weight(
                name="peephole_weights", shape=(3, filters), initializer=peephole, autocast=False
            )

    def input_kernel(self):
        return self.kernel

    def step(self, projected, states):
        hidden, cell = states
        filters = self.filters
        # [batch, height, width, 4 * filters]
        recurrent = self._conv(hidden, self.recurrent_kernel)
        fusable = self.normalization and self.spatial_normalization and not self.peepholes
        fusable = fusable and recurrent.dtype in (tf.float32, tf.bfloat16)
        if fusable and ops.use_fused():
            # The kernel adds the two in float32 (graph ops add them in the compute dtype).
            hidden, cell = ops.ln_lstm_cell(
                projected,
                recurrent,
                cell,
                self.gate_scale,
                self.gate_offset,
                self.cell_scale,
                self.cell_offset,
                self.epsilon,
            )
            return hidden, (hidden, cell)
        gates = tf.cast(projected + recurrent, tf.float32)
        if not self.normalization:
            gates = gates + self.bias
        elif not self.peepholes:
            gates = self._norm(gates, 4, self.gate_scale, self.gate_offset)
        input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
        if self.peepholes:
            input_gate += self.peephole_weights[0] * cell
            forget_gate += self.peephole_weights[1] * cell
            if self.normalization:
                input_forget_candidate = tf.concat([input_gate, forget_gate, candidate], axis=-1)
                input_forget_candidate = self._norm(
                    input_forget_candidate,
                    3,
                    self.gate_scale[: 3 * filters],
                    self.gate_offset[: 3 * filters],
                )
                input_gate, forget_gate, candidate = tf.split(input_forget_candidate, 3, -1)
        cell = tf.sigmoid(forget_gate) * cell + tf.sigmoid(input_gate) * tf.tanh(candidate)
        if self.peepholes:
            output_gate += self.peephole_weights[2] * cell
            if self.normalization:
                output_gate = self._norm(
                    output_gate, 1, self.gate_scale[3 * filters :], self.gate_offset[3 * filters :]
                )
        if self.normalization:
            cell = self._norm(cell, 1, self.cell_scale, self.cell_offset)
        hidden = tf.sigmoid(output_gate) * tf.tanh(cell)
        return hidden, (hidden, cell)

    def get_config(self):
        config = super().get_config()
        config.update(peepholes=self.peepholes, forget_bias=self.forget_bias)
        return config


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class ConvGRUCell(ConvRecurrentCell):
    """Convolutional GRU cell of the original (MarcCoru/tensorflow-convlstm-cell).

    Reset and update gates come from one convolution over [x_t, h_{t-1}], the candidate from a
    second one over [x_t, r ⊙ h_{t-1}]; h_t = u ⊙ h_{t-1} + (1 - u) ⊙ tanh(candidate). Each
    convolution is split into an input part (`gate_kernel`, `candidate_kernel`, run for all
    steps at once) and a recurrent part. Without normalisation the gate bias starts at 1, as
    in the original.

    Args:
        filters: Channels of the hidden state.
        kernel_size: Side of the square convolution kernels.
        padding: 'reflect' or 'same'.
        normalization: Layer normalisation (on) or biased convolutions (off).
        spatial_normalization: Normalisation statistics over space too (the original).
        epsilon: Layer-normalisation variance epsilon.
    """

    state_names = ("hidden",)
    num_input_gates = 3

    def build(self, inputs_shape, states_shape=None):
        input_channels = inputs_shape[-1]
        filters = self.filters
        gate_limit = _glorot_limit(self.kernel_size, input_channels + filters, 2 * filters)
        candidate_limit = _glorot_limit(self.kernel_size, input_channels + filters, filters)
        self.gate_kernel = self._kernel("gate_kernel", input_channels, 2 * filters, gate_limit)
        self.gate_recurrent_kernel = self._kernel(
            "gate_recurrent_kernel", filters, 2 * filters, gate_limit
        )
        self.candidate_kernel = self._kernel(
            "candidate_kernel", input_channels, filters, candidate_limit
        )
        self.candidate_recurrent_kernel = self._kernel(
            "candidate_recurrent_kernel", filters, filters, candidate_limit
        )
        if self.normalization:
            self.gate_scale = self._vector("gate_scale", [1.0] * 2 * filters)
            self.gate_offset = self._vector("gate_offset", [0.0] * 2 * filters)
            self.candidate_scale = self._vector("candidate_scale", [1.0] * filters)
            self.candidate_offset = self._vector("candidate_offset", [0.0] * filters)
        else:
            self.gate_bias = self._vector("gate_bias", [1.0] * 2 * filters)
            self.candidate_bias = self._vector("candidate_bias", [0.0] * filters)

    def input_kernel(self):
        return tf.concat([self.gate_kernel, self.candidate_kernel], axis=-1)

    def step(self, projected, states):
        (hidden,) = states
        filters = self.filters
        # tf.split, not two slices: the gradient of a slice of the last axis (StridedSliceGrad)
        # took 17% of a direction's training time on an AVX2 CPU; Split's is one concat.
        projected_gates, projected_candidate = tf.split(projected, [2 * filters, filters], -1)
        recurrent_gates = self._conv(hidden, self.gate_recurrent_kernel)
        if self.normalization and self.spatial_normalization and ops.use_fused():
            # The kernels add the two parts in float32 (graph ops add them in the compute
            # dtype); float16 parts are cast first (the kernels take float32 or bfloat16).
            epsilon = self.epsilon
            update_gate, reset_hidden = ops.ln_gru_gates(
                *_kernel_dtype(projected_gates, recurrent_gates),
                hidden,
                self.gate_scale,
                self.gate_offset,
                epsilon,
            )
            recurrent_candidate = self._conv(reset_hidden, self.candidate_recurrent_kernel)
            hidden = ops.ln_gru_output(
                *_kernel_dtype(projected_candidate, recurrent_candidate),
                hidden,
                update_gate,
                self.candidate_scale,
                self.candidate_offset,
                epsilon,
            )
            return hidden, (hidden,)
        gates = tf.cast(projected_gates + recurrent_gates, tf.float32)
        if self.normalization:
            gates = self._norm(gates, 2, self.gate_scale, self.gate_offset)
        else:
            gates = gates + self.gate_bias
        reset_gate, update_gate = tf.split(tf.sigmoid(gates), 2, axis=-1)
        candidate = projected_candidate + self._conv(
            reset_gate * hidden, self.candidate_recurrent_kernel
        )
        candidate = tf.cast(candidate, tf.float32)
        if self.normalization:
            candidate = self._norm(candidate, 1, self.candidate_scale, self.candidate_offset)
        else:
            candidate = candidate + self.candidate_bias
        hidden = update_gate * hidden + (1.0 - update_gate) * tf.tanh(candidate)
        return hidden, (hidden,)
