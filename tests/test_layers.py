"""Tests of the recurrent cells and encoders: equivalence, masking, reversal, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcc_tf.layers import (
    ClassificationHead,
    ConvGRUCell,
    ConvLSTMCell,
    ConvRNNEncoder,
    StockConvLSTMEncoder,
    TemporalPooling,
    run_recurrence,
)
from mtlcc_tf.layers.functional import layer_norm

BATCH, TIME, SIZE, CHANNELS, FILTERS = 2, 4, 8, 3, 4


def random_inputs(seed: int = 0, time: int = TIME, size: int = SIZE) -> np.ndarray:
    # [batch, time, height, width, channels]
    return np.random.default_rng(seed).normal(size=(BATCH, time, size, size, CHANNELS))


def randomize(layer: keras.layers.Layer, seed: int = 1) -> None:
    """Gives every weight random values, so that tests do not pass by initialisation."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape))


def test_lstm_matches_keras_convlstm2d_with_same_weights():
    stock = keras.layers.ConvLSTM2D(
        FILTERS, 3, padding="same", return_sequences=True, return_state=True
    )
    inputs = random_inputs().astype("float32")
    stock(inputs)
    randomize(stock)
    cell = ConvLSTMCell(FILTERS, padding="same", normalization=False)
    cell.build((None, None, None, CHANNELS))
    cell.kernel.assign(stock.cell.kernel)
    cell.recurrent_kernel.assign(stock.cell.recurrent_kernel)
    cell.bias.assign(stock.cell.bias)

    expected_outputs, _, expected_cell = stock(inputs)
    projected = cell.project_inputs(tf.transpose(inputs, [1, 0, 2, 3, 4]))
    for unroll in (True, False):
        (_, final_cell), (outputs,) = run_recurrence(
            cell, projected, tf.fill([BATCH], TIME), unroll=unroll, num_collected=1
        )
        outputs = tf.transpose(outputs, [1, 0, 2, 3, 4])
        np.testing.assert_allclose(outputs, expected_outputs, atol=1e-5)
        np.testing.assert_allclose(final_cell, expected_cell, atol=1e-5)


@pytest.mark.parametrize("cell_class", [ConvLSTMCell, ConvGRUCell])
def test_reflect_padding_split_equals_one_convolution_over_concatenation(cell_class):
    """conv(pad([x, h])) == conv_x(pad(x)) + conv_h(pad(h)): the split is exact."""
    cell = cell_class(FILTERS, normalization=False)
    cell.build((None, None, None, CHANNELS))
    randomize(cell)
    inputs = tf.constant(random_inputs()[:, 0], tf.float32)
    hidden = tf.constant(random_inputs(seed=2)[:, 0, ..., :1].repeat(FILTERS, -1), tf.float32)
    if cell_class is ConvLSTMCell:
        recurrent_kernel = cell.recurrent_kernel
    else:  # The gate convolution; the candidate one splits the same way.
        recurrent_kernel = cell.gate_recurrent_kernel
    gates = recurrent_kernel.shape[-1]
    kernel = tf.concat([cell.input_kernel()[..., :gates], recurrent_kernel], axis=2)
    joint = tf.pad(tf.concat([inputs, hidden], -1), [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT")
    expected = tf.nn.conv2d(joint, kernel, 1, "VALID")
    split = cell.project_inputs(inputs)[..., :gates] + cell._conv(hidden, recurrent_kernel)
    np.testing.assert_allclose(split, expected, atol=1e-5)


def numpy_conv(inputs: np.ndarray, kernel: np.ndarray, padding: str) -> np.ndarray:
    """A 'same'-size 2-D convolution with zero or reflect padding, written out in NumPy."""
    size = kernel.shape[0]
    pad = size // 2
    mode = "reflect" if padding == "reflect" else "constant"
    padded = np.pad(inputs, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode=mode)
    height, width = inputs.shape[1:3]
    return sum(
        np.einsum("bhwc,co->bhwo", padded[:, dy : dy + height, dx : dx + width], kernel[dy, dx])
        for dy in range(size)
        for dx in range(size)
    )


def numpy_layer_norm(x, scale, offset, epsilon):
    """Layer norm over height, width and channels of each sample, per-channel scale/offset."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    variance = x.var(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * scale + offset


def numpy_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def randomized_weights(cell: keras.layers.Layer) -> dict[str, np.ndarray]:
    """Builds `cell` for CHANNELS inputs, randomises it; its weights by name, in float64."""
    cell.build((None, None, None, CHANNELS))
    randomize(cell)
    return {
        weight.path.split("/")[-1]: weight.numpy().astype(np.float64) for weight in cell.weights
    }


@pytest.mark.parametrize("normalization, padding", [(False, "same"), (True, "reflect")])
def test_gru_step_matches_numpy_reference(normalization, padding):
    """r, u = sigmoid(conv([x, h])); c = conv([x, r * h]); h' = u * h + (1 - u) * tanh(c)."""
    cell = ConvGRUCell(FILTERS, padding=padding, normalization=normalization)
    weights = randomized_weights(cell)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(BATCH, SIZE, SIZE, CHANNELS))
    h = rng.normal(size=(BATCH, SIZE, SIZE, FILTERS))
    gate_kernel = np.concatenate([weights["gate_kernel"], weights["gate_recurrent_kernel"]], 2)
    gates = numpy_conv(np.concatenate([x, h], -1), gate_kernel, padding)
    if normalization:  # each gate normalised on its own
        scale, offset = weights["gate_scale"], weights["gate_offset"]
        parts = zip(np.split(gates, 2, -1), np.split(scale, 2), np.split(offset, 2), strict=True)
        gates = np.concatenate([numpy_layer_norm(*part, cell.epsilon) for part in parts], -1)
    else:
        gates = gates + weights["gate_bias"]
    reset, update = np.split(numpy_sigmoid(gates), 2, -1)
    candidate_kernel = np.concatenate(
        [weights["candidate_kernel"], weights["candidate_recurrent_kernel"]], 2
    )
    candidate = numpy_conv(np.concatenate([x, reset * h], -1), candidate_kernel, padding)
    if normalization:
        candidate = numpy_layer_norm(
            candidate, weights["candidate_scale"], weights["candidate_offset"], cell.epsilon
        )
    else:
        candidate = candidate + weights["candidate_bias"]
    expected = update * h + (1 - update) * np.tanh(candidate)

    output, (new_hidden,) = cell(tf.constant(x, tf.float32), [tf.constant(h, tf.float32)])
    np.testing.assert_allclose(output, expected, atol=2e-5)
    np.testing.assert_allclose(new_hidden, expected, atol=2e-5)


@pytest.mark.parametrize(
    "normalization, peepholes, padding",
    [
        (False, False, "same"),
        (True, False, "reflect"),
        (False, True, "same"),
        (True, True, "reflect"),
    ],
)
def test_lstm_step_matches_numpy_reference(normalization, peepholes, padding):
    """The original's step: i, g, f (with peepholes from c) and o (from the new c) normalised
    on their own, c' = sigmoid(f) c + sigmoid(i) tanh(g), c' normalised, h = sigmoid(o) tanh(c')."""
    cell = ConvLSTMCell(FILTERS, padding=padding, normalization=normalization, peepholes=peepholes)
    weights = randomized_weights(cell)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(BATCH, SIZE, SIZE, CHANNELS))
    h = rng.normal(size=(BATCH, SIZE, SIZE, FILTERS))
    c = rng.normal(size=(BATCH, SIZE, SIZE, FILTERS))
    kernel = np.concatenate([weights["kernel"], weights["recurrent_kernel"]], 2)
    gates = numpy_conv(np.concatenate([x, h], -1), kernel, padding)
    if not normalization:
        gates = gates + weights["bias"]
    i, f, g, o = np.split(gates, 4, -1)
    if normalization:
        scales = np.split(weights["gate_scale"], 4)
        offsets = np.split(weights["gate_offset"], 4)

        def norm(value, gate):
            return numpy_layer_norm(value, scales[gate], offsets[gate], cell.epsilon)
    else:

        def norm(value, gate):
            return value

    if peepholes:
        i = i + weights["peephole_weights"][0] * c
        f = f + weights["peephole_weights"][1] * c
    i, f, g = norm(i, 0), norm(f, 1), norm(g, 2)
    new_c = numpy_sigmoid(f) * c + numpy_sigmoid(i) * np.tanh(g)
    if peepholes:
        o = o + weights["peephole_weights"][2] * new_c
    o = norm(o, 3)
    if normalization:
        new_c = numpy_layer_norm(new_c, weights["cell_scale"], weights["cell_offset"], cell.epsilon)
    new_h = numpy_sigmoid(o) * np.tanh(new_c)

    states = [tf.constant(h, tf.float32), tf.constant(c, tf.float32)]
    output, (hidden, cell_state) = cell(tf.constant(x, tf.float32), states)
    np.testing.assert_allclose(output, new_h, atol=2e-5)
    np.testing.assert_allclose(hidden, new_h, atol=2e-5)
    np.testing.assert_allclose(cell_state, new_c, atol=2e-5)


@pytest.mark.parametrize("normalization", [True, False])
def test_lstm_forget_gate_starts_at_the_forget_bias(normalization):
    cell = ConvLSTMCell(FILTERS, normalization=normalization, forget_bias=1.0)
    cell.build((None, None, None, CHANNELS))
    offset = (cell.gate_offset if normalization else cell.bias).numpy()
    # Gates in the order input, forget, candidate, output.
    np.testing.assert_array_equal(offset[FILTERS : 2 * FILTERS], 1.0)
    np.testing.assert_array_equal(np.delete(offset, np.s_[FILTERS : 2 * FILTERS]), 0.0)


def test_layer_norm_matches_reference_per_gate():
    inputs = tf.constant(random_inputs()[:, :, :, :, :2].reshape(BATCH, SIZE, SIZE, -1) * 3 + 1)
    inputs = tf.cast(inputs, tf.float32)  # [batch, height, width, 2 groups * 4 channels]
    scale = tf.range(8, dtype=tf.float32) / 4
    offset = -tf.range(8, dtype=tf.float32)
    result = layer_norm(inputs, 2, scale, offset, epsilon=1e-5)
    groups = tf.reshape(inputs, [BATCH, SIZE, SIZE, 2, 4])
    mean, variance = tf.nn.moments(groups, axes=[1, 2, 4], keepdims=True)
    expected = tf.reshape((groups - mean) / tf.sqrt(variance + 1e-5), inputs.shape)
    np.testing.assert_allclose(result, expected * scale + offset, atol=1e-4)


def make_encoder(cell_type: str, **kwargs) -> ConvRNNEncoder:
    encoder = ConvRNNEncoder(FILTERS, cell_type=cell_type, **kwargs)
    encoder.build((None, None, None, None, CHANNELS))
    randomize(encoder)
    return encoder


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
@pytest.mark.parametrize("unroll", [True, False])
def test_padding_steps_change_no_output(cell_type, unroll):
    encoder = make_encoder(cell_type, num_layers=2, aggregation="avg_output", unroll=unroll)
    lengths = tf.constant([TIME, 2])
    inputs = random_inputs()
    inputs[1, 2:] = 0.0
    # Three more steps of garbage after each sequence's end.
    padded = np.concatenate([inputs, random_inputs(seed=5, time=3)], axis=1)
    padded[1, 2:TIME] = random_inputs(seed=6)[1, 2:]
    states = encoder(inputs, lengths, return_state_sequences=True)
    padded_states = encoder(padded, lengths, return_state_sequences=True)
    for name, values in states.items():
        np.testing.assert_allclose(padded_states[name][:, :TIME], values, atol=1e-5)
        np.testing.assert_array_equal(padded_states[name][1, 2:], 0.0)
    outputs = encoder(inputs, lengths)
    np.testing.assert_allclose(encoder(padded, lengths)[:, :TIME], outputs, atol=1e-5)
    # The final states equal those of the unpadded, shorter sequence.
    short = make_encoder(cell_type, num_layers=2)
    short.set_weights(encoder.get_weights())
    np.testing.assert_allclose(
        short(padded[1:, :2], lengths[1:]), short(padded[1:], lengths[1:]), atol=1e-5
    )


def test_unrolled_and_while_loop_agree():
    rolled = make_encoder("lstm", peepholes=True, unroll=False)
    unrolled = make_encoder("lstm", peepholes=True, unroll=True)
    unrolled.set_weights(rolled.get_weights())
    inputs, lengths = random_inputs(), tf.constant([TIME, 1])
    np.testing.assert_allclose(unrolled(inputs, lengths), rolled(inputs, lengths), atol=1e-5)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_reversing_time_swaps_the_directions(cell_type):
    encoder = make_encoder(cell_type)
    swapped = make_encoder(cell_type)
    forward, backward = encoder.cells
    swapped.cells[0].set_weights(backward.get_weights())
    swapped.cells[1].set_weights(forward.get_weights())
    lengths = tf.constant([TIME, 3])
    inputs = random_inputs()
    reversed_inputs = inputs.copy()
    reversed_inputs[0] = inputs[0, ::-1]
    reversed_inputs[1, :3] = inputs[1, 2::-1]
    states = encoder(inputs, lengths, return_state_sequences=True)
    reversed_states = swapped(reversed_inputs, lengths, return_state_sequences=True)
    for name, values in reversed_states.items():
        if "forward" in name:
            counterpart = name.replace("forward", "backward")
        else:
            counterpart = name.replace("backward", "forward")
        expected = states[counterpart].numpy()
        expected[0] = expected[0, ::-1]
        expected[1, :3] = expected[1, 2::-1]
        np.testing.assert_allclose(values, expected, atol=1e-5)
    np.testing.assert_allclose(
        swapped(reversed_inputs, lengths),
        tf.concat(tf.split(encoder(inputs, lengths), 2, axis=-1)[::-1], axis=-1),
        atol=1e-5,
    )


def test_state_aggregation_is_the_final_cell_states_of_both_directions():
    encoder = make_encoder("lstm", num_layers=2)
    lengths = tf.constant([TIME, 2])
    inputs = random_inputs()
    states = encoder(inputs, lengths, return_state_sequences=True)
    expected = []
    for layer in range(2):
        forward = states[f"layer{layer}_forward_cell"]
        expected.append(tf.stack([forward[0, TIME - 1], forward[1, 1]]))
        expected.append(states[f"layer{layer}_backward_cell"][:, 0])
    np.testing.assert_allclose(encoder(inputs, lengths), tf.concat(expected, -1), atol=1e-6)


def test_stock_encoder_ignores_padding_steps():
    encoder = StockConvLSTMEncoder(FILTERS)
    inputs = random_inputs().astype("float32")
    padded = np.concatenate([inputs, random_inputs(seed=3, time=2)], axis=1).astype("float32")
    lengths = tf.constant([TIME, TIME])
    np.testing.assert_allclose(encoder(padded, lengths), encoder(inputs, lengths), atol=1e-5)


def test_stock_encoder_with_mixed_lengths_equals_each_sample_alone():
    """A sample of 2 real steps in a batch padded to 4 gets what its 2 steps alone give, in
    both directions (the backward one starts at its last real step)."""
    encoder = StockConvLSTMEncoder(FILTERS)
    inputs = random_inputs().astype("float32")
    batched = encoder(inputs, tf.constant([TIME, 2]))
    alone = encoder(inputs[1:, :2], tf.constant([2]))
    np.testing.assert_allclose(batched[1:], alone, atol=1e-5)
    np.testing.assert_allclose(batched[:1], encoder(inputs[:1], tf.constant([TIME])), atol=1e-5)


def test_hidden_head_fits_what_the_original_head_cannot():
    # Labels are the XOR of two feature signs: no linear map of the features (the original
    # head, up to its per-class batch norm) separates them; one hidden layer does.
    features = np.random.default_rng(0).normal(size=(2, 12, 12, 2)).astype("float32")
    labels = ((features[..., 0] > 0) != (features[..., 1] > 0)).astype("int32")
    accuracies = {}
    for kind in ("original", "hidden"):
        keras.utils.set_random_seed(0)
        head = ClassificationHead(2, kernel_size=1, kind=kind, hidden_filters=16)
        optimizer = keras.optimizers.Adam(0.03)
        head(features, training=True)

        @tf.function
        def step(head=head, optimizer=optimizer):
            with tf.GradientTape() as tape:
                scores = head(features, training=True)
                loss = keras.losses.sparse_categorical_crossentropy(labels, scores, True)
                loss = tf.reduce_mean(loss)
            gradients = tape.gradient(loss, head.trainable_weights)
            optimizer.apply_gradients(zip(gradients, head.trainable_weights, strict=True))

        for _ in range(300):
            step()
        predicted = np.argmax(head(features, training=False), axis=-1)
        accuracies[kind] = np.mean(predicted == labels)
    assert accuracies["hidden"] > 0.95, accuracies
    assert accuracies["original"] < 0.8, accuracies


@pytest.mark.parametrize("kind", ["original", "hidden"])
def test_head_per_step_batch_statistics_skip_padding_steps(kind):
    head = ClassificationHead(3, kind=kind)
    features = random_inputs(time=3)
    padded = np.concatenate([features, 100 + random_inputs(seed=4, time=2)], axis=1)
    lengths = tf.constant([3, 3])
    scores = head(features, lengths, training=True)
    np.testing.assert_allclose(head(padded, lengths, training=True)[:, :3], scores, atol=1e-4)
    pooled = TemporalPooling("avg")(head(padded, lengths, training=True), lengths)
    np.testing.assert_allclose(pooled, tf.reduce_mean(scores, axis=1), atol=1e-4)


@pytest.mark.parametrize(
    "layer",
    [
        ConvLSTMCell(FILTERS, padding="same", peepholes=True, forget_bias=0.5, name="cell"),
        ConvGRUCell(FILTERS, normalization=False, spatial_normalization=False),
        ConvRNNEncoder(FILTERS, cell_type="gru", num_layers=2, aggregation="sum_output"),
        StockConvLSTMEncoder(FILTERS, num_layers=2, bidirectional=False, unroll=True),
        ClassificationHead(5, kernel_size=1, kind="logits", padding="same"),
        ClassificationHead(5, kind="hidden", hidden_filters=8),
        TemporalPooling("sum"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


@pytest.mark.parametrize("mode", ["avg", "sum"])
def test_temporal_pooling_sums_or_averages_real_steps_only(mode):
    logits = np.random.default_rng(5).normal(size=(3, 4, 2, 2, 5)).astype("float32")
    lengths = np.array([4, 2, 0], "int32")
    pooled = TemporalPooling(mode)(tf.constant(logits), tf.constant(lengths)).numpy()
    expected_sums = [logits[0].sum(0), logits[1, :2].sum(0), np.zeros((2, 2, 5))]
    for sample, (expected, length) in enumerate(zip(expected_sums, lengths, strict=True)):
        if mode == "avg":
            expected = expected / max(length, 1)
        np.testing.assert_allclose(pooled[sample], expected, rtol=1e-5, atol=1e-6)
