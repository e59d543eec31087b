"""Tests of ModelConfig and build_model: shapes, parameters, training, saving, precision, views."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcc_tf.model_config import ModelConfig
from mtlcc_tf.models import build_analysis_model, build_model

BATCH, TIME, SIZE, CHANNELS, FILTERS, CLASSES = 2, 3, 8, 3, 4, 3


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(num_classes=CLASSES, input_channels=CHANNELS, convrnn_filters=FILTERS)
    if overrides.get("convcell") == "keras_convlstm":
        fields.update(normalization=False, padding="same", tile_size=SIZE)
    return ModelConfig(**{**fields, **overrides})


def tiny_batch(seed: int = 0, time: int = TIME, size: int = SIZE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        # [batch, time, height, width, channels]
        "inputs": rng.normal(size=(BATCH, time, size, size, CHANNELS)).astype("float32"),
        "sequence_length": np.array([time, time - 1], "int32"),
    }


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(convcell="rnn"), "convcell"),
        (dict(convrnn_kernel=2), "convrnn_kernel"),
        (dict(convrnn_filters=0), "convrnn_filters"),
        (dict(padding="valid"), "padding"),
        (dict(aggr_strat="last"), "aggr_strat"),
        (dict(head="softmax"), "head"),
        (dict(normalization_scope="batch"), "normalization_scope"),
        (dict(dropout=1.0), "dropout"),
        (dict(convcell="gru", peepholes=True), "peepholes"),
        (dict(convcell="keras_convlstm", normalization=False, padding="same"), "tile_size"),
        (dict(convcell="keras_convlstm", padding="same", tile_size=8), "normalization"),
        (dict(band_mean=(0.1, 0.2), band_std=(1.0,)), "band_mean"),
        (dict(band_mean=(0.1,) * 14, band_std=(1.0,) * 14), "band_mean"),
        (dict(band_mean=(0.1,), band_std=(0.0,)), "band_std"),
        (dict(band_mean=(float("nan"),), band_std=(1.0,)), "band_mean"),
    ],
)
def test_validate_names_the_bad_field(overrides, field):
    config = ModelConfig(**{"num_classes": 3, **overrides})
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        config.validate()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_config().num_classes = 4


def expected_parameters(config: ModelConfig) -> int:
    """Closed-form parameter count (trainable and batch-norm statistics)."""
    kernel_area = 1 if config.pixelwise else config.convrnn_kernel**2
    filters, directions = config.convrnn_filters, 1 + config.bidirectional
    total, channels = 0, config.input_channels
    for _ in range(config.convrnn_layers):
        if config.convcell == "gru":
            per_direction = kernel_area * (channels + filters) * 3 * filters
            per_direction += 2 * 3 * filters if config.normalization else 3 * filters
        else:
            per_direction = kernel_area * (channels + filters) * 4 * filters
            if config.normalization:
                per_direction += 2 * 5 * filters
            else:
                per_direction += 4 * filters
            per_direction += 3 * filters if config.peepholes else 0
        total += directions * per_direction
        channels = directions * filters
    features = directions * filters * (config.convrnn_layers if config.aggr_strat == "state" else 1)
    head_area = 1 if config.pixelwise else 9
    total += head_area * features * config.num_classes
    total += config.num_classes * (4 if config.head == "original" else 1)
    return total


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(convcell="gru", convrnn_layers=2, head="logits"),
        dict(peepholes=True, bidirectional=False, aggr_strat="avg_output"),
        dict(convcell="gru", normalization=False, pixelwise=True),
        dict(convcell="keras_convlstm", convrnn_layers=2),
    ],
    ids=str,
)
def test_parameter_count(overrides):
    config = tiny_config(**overrides)
    assert build_model(config).count_params() == expected_parameters(config)


@pytest.mark.parametrize("aggr_strat", ["state", "avg_output", "sum_output"])
def test_any_tile_size_and_length_and_padding_invariance(aggr_strat):
    model = build_model(tiny_config(convcell="gru", aggr_strat=aggr_strat, convrnn_layers=2))
    batch = tiny_batch()
    logits = model(batch)
    assert logits.shape == (BATCH, SIZE, SIZE, CLASSES) and logits.dtype == tf.float32
    bigger = tiny_batch(time=TIME + 2, size=SIZE + 4)
    assert model(bigger).shape == (BATCH, SIZE + 4, SIZE + 4, CLASSES)
    padded = dict(
        batch,
        inputs=np.concatenate([batch["inputs"], bigger["inputs"][:, :2, :SIZE, :SIZE]], axis=1),
    )
    np.testing.assert_allclose(model(padded), logits, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(peepholes=True, convrnn_layers=2, aggr_strat="avg_output", dropout=0.1),
        dict(convcell="gru", head="logits"),
        dict(convcell="keras_convlstm"),
    ],
    ids=str,
)
def test_gradients_reach_every_weight(overrides):
    model = build_model(tiny_config(**overrides))
    batch = tiny_batch()
    weights = tf.random.normal([BATCH, SIZE, SIZE, CLASSES], seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(batch, training=True) * weights)
    gradients = tape.gradient(loss, model.trainable_variables)
    for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
        assert gradient is not None, variable.path
        assert np.any(np.abs(gradient) > 0), variable.path


def test_tiny_model_overfits_a_tiny_batch():
    keras.utils.set_random_seed(0)
    model = build_model(tiny_config(convrnn_filters=8))
    batch = tiny_batch()
    # A label the model can read from the data: the channel with the largest mean over time.
    labels = np.argmax(batch["inputs"][:, : TIME - 1].mean(axis=1), axis=-1)
    optimizer = keras.optimizers.Adam(1e-2)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(batch, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    for _ in range(150):
        train_step()
    accuracy = np.mean(np.argmax(model(batch, training=False), axis=-1) == labels)
    assert accuracy > 0.95


@pytest.mark.parametrize("convcell", ["lstm", "gru", "keras_convlstm"])
def test_saved_model_reloads_with_identical_predictions(convcell, tmp_path):
    model = build_model(tiny_config(convcell=convcell, aggr_strat="avg_output"))
    batch = tiny_batch()
    model(batch, training=True)  # moves the batch-norm statistics away from their start
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        restored.predict(batch, verbose=0), model.predict(batch, verbose=0)
    )


@pytest.mark.parametrize("convcell", ["lstm", "keras_convlstm"])
def test_tf_checkpoint_restores_every_weight(convcell, tmp_path):
    config = tiny_config(convcell=convcell, convrnn_layers=2)
    model, restored = build_model(config), build_model(config)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "checkpoint"))
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for weight, restored_weight in zip(model.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(restored_weight, weight, err_msg=weight.path)


@pytest.mark.parametrize("convcell", ["lstm", "gru"])
def test_analysis_model_returns_every_state_over_time(convcell):
    model = build_model(tiny_config(convcell=convcell, convrnn_layers=2))
    analysis = build_analysis_model(model)
    assert analysis.count_params() == model.get_layer("encoder").count_params()
    states = analysis(tiny_batch())
    names = ("hidden", "cell") if convcell == "lstm" else ("hidden",)
    assert sorted(states) == sorted(
        f"layer{layer}_{direction}_{name}"
        for layer in (0, 1)
        for direction in ("forward", "backward")
        for name in names
    )
    for values in states.values():
        assert values.shape == (BATCH, TIME, SIZE, SIZE, FILTERS) and values.dtype == tf.float32
        np.testing.assert_array_equal(values[1, TIME - 1], 0.0)  # padding step


def test_analysis_model_needs_our_encoder():
    with pytest.raises(ValueError, match="lstm' or 'gru"):
        build_analysis_model(build_model(tiny_config(convcell="keras_convlstm")))


def loss_and_gradients(model, batch):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(batch, training=True) ** 2)
    return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize(
    "convcell, policy",
    [
        ("lstm", "mixed_bfloat16"),
        ("gru", "mixed_bfloat16"),
        ("lstm", "mixed_float16"),
        ("gru", "mixed_float16"),
    ],
)
def test_mixed_precision_forward_and_gradients(convcell, policy):
    reference = build_model(tiny_config(convcell=convcell))
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(tiny_config(convcell=convcell))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(reference.get_weights())
    batch = tiny_batch()
    logits = model(batch)
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits, reference(batch), atol=0.1)
    # Gradients: float32 (the variables are), finite, and pointing where float32's point.
    _, expected = loss_and_gradients(reference, batch)
    _, gradients = loss_and_gradients(model, batch)
    for variable, gradient, want in zip(
        model.trainable_variables, gradients, expected, strict=True
    ):
        assert gradient.dtype == tf.float32, variable.path
        gradient, want = np.ravel(gradient), np.ravel(want)
        assert np.isfinite(gradient).all(), variable.path
        cosine = gradient @ want / (np.linalg.norm(gradient) * np.linalg.norm(want) + 1e-12)
        assert cosine > 0.95, (variable.path, cosine)


def test_pixelwise_baseline_has_no_spatial_context():
    model = build_model(tiny_config(pixelwise=True))
    batch = tiny_batch()
    changed = dict(batch, inputs=batch["inputs"].copy())
    changed["inputs"][:, :, 0, 0] += 5.0
    difference = np.abs(model(changed) - model(batch)).max(axis=(0, 3))
    assert difference[0, 0] > 0
    difference[0, 0] = 0
    np.testing.assert_array_equal(difference, 0.0)


def test_date_encoding_adds_periodic_date_features_and_keeps_padding_zero():
    from mtlcc_tf.layers import DateEncoding

    inputs = np.zeros((1, 3, 2, 2, 15), "float32")
    inputs[0, :2, ..., 13] = np.array([91.25, 182.5])[:, None, None] / 365  # step 2: padding
    out = DateEncoding(2)(inputs).numpy()
    assert out.shape == (1, 3, 2, 2, 15 + 4)
    np.testing.assert_allclose(out[0, 0, 0, 0, 15:], [1, 0, 0, -1], atol=1e-6)
    np.testing.assert_allclose(out[0, 1, 0, 0, 15:], [0, 0, -1, 1], atol=1e-6)
    np.testing.assert_array_equal(out[0, 2], 0.0)
    # In a model: dates change the logits, and the analysis view sees the same inputs.
    model = build_model(tiny_config(input_channels=15, date_harmonics=3))
    batch = tiny_batch()
    batch["inputs"] = np.concatenate([batch["inputs"]] * 5, axis=-1)
    batch["inputs"][..., 13] = 0.5
    shifted = dict(batch, inputs=batch["inputs"].copy())
    shifted["inputs"][..., 13] += 0.25
    assert np.abs(model(shifted) - model(batch)).max() > 1e-4
    states = build_analysis_model(model)(batch)
    assert all(np.isfinite(value).all() for value in states.values())
    config = model.get_layer("date_encoding").get_config()
    assert DateEncoding.from_config(config).num_harmonics == 3
    with pytest.raises(ValueError, match="date_harmonics"):
        tiny_config(date_harmonics=2).validate()  # 3 channels: no doy channel


def test_band_standardization_is_the_first_step_of_the_model_and_its_views():
    """A model with band statistics equals the same weights fed standardised inputs, and so do
    its state view; date channels and padding steps are left alone."""
    mean, std = (0.3, 0.1, 0.2), (0.2, 0.05, 0.4)
    batch = tiny_batch()
    batch["inputs"] = np.concatenate([batch["inputs"]] * 5, axis=-1)  # 15 channels
    batch["inputs"][..., 13] = 0.5
    batch["inputs"][1, -1] = 0.0  # a padding step
    standardized = batch["inputs"].copy()
    standardized[..., :3] = (standardized[..., :3] - mean) / std
    standardized[1, -1] = 0.0
    config = tiny_config(input_channels=15, date_harmonics=2)
    plain = build_model(config)
    model = build_model(dataclasses.replace(config, band_mean=mean, band_std=std))
    model.set_weights(plain.get_weights())
    layer = model.get_layer("band_standardization")
    np.testing.assert_allclose(layer(batch["inputs"]), standardized, rtol=1e-5, atol=1e-6)
    fed = dict(batch, inputs=standardized)
    np.testing.assert_allclose(model(batch), plain(fed), rtol=1e-4, atol=1e-5)
    states, expected = build_analysis_model(model)(batch), build_analysis_model(plain)(fed)
    for name, value in expected.items():
        np.testing.assert_allclose(states[name], value, rtol=1e-4, atol=1e-5)
    assert type(layer).from_config(layer.get_config()).std == std


@pytest.mark.parametrize("convcell", ["lstm", "gru"])
def test_pixel_normalization_keeps_far_pixels_apart(convcell):
    """Tile-wide statistics let a change anywhere reach every pixel; per-pixel ones do not."""
    batch = tiny_batch()
    changed = dict(batch, inputs=batch["inputs"].copy())
    changed["inputs"][:, :, 0, 0] += 5.0  # e.g. a cloud in one corner
    far = {}
    for scope in ("tile", "pixel"):
        # 1x1 recurrent kernels: only the normalisation (and the head's 3x3) mixes pixels.
        config = tiny_config(convcell=convcell, convrnn_kernel=1, normalization_scope=scope)
        model = build_model(config)
        difference = np.abs(model(changed) - model(batch)).max(axis=(0, 3))
        far[scope] = difference[2:, 2:].max()  # beyond the head's reach
    assert far["tile"] > 1e-4 and far["pixel"] == 0.0


@pytest.mark.parametrize("convcell, unroll", [("lstm", True), ("gru", True), ("lstm", False)])
def test_jit_compiled_training_step_matches(convcell, unroll):
    model = build_model(tiny_config(convcell=convcell, unroll=unroll))
    batch = tiny_batch()
    loss, gradients = tf.function(loss_and_gradients)(model, batch)
    jit_loss, jit_gradients = tf.function(loss_and_gradients, jit_compile=True)(model, batch)
    np.testing.assert_allclose(jit_loss, loss, rtol=1e-4)
    for gradient, jit_gradient in zip(gradients, jit_gradients, strict=True):
        np.testing.assert_allclose(jit_gradient, gradient, rtol=1e-3, atol=1e-4)
