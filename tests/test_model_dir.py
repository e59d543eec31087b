"""The model directory: config.json, checkpoint paths and steps, and their errors."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from data_pipeline.data_config import DataConfig
from mtlcc_tf import model_dir as model_dir_lib
from mtlcc_tf import model_restore
from mtlcc_tf.model_config import ModelConfig
from tests.conftest import CLASSES


def test_model_dir_paths_and_errors(tmp_path):
    model_dir = str(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="config.json"):
        model_dir_lib.read_run_config(model_dir)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        model_dir_lib.checkpoint_path(model_dir)
    model_config = ModelConfig(num_classes=CLASSES.num_classes, convrnn_filters=4)
    model_dir_lib.write_run_config(
        model_dir, model_config, DataConfig(root="r", years=("2016",)), CLASSES
    )
    run_config = model_dir_lib.read_run_config(model_dir)
    assert run_config.model == model_config and run_config.data.years == ("2016",)
    variable = tf.Variable(1.0)
    last = tf.train.Checkpoint(step=variable).save(os.path.join(model_dir, "checkpoints", "ckpt"))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(step=variable), os.path.join(model_dir, "checkpoints"), 3
    )
    manager.save(checkpoint_number=5)
    assert model_dir_lib.checkpoint_path(model_dir, "best").endswith("checkpoints/ckpt-5")
    assert model_dir_lib.checkpoint_path(model_dir, last) == last
    with open(os.path.join(model_dir, "config.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(ValueError, match="config.json: malformed"):
        model_dir_lib.read_run_config(model_dir)


def test_checkpoint_step_reads_the_step_variable_else_the_name(tmp_path):
    path = tf.train.Checkpoint(step=tf.Variable(7, dtype=tf.int64)).write(str(tmp_path / "a-3"))
    assert model_restore.checkpoint_step(path) == 7
    other = tf.train.Checkpoint(weight=tf.Variable(1.0)).write(str(tmp_path / "ckpt-12"))
    assert model_restore.checkpoint_step(other) == 12
    assert model_restore.checkpoint_step(str(tmp_path / "absent")) is None
