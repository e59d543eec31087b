"""Custom CPU kernels of mtlcc-tf, compiled on first use and cached.

- `ln_lstm_cell` fuses the elementwise part of a layer-normalised ConvLSTM step (gate
  normalisation, activations, cell update and cell normalisation) into one forward and one
  backward kernel: as graph ops that part is about thirty memory-bound passes over gate-sized
  tensors per step, and it made our cell slower than the stock `keras.layers.ConvLSTM2D`,
  which normalises nothing (benchmarks/README.md).
- `ln_gru_gates` and `ln_gru_output` do the same for the two elementwise parts of a
  layer-normalised ConvGRU step (its candidate convolution of r * h sits between them).
- `reflect_pad` is the original's reflect padding of the convolutions' inputs as a copy,
  several times faster than TensorFlow's MirrorPad and its gradient.

This module holds the op wrappers; building, loading and switching the kernels is the plugin
part, `ops.plugin` (re-exported here): built with the machine's C++ compiler on first use into
`$MTLCC_TF_CACHE` (default `~/.cache/mtlcc_tf`); where they cannot be built (no compiler, other
platform) `available()` is False, a warning says why, and the cells use graph ops, which compute
the same up to rounding. `MTLCC_TF_FUSED=0` turns them off.
"""

import tensorflow as tf

from mtlcc_tf.ops.plugin import available, build, cache_dir, compiler, disabled, loaded, use_fused

__all__ = [
    "available",
    "build",
    "cache_dir",
    "compiler",
    "disabled",
    "ln_gru_gates",
    "ln_gru_output",
    "ln_lstm_cell",
    "loaded",
    "reflect_pad",
    "use_fused",
]


def ln_lstm_cell(
    projected: tf.Tensor,
    recurrent: tf.Tensor,
    cell: tf.Tensor,
    gate_scale: tf.Tensor,
    gate_offset: tf.Tensor,
    cell_scale: tf.Tensor,
    cell_offset: tf.Tensor,
    epsilon: float,
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
    """One layer-normalised ConvLSTM step after its convolutions, fused (CPU only).

    Computes what `ConvLSTMCell.step` computes with normalisation and without peepholes from
    the gate pre-activations gates = projected + recurrent (the input's and the hidden state's
    convolutions, summed in float32 inside the kernel: under mixed_bfloat16 that saves the add
    and the cast to float32 as separate passes): i, f, g, o = LN(gates) per gate;
    c = LN(f * cell + i * g); h = o * tanh(c). Differentiable (first order) in every input.

    Args:
        projected: [batch, height, width, 4 * filters] float32 or bfloat16, input, forget,
            candidate, output.
        recurrent: Shaped and typed like `projected`.
        cell: [batch, height, width, filters] float32, the previous cell state.
        gate_scale: [4 * filters] per-channel scale of the normalised gates.
        gate_offset: [4 * filters] per-channel offset of the normalised gates.
        cell_scale: [filters] per-channel scale of the normalised cell.
        cell_offset: [filters] per-channel offset of the normalised cell.
        epsilon: Added to the variances.

    Returns:
        The new hidden and cell states, [batch, height, width, filters] float32.
    """
    module = loaded()

    @tf.custom_gradient
    def fused(projected, recurrent, cell_prev, gate_scale, gate_offset, cell_scale, cell_offset):
        hidden, cell, activations, stats = module.mtlcc_ln_lstm_forward(
            projected,
            recurrent,
            cell_prev,
            gate_scale,
            gate_offset,
            cell_scale,
            cell_offset,
            epsilon=epsilon,
        )

        def gradient(grad_hidden, grad_cell):
            grad_hidden = tf.zeros_like(hidden) if grad_hidden is None else grad_hidden
            grad_cell = tf.zeros_like(cell) if grad_cell is None else grad_cell
            grad_gates, *rest = module.mtlcc_ln_lstm_backward(
                grad_hidden,
                grad_cell,
                projected,
                recurrent,
                cell_prev,
                gate_scale,
                cell_scale,
                activations,
                cell,
                stats,
            )
            # gates = projected + recurrent: both get the gates' gradient.
            return (grad_gates, grad_gates, *rest)

        return (hidden, cell), gradient

    return fused(
        projected, recurrent, cell, *_tensors(gate_scale, gate_offset, cell_scale, cell_offset)
    )


def _tensors(*values) -> list[tf.Tensor]:
    # Variables are read outside the tf.custom_gradient functions, which would otherwise want
    # their gradients through a `variables` argument.
    return [tf.convert_to_tensor(value) for value in values]


def ln_gru_gates(
    projected: tf.Tensor,
    recurrent: tf.Tensor,
    hidden: tf.Tensor,
    scale: tf.Tensor,
    offset: tf.Tensor,
    epsilon: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The gates of a layer-normalised ConvGRU step, fused (CPU only).

    r, u = sigmoid(LN(gates)) per gate, as `ConvGRUCell.step` with normalisation, from the
    pre-activations gates = projected + recurrent, summed in float32 inside the kernel (as
    `ln_lstm_cell`'s).

    Args:
        projected: [batch, height, width, 2 * filters] float32 or bfloat16, reset then update.
        recurrent: Shaped and typed like `projected`.
        hidden: [batch, height, width, filters] float32, the previous state h.
        scale: [2 * filters] per-channel scale of the normalised gates.
        offset: [2 * filters] per-channel offset of the normalised gates.
        epsilon: Added to the variances.

    Returns:
        The update gate u and r * h, both [batch, height, width, filters] float32.
    """
    module = loaded()

    @tf.custom_gradient
    def fused(projected, recurrent, hidden, scale, offset):
        update, reset_hidden, reset, stats = module.mtlcc_ln_gru_gates_forward(
            projected, recurrent, hidden, scale, offset, epsilon=epsilon
        )

        def gradient(grad_update, grad_reset_hidden):
            grad_update = tf.zeros_like(update) if grad_update is None else grad_update
            if grad_reset_hidden is None:
                grad_reset_hidden = tf.zeros_like(reset_hidden)
            grad_gates, *rest = module.mtlcc_ln_gru_gates_backward(
                grad_update, grad_reset_hidden, projected, recurrent, hidden, scale, reset,
                update, stats,
            )  # fmt: skip
            # gates = projected + recurrent: both get the gates' gradient.
            return (grad_gates, grad_gates, *rest)

        return (update, reset_hidden), gradient

    return fused(projected, recurrent, hidden, *_tensors(scale, offset))


def ln_gru_output(
    projected: tf.Tensor,
    recurrent: tf.Tensor,
    hidden: tf.Tensor,
    update: tf.Tensor,
    scale: tf.Tensor,
    offset: tf.Tensor,
    epsilon: float,
) -> tf.Tensor:
    """The new state of a layer-normalised ConvGRU step, fused (CPU only).

    u * h + (1 - u) * tanh(LN(candidate)), as `ConvGRUCell.step` with normalisation, from the
    candidate pre-activation candidate = projected + recurrent, summed in float32 inside the
    kernel.

    Args:
        projected: [batch, height, width, filters] float32 or bfloat16, the input's part.
        recurrent: Shaped and typed like `projected`, the convolution of r * h.
        hidden: [batch, height, width, filters] float32, the previous state h.
        update: The update gate u from `ln_gru_gates`.
        scale: [filters] per-channel scale of the normalised candidate.
        offset: [filters] per-channel offset of the normalised candidate.
        epsilon: Added to the variance.

    Returns:
        The new hidden state, [batch, height, width, filters] float32.
    """
    module = loaded()

    @tf.custom_gradient
    def fused(projected, recurrent, hidden, update, scale, offset):
        new_hidden, tanh_candidate, stats = module.mtlcc_ln_gru_output_forward(
            projected, recurrent, hidden, update, scale, offset, epsilon=epsilon
        )

        def gradient(grad_new_hidden):
            grad_candidate, *rest = module.mtlcc_ln_gru_output_backward(
                grad_new_hidden, projected, recurrent, hidden, update, scale, tanh_candidate,
                stats,
            )  # fmt: skip
            return (grad_candidate, grad_candidate, *rest)

        return new_hidden, gradient

    return fused(projected, recurrent, hidden, update, *_tensors(scale, offset))


def reflect_pad(inputs: tf.Tensor, border: int) -> tf.Tensor:
    """`tf.pad` of height and width by `border` pixels with mode 'REFLECT', as one CPU kernel.

    TensorFlow's MirrorPad and its gradient are several times slower than these two copies
    (a traced ConvLSTM direction in benchmarks/cell_costs.py).

    Args:
        inputs: [batch, height, width, channels] float32, height and width above `border`.
        border: Pixels added on each side.

    Returns:
        [batch, height + 2 * border, width + 2 * border, channels].
    """
    module = loaded()

    @tf.custom_gradient
    def pad(inputs):
        def gradient(grad):
            return module.mtlcc_reflect_pad_grad(grad, border=border)

        return module.mtlcc_reflect_pad(inputs, border=border), gradient

    return pad(inputs)
