"""Rebuilding a model directory's model and restoring its weights from a checkpoint."""

from __future__ import annotations

import os
import re
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from mtlcc_tf import models
from mtlcc_tf.model_config import ModelConfig
from mtlcc_tf.model_dir import CONFIG_FILE, RunConfig, checkpoint_path, read_run_config

# Checkpoint keys: the Keras model, and the same weights keyed by their Keras paths.
MODEL_KEY = "model"
WEIGHTS_KEY = "model_weights"


def weights_by_path(model: keras.Model) -> dict[str, Any]:
    """Every weight of `model` (trainable or not) keyed by its Keras path.

    Paths look like 'encoder/lstm_layer0_forward/kernel'. Keras 3 (3.15, TensorFlow backend)
    gives `tf.train.Checkpoint` no dependency on layers kept in lists, so
    `Checkpoint(model=model)` alone can miss whole sublayers. Checkpoints written by training
    also hold this dict under `WEIGHTS_KEY`, which reaches every weight whatever the model's
    structure, and lets `restore_model` check that every weight was restored.

    Raises:
        ValueError: if two weights share a path (layers without unique explicit names).
    """
    weights = {weight.path: weight for weight in model.weights}
    if len(weights) != len(model.weights):
        paths = [weight.path for weight in model.weights]
        duplicates = sorted({path for path in paths if paths.count(path) > 1})
        raise ValueError(f"model weights share paths {duplicates}: name the layers uniquely")
    return weights


def model_checkpoint(model: keras.Model, **others: Any) -> tf.train.Checkpoint:
    """`tf.train.Checkpoint(model=model, model_weights=weights_by_path(model), **others)`."""
    return tf.train.Checkpoint(**{MODEL_KEY: model, WEIGHTS_KEY: weights_by_path(model)}, **others)


def _has_weights_key(path: str) -> bool:
    return any(name.startswith(f"{WEIGHTS_KEY}/") for name, _ in tf.train.list_variables(path))


def dummy_inputs(model_config: ModelConfig, time_steps: int = 2) -> dict[str, np.ndarray]:
    """A zero batch of one tile, big enough for the reflect padding of every kernel."""
    size = model_config.tile_size or max(8, 2 * model_config.convrnn_kernel)
    shape = (1, time_steps, size, size, model_config.input_channels)
    # [batch, time, height, width, channels]
    return {
        "inputs": np.zeros(shape, np.float32),
        "sequence_length": np.full((1,), time_steps, np.int32),
    }


def restore_model(
    model_dir: str, which: str = "best", precision: str | None = None
) -> tuple[keras.Model, RunConfig]:
    """Rebuilds the model of a model directory and restores its weights.

    Args:
        model_dir: written by `mtlcc_tf.train`.
        which: "best", "last" or a checkpoint path (see `checkpoint_path`).
        precision: the Keras dtype policy to compute in ("float32", "mixed_bfloat16"); None for
            the global policy. Variables are float32 under every policy, so any checkpoint fits.

    Returns:
        The model (weights restored, ready for inference) and the run config.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed config.json or checkpoint, or a
            checkpoint that does not fit the model of config.json.
    """
    run_config = read_run_config(model_dir)
    path = checkpoint_path(model_dir, which)
    previous = keras.mixed_precision.global_policy()
    if precision:
        keras.mixed_precision.set_global_policy(precision)
    try:
        model = models.build_model(run_config.model)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model(dummy_inputs(run_config.model), training=False)
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        if _has_weights_key(path):
            # Reaches and checks every weight, whatever Keras tracks (see weights_by_path).
            checkpoint = tf.train.Checkpoint(**{WEIGHTS_KEY: weights_by_path(model)})
            checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
        else:
            logging.warning("%s has no %r: restored through %r only", path, WEIGHTS_KEY, MODEL_KEY)
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError(
            f"{path}: checkpoint does not fit the model of {model_dir}/{CONFIG_FILE}: {error}"
        ) from error
    return model, run_config


def restore_for_inference(
    directory: str, which: str = "best", precision: str | None = None
) -> tuple[keras.Model, RunConfig, str]:
    """`restore_model` for the entry points; also returns the checkpoint path it restored.

    Checks in the order a user should hear about problems: the folder, config.json, then the
    checkpoint.

    Raises:
        FileNotFoundError, ValueError: as `restore_model`, and for a missing folder.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--model_dir={directory}: no such directory")
    read_run_config(directory)
    checkpoint = checkpoint_path(directory, which)
    model, run_config = restore_model(directory, checkpoint, precision)
    return model, run_config, checkpoint


def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint: its `step` variable, else the number in its name."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in sorted(reader.get_variable_to_shape_map()):
            if key.split("/")[0] == "step" and key.endswith("VARIABLE_VALUE"):
                return int(reader.get_tensor(key))
    except (ValueError, tf.errors.OpError):
        pass
    match = re.search(r"-(\d+)$", path)
    return int(match.group(1)) if match else None
