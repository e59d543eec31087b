"""Tests of the fused CPU kernels: same values and gradients as the graph ops, fallbacks."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtlcc_tf import ops
from mtlcc_tf.layers import ConvGRUCell, ConvLSTMCell, run_recurrence
from mtlcc_tf.layers.functional import layer_norm

EPSILON = 1e-5
# Where no C++ compiler exists the kernels cannot be built and the cells use graph ops: the
# kernel tests skip there. Where one exists, building must work (these tests then fail loudly).
needs_kernels = pytest.mark.skipif(
    ops.compiler() is None or os.environ.get("MTLCC_TF_FUSED") == "0",
    reason="no C++ compiler (or MTLCC_TF_FUSED=0): the fused kernels are not built here",
)


def graph_ops_step(gates, cell, gate_scale, gate_offset, cell_scale, cell_offset, epsilon):
    """The fused kernel's math written out with `layer_norm`, as the cell does without it."""
    gates = layer_norm(gates, 4, gate_scale, gate_offset, epsilon)
    input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
    cell = tf.sigmoid(forget_gate) * cell + tf.sigmoid(input_gate) * tf.tanh(candidate)
    cell = layer_norm(cell, 1, cell_scale, cell_offset, epsilon)
    return tf.sigmoid(output_gate) * tf.tanh(cell), cell


def step_arguments(batch, height, width, filters, seed=0):
    rng = np.random.default_rng(seed)

    def normal(shape, scale, mean=0.0):
        return tf.constant(rng.normal(mean, scale, size=shape).astype(np.float32))

    return [
        normal((batch, height, width, 4 * filters), 2.0, 0.3),
        normal((batch, height, width, filters), 1.0),
        normal((4 * filters,), 0.5, 1.0),
        normal((4 * filters,), 0.5),
        normal((filters,), 0.5, 1.0),
        normal((filters,), 0.5),
    ]


def fused_step(gates, *rest):
    """`ops.ln_lstm_cell` on gates split into its two summed parts, so that the gradient to
    `gates` is the sum of the two parts' (each scaled) gradients."""
    return ops.ln_lstm_cell(0.25 * gates, 0.75 * gates, *rest)


def values_and_gradients(step_fn, arguments, seed=1):
    """Both outputs and the gradients of a random linear function of them to every input."""
    rng = np.random.default_rng(seed)
    weights = [tf.constant(rng.normal(size=arguments[1].shape).astype(np.float32)) for _ in "hc"]
    with tf.GradientTape() as tape:
        tape.watch(arguments)
        hidden, cell = step_fn(*arguments, EPSILON)
        loss = tf.reduce_sum(hidden * weights[0]) + tf.reduce_sum(cell * weights[1])
    return [hidden, cell, *tape.gradient(loss, arguments)]


@needs_kernels
@pytest.mark.parametrize("shape", [(3, 5, 6, 8), (1, 2, 3, 1), (2, 8, 8, 13)])
def test_fused_step_matches_graph_ops(shape):
    assert ops.available(), "the kernel must build here (g++ and TensorFlow's headers)"
    arguments = step_arguments(*shape)
    fused = values_and_gradients(fused_step, arguments)
    expected = values_and_gradients(graph_ops_step, arguments)
    names = ["hidden", "cell", "d_gates", "d_cell", "d_gate_scale", "d_gate_offset",
             "d_cell_scale", "d_cell_offset"]  # fmt: skip
    for name, actual, wanted in zip(names, fused, expected, strict=True):
        assert actual.shape == wanted.shape, name
        scale = max(1.0, float(tf.reduce_max(tf.abs(wanted))))
        np.testing.assert_allclose(actual, wanted, atol=2e-5 * scale, err_msg=name)


@needs_kernels
def test_bfloat16_parts_are_summed_in_float32():
    """bf16 projected and recurrent gates: the float32 kernel's result on their exact float32
    sum, and the gradient of both parts is the float32 gradient rounded to bf16."""
    gates, cell, *vectors = step_arguments(2, 5, 6, 8)
    projected, recurrent = (tf.cast(gates * w, tf.bfloat16) for w in (0.4, 0.6))
    exact = tf.cast(projected, tf.float32) + tf.cast(recurrent, tf.float32)
    rng = np.random.default_rng(2)
    weights = [tf.constant(rng.normal(size=cell.shape).astype(np.float32)) for _ in "hc"]
    results = []
    for parts in ((projected, recurrent), (exact, tf.zeros_like(exact))):
        with tf.GradientTape() as tape:
            tape.watch(parts)
            hidden, new_cell = ops.ln_lstm_cell(*parts, cell, *vectors, EPSILON)
            loss = tf.reduce_sum(hidden * weights[0]) + tf.reduce_sum(new_cell * weights[1])
        results.append([hidden, new_cell, *tape.gradient(loss, parts)])
    (hidden, new_cell, d_projected, d_recurrent), (want_hidden, want_cell, d_exact, _) = results
    assert d_projected.dtype == d_recurrent.dtype == tf.bfloat16
    np.testing.assert_allclose(hidden, want_hidden, atol=1e-6)
    np.testing.assert_allclose(new_cell, want_cell, atol=1e-6)
    np.testing.assert_array_equal(d_projected, tf.cast(d_exact, tf.bfloat16))
    np.testing.assert_array_equal(d_recurrent, d_projected)


@needs_kernels
def test_forward_without_gradient_computes_the_same():
    """In a graph that only runs forward, the kernel skips writing the activations (nothing
    consumes them) and computes the output gate again: the same states as eagerly."""
    gates, cell, *vectors = step_arguments(2, 6, 5, 8)
    forward_only = tf.function(lambda: ops.ln_lstm_cell(gates, 0.5 * gates, cell, *vectors, 1e-5))
    for actual, wanted in zip(
        forward_only(), ops.ln_lstm_cell(gates, 0.5 * gates, cell, *vectors, 1e-5), strict=True
    ):
        np.testing.assert_allclose(actual, wanted, rtol=1e-6, atol=1e-6)


def graph_ops_gru_gates(gates, hidden, scale, offset, epsilon):
    reset, update = tf.split(tf.sigmoid(layer_norm(gates, 2, scale, offset, epsilon)), 2, -1)
    return update, reset * hidden


def graph_ops_gru_output(candidate, hidden, update, scale, offset, epsilon):
    return update * hidden + (1.0 - update) * tf.tanh(
        layer_norm(candidate, 1, scale, offset, epsilon)
    )


def in_two_parts(fused_fn):
    """`fused_fn` on a pre-activation split into its two summed parts, so that the gradient to
    it is the sum of the two parts' (each scaled) gradients."""
    return lambda summed, *rest: fused_fn(0.25 * summed, 0.75 * summed, *rest)


@needs_kernels
def test_fused_gru_parts_match_graph_ops():
    gates, hidden, scale, offset, _, _ = step_arguments(3, 4, 6, 5)
    candidate = gates[..., :5] * 0.7
    update = tf.sigmoid(gates[..., 5:10])
    cases = [
        (
            in_two_parts(ops.ln_gru_gates),
            graph_ops_gru_gates,
            [gates[..., :10], hidden, scale[:10], offset[:10]],
        ),
        (
            in_two_parts(ops.ln_gru_output),
            graph_ops_gru_output,
            [candidate, hidden, update, scale[:5], offset[:5]],
        ),
    ]
    for fused_fn, graph_fn, arguments in cases:
        results = []
        for step_fn in (fused_fn, graph_fn):
            with tf.GradientTape() as tape:
                tape.watch(arguments)
                outputs = tf.nest.flatten(step_fn(*arguments, EPSILON))
                loss = sum(tf.reduce_sum(out * (k + 1.5) + out**2) for k, out in enumerate(outputs))
            results.append(outputs + tape.gradient(loss, arguments))
        for actual, wanted in zip(*results, strict=True):
            np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=2e-5)


@needs_kernels
def test_gru_bfloat16_parts_are_summed_in_float32():
    """As for the LSTM: bf16 parts give the float32 kernels' result on their exact float32 sum,
    and both parts get that gradient rounded to bf16."""
    gates, hidden, scale, offset, _, _ = step_arguments(2, 5, 6, 4)
    update = tf.sigmoid(gates[..., 8:12])
    cases = [
        (ops.ln_gru_gates, gates[..., :8], [hidden, scale[:8], offset[:8]]),
        (ops.ln_gru_output, gates[..., 12:], [hidden, update, scale[:4], offset[:4]]),
    ]
    for fused_fn, summed, rest in cases:
        projected, recurrent = (tf.cast(summed * w, tf.bfloat16) for w in (0.4, 0.6))
        exact = tf.cast(projected, tf.float32) + tf.cast(recurrent, tf.float32)
        results = []
        for parts in ((projected, recurrent), (exact, tf.zeros_like(exact))):
            with tf.GradientTape() as tape:
                tape.watch(parts)
                outputs = tf.nest.flatten(fused_fn(*parts, *rest, EPSILON))
                loss = sum(tf.reduce_sum(out * (k + 0.5) + out**2) for k, out in enumerate(outputs))
            results.append((outputs, tape.gradient(loss, parts)))
        (outputs, (d_projected, d_recurrent)), (wanted, (d_exact, _)) = results
        assert d_projected.dtype == d_recurrent.dtype == tf.bfloat16
        for actual, want in zip(outputs, wanted, strict=True):
            np.testing.assert_allclose(actual, want, atol=1e-6)
        np.testing.assert_array_equal(d_projected, tf.cast(d_exact, tf.bfloat16))
        np.testing.assert_array_equal(d_recurrent, d_projected)


@needs_kernels
def test_constant_gates_do_not_blow_up():
    # Zero variance: the epsilon keeps the normalisation finite, as in the graph ops.
    gates, cell, *vectors = step_arguments(2, 4, 4, 3)
    arguments = [tf.ones_like(gates), tf.zeros_like(cell), *vectors]
    fused = values_and_gradients(fused_step, arguments)
    expected = values_and_gradients(graph_ops_step, arguments)
    for actual, wanted in zip(fused, expected, strict=True):
        assert np.isfinite(actual).all()
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-4)


def direction(cell, inputs, lengths):
    """Forward and backward through a whole sequence of one direction, as a tf.function."""

    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            final, (hiddens,) = run_recurrence(
                cell, cell.project_inputs(inputs), lengths, num_collected=1
            )
            loss = tf.reduce_sum(final[0] * 0.3 + final[-1] ** 2) + tf.reduce_sum(hiddens[1] * 0.7)
        gradients = tape.gradient(loss, [inputs, *cell.trainable_weights])
        return [*final, hiddens, *gradients]

    return run


def op_types(function) -> set[str]:
    return {op.type for op in function.get_concrete_function().graph.get_operations()}


@needs_kernels
@pytest.mark.parametrize(
    "cell_class, kernel",
    [(ConvLSTMCell, "MtlccLnLstmForward"), (ConvGRUCell, "MtlccLnGruGatesForward")],
)
@pytest.mark.parametrize("padding, kernel_size", [("reflect", 3), ("same", 3), ("reflect", 5)])
def test_sequence_is_the_same_with_and_without_the_kernels(
    cell_class, kernel, padding, kernel_size
):
    cell = cell_class(4, kernel_size=kernel_size, padding=padding)
    cell.build((None, None, None, 3))
    rng = np.random.default_rng(2)
    for weight in cell.weights:
        weight.assign(rng.normal(0.5 if "scale" in weight.name else 0.0, 0.3, weight.shape))
    inputs = tf.constant(rng.normal(size=(5, 2, 8, 8, 3)).astype(np.float32))
    lengths = tf.constant([5, 3])

    fused_run = direction(cell, inputs, lengths)
    fused = fused_run()
    fused_ops = op_types(fused_run)
    assert kernel in fused_ops
    assert ("MtlccReflectPad" in fused_ops) == (padding == "reflect")
    with ops.disabled():
        graph_run = direction(cell, inputs, lengths)
        expected = graph_run()
        assert not [op for op in op_types(graph_run) if op.startswith("Mtlcc")]
    for actual, wanted in zip(fused, expected, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_kernel_is_not_used_under_xla():
    cell = ConvLSTMCell(2)
    cell.build((None, None, None, 3))
    inputs = tf.random.normal([3, 1, 6, 6, 3])

    def final_states():
        return run_recurrence(cell, cell.project_inputs(inputs), tf.constant([3]))[0]

    run = tf.function(final_states)
    compiled = tf.function(final_states, jit_compile=True)
    assert "MtlccLnLstmForward" in op_types(run)
    assert "MtlccLnLstmForward" not in op_types(compiled)
    np.testing.assert_allclose(compiled()[1], run()[1], atol=1e-5)


@needs_kernels
def test_kernel_rejects_mismatched_shapes():
    gates, cell, *vectors = step_arguments(2, 4, 4, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"states must be \[2,4,4,3\]"):
        fused_step(gates, cell[:, :2], *vectors, EPSILON)
    with pytest.raises(tf.errors.InvalidArgumentError, match="gate scale and offset must be"):
        fused_step(gates, cell, vectors[0][:5], *vectors[1:], EPSILON)
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 \\* filters"):
        fused_step(gates[..., :11], cell, *vectors, EPSILON)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have one shape"):
        ops.ln_lstm_cell(gates, gates[:1], cell, *vectors, EPSILON)


@needs_kernels
@pytest.mark.parametrize("shape, border", [((2, 5, 6, 3), 1), ((1, 7, 4, 2), 2), ((3, 2, 2, 1), 1)])
def test_reflect_pad_matches_tf_pad(shape, border):
    rng = np.random.default_rng(3)
    inputs = tf.constant(rng.normal(size=shape).astype(np.float32))
    padded_shape = (shape[0], shape[1] + 2 * border, shape[2] + 2 * border, shape[3])
    weights = tf.constant(rng.normal(size=padded_shape).astype(np.float32))
    paddings = [[0, 0], [border, border], [border, border], [0, 0]]
    results = []
    for pad in (lambda x: ops.reflect_pad(x, border), lambda x: tf.pad(x, paddings, "REFLECT")):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            padded = pad(inputs)
            loss = tf.reduce_sum(padded * weights)
        results.append((padded, tape.gradient(loss, inputs)))
    (padded, gradient), (expected_padded, expected_gradient) = results
    np.testing.assert_array_equal(padded, expected_padded)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6, atol=1e-6)


@needs_kernels
def test_reflect_pad_rejects_too_small_inputs():
    with pytest.raises(tf.errors.InvalidArgumentError, match="height and width above 2"):
        ops.reflect_pad(tf.zeros([1, 2, 5, 1]), 2)


FALLBACK_CHECK = """
from mtlcc_tf import ops
from mtlcc_tf.layers import ConvLSTMCell
import tensorflow as tf
cell = ConvLSTMCell(2)
hidden, _ = cell(tf.ones([1, 4, 4, 3]), [tf.zeros([1, 4, 4, 2])] * 2)
print("available", ops.available(), "hidden", tuple(hidden.shape))
"""


@pytest.mark.parametrize(
    "environment, reason",
    [
        ({"CXX": "/bin/false"}, "kernels.cc failed"),
        ({"CXX": "/nonexistent/g++"}, "cannot run the C++ compiler"),
        ({"CXX": "sh -c 'exit 3'"}, "kernels.cc failed"),  # CXX with arguments
        ({"MTLCC_TF_FUSED": "0"}, None),
    ],
)
def test_without_the_kernel_cells_fall_back_to_graph_ops(tmp_path, environment, reason):
    env = {**os.environ, "MTLCC_TF_CACHE": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHECK], env={**env, **environment},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "available False hidden (1, 4, 4, 2)" in result.stdout
    if reason:
        assert "fused CPU kernels unavailable, using graph ops" in result.stderr
        assert reason in result.stderr
    assert not list(tmp_path.glob("kernels*"))  # no library, partial or whole, left behind


@pytest.mark.parametrize("cell_class", [ConvLSTMCell, ConvGRUCell])
def test_eager_cell_with_variables_trains(cell_class):
    # Eagerly, with the cell's own variables (not tensors) as scale and offset.
    cell = cell_class(3)
    inputs = tf.random.normal([2, 6, 6, 4])
    states = [tf.random.normal([2, 6, 6, 3])] * len(cell.state_names)
    cell(inputs, states)
    with tf.GradientTape() as tape:
        hidden, _ = cell(inputs, states)
        loss = tf.reduce_sum(hidden**2)
    gradients = tape.gradient(loss, cell.trainable_weights)
    assert all(gradient is not None and np.any(gradient != 0) for gradient in gradients)


@needs_kernels
@pytest.mark.slow
def test_a_damaged_cached_library_is_rebuilt(tmp_path):
    # The same name as this process's library (the key does not depend on the folder).
    damaged = tmp_path / ops.build().name
    damaged.write_bytes(b"not a shared library")
    env = {**os.environ, "MTLCC_TF_CACHE": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "available True" in result.stdout
    assert "compiling kernels.cc" in result.stderr
    assert damaged.read_bytes()[:4] == b"\x7fELF"


@needs_kernels
@pytest.mark.parametrize(
    "op_name, num_inputs",
    [("mtlcc_ln_lstm_forward", 7), ("mtlcc_ln_gru_gates_forward", 5),
     ("mtlcc_ln_gru_output_forward", 6)],
)  # fmt: skip
def test_wrong_ranks_are_errors_while_tracing(op_name, num_inputs):
    # A scalar where a [batch, height, width, channels] tensor belongs: a shape error, not a crash.
    op = getattr(ops.loaded(), op_name)
    inputs = [tf.constant(1.0)] + [tf.ones([4])] * (num_inputs - 1)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="rank"):
        tf.function(lambda: op(*inputs, epsilon=1e-5)).get_concrete_function()
