"""Fault tolerance: last and best checkpoint managers, resuming, and stopping on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import types

import tensorflow as tf
from absl import logging

from mtlcc_tf import distribute
from mtlcc_tf import model_dir as model_dir_lib


@contextlib.contextmanager
def stop_on_sigterm():
    """Yields a flag object whose `.requested` turns True on SIGTERM (checked between steps)."""
    flag = types.SimpleNamespace(requested=False)
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be installed by the main thread
        return

    def handler(signum, frame):
        logging.warning("SIGTERM: saving a checkpoint after the current step, then exiting")
        flag.requested = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def checkpoint_managers(
    model_dir: str,
    strategy: tf.distribute.Strategy,
    checkpoint: tf.train.Checkpoint,
    best_checkpoint: tf.train.Checkpoint,
    keep: int,
) -> tuple[tf.train.CheckpointManager, tf.train.CheckpointManager]:
    """The managers of the last checkpoints and of the best one.

    Every worker of a multi-worker run saves (reading distributed variables may need
    collectives). The chief writes `model_dir/checkpoints` and `model_dir/best`; other workers
    keep their own last checkpoints (their input position differs) and write the best one to a
    scratch folder that `save_best` deletes.

    Args:
        model_dir: the run's folder.
        strategy: the run's strategy (tells the chief).
        checkpoint: model, optimizer, step and input iterator.
        best_checkpoint: model and step.
        keep: how many last checkpoints to keep.

    Returns:
        (last, best) managers.
    """
    if distribute.is_chief(strategy):
        last_dir = model_dir_lib.checkpoint_dir(model_dir, "last")
        best_dir = model_dir_lib.checkpoint_dir(model_dir, "best")
    else:
        last_dir = model_dir_lib.worker_checkpoint_dir(model_dir, distribute.worker_index(strategy))
        best_dir = os.path.join(os.path.dirname(last_dir), "best_scratch")
    last = tf.train.CheckpointManager(checkpoint, last_dir, max_to_keep=keep)
    best = tf.train.CheckpointManager(best_checkpoint, best_dir, max_to_keep=1)
    return last, best


def restore(
    manager: tf.train.CheckpointManager, checkpoint: tf.train.Checkpoint, partial: bool = False
) -> bool:
    """Restores the manager's latest checkpoint, if any; returns whether there was one.

    With `partial`, the file may hold more than `checkpoint` (e.g. an input iterator left out).

    Raises:
        ValueError: the checkpoint does not fit (another model, another input pipeline).
    """
    path = manager.latest_checkpoint
    if not path:
        return False
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, IndexError, ValueError, tf.errors.OpError) as error:
        # IndexError: a truncated data file ("Read less bytes than requested").
        raise ValueError(
            f"{path}: cannot resume from this checkpoint ({error}); is it damaged, or did the "
            "model or data settings change? Use a new --model_dir or the original flags"
        ) from error
    return True


def save_best(
    model_dir: str,
    strategy: tf.distribute.Strategy,
    manager: tf.train.CheckpointManager,
    step: int,
    summary: dict,
) -> None:
    """Saves the best checkpoint and, on the chief, `best/metrics.json` (step and metrics)."""
    manager.save(checkpoint_number=step)
    if distribute.is_chief(strategy):
        model_dir_lib.write_best_metrics(model_dir, {"step": step, **summary})
    else:
        shutil.rmtree(manager.directory, ignore_errors=True)
