"""Inputs and checks for every encoder's model: random dated batches, overfitting a tiny batch,
and a SavedModel that serves the same probabilities from raw band values."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from data_pipeline import transforms
from mtlcc_tf import export_lib
from mtlcc_tf.layers.dates import DOY_CHANNEL
from tests.conftest import CLASSES


def batch(num_dates: int = 5, size: int = 12, seed: int = 0, padding: int = 0) -> dict:
    """Random inputs with increasing days of year; `padding` all-zero dates at the end."""
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(0, 1, (2, num_dates, size, size, 15)).astype(np.float32)
    doy = np.sort(rng.choice(np.arange(1, 366), (2, num_dates), replace=False), axis=1)
    inputs[..., DOY_CHANNEL] = (doy / 365.0)[:, :, None, None]
    inputs = np.concatenate([inputs, np.zeros((2, padding, size, size, 15), np.float32)], 1)
    return {"inputs": inputs, "sequence_length": np.array([num_dates, num_dates - 2], np.int32)}


def assert_overfits(model: keras.Model, inputs: dict, learning_rate: float, steps: int) -> None:
    """Random labels of a 12 px batch of 2: the loss falls below 0.3 of its start."""
    labels = np.random.default_rng(1).integers(0, CLASSES.num_classes, (2, 12, 12))
    optimizer = keras.optimizers.Adam(learning_rate)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function  # traced once: eager, 80 TSViT steps took 47 s on a 2-core CPU, traced 9 s
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, model(inputs, training=True))
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return value

    losses = [float(step()) for _ in range(steps)]
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def assert_export_serves_the_same(model: keras.Model, export_dir: str) -> None:
    """The exported signature, fed raw bands and dates, gives the model's softmax."""
    served = tf.saved_model.load(export_lib.export(model, CLASSES, export_dir))
    served = served.signatures["serving_default"]
    rng = np.random.default_rng(2)
    raw = {
        "x10": rng.uniform(0, 3000, (1, 4, 12, 12, 4)).astype(np.float32),
        "x20": rng.uniform(0, 3000, (1, 4, 6, 6, 6)).astype(np.float32),
        "x60": rng.uniform(0, 3000, (1, 4, 2, 2, 3)).astype(np.float32),
        "doy": np.array([[20, 80, 150, 200]], np.int32),
        "year": np.full((1, 4), 2016, np.int32),
    }
    features = transforms.batch_model_inputs(*(tf.constant(raw[k]) for k in raw))
    expected = tf.nn.softmax(model(features)).numpy()
    outputs = served(**{key: tf.constant(value) for key, value in raw.items()})
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
