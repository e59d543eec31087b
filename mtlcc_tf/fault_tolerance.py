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

from mtlcc_tf import distribute, model_restore
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


def complete_checkpoints(directory: str) -> dict[int, str]:
    """Step -> path of the complete checkpoints in a manager's folder: listed in its index
    file (`checkpoint`) and with their `.index` file written, sorted by step.

    A write killed before its end leaves the index file as it was, so it is not listed. Read
    from the index file itself: a CheckpointManager lists only checkpoints with timestamps.
    """
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return {}
    found = {}
    for path in [*state.all_model_checkpoint_paths, state.model_checkpoint_path]:
        path = path if os.path.isabs(path) else os.path.join(directory, path)
        step = model_restore.checkpoint_step(path)
        if step is not None and tf.io.gfile.exists(f"{path}.index"):
            found[step] = path
    return dict(sorted(found.items()))


def agree_on_step(worker_steps: list[list[int]]) -> tuple[int | None, str]:
    """The step every worker resumes at, given each worker's complete checkpoint steps (the
    chief's first), and why: the newest step all of them have; else the chief's newest (workers
    without it resume from the chief's checkpoint); None (a fresh start) if the chief has none."""
    common = set.intersection(*(set(steps) for steps in worker_steps))
    if common:
        step = max(common)
        newest = [steps[-1] if steps else None for steps in worker_steps]
        if len(set(newest)) > 1:
            return step, (
                f"the workers' newest checkpoints are at steps {newest}: all resume at step "
                f"{step}, the newest that every one of them has completely written"
            )
        return step, ""
    if not worker_steps[0]:
        return None, "the chief has no checkpoint: every worker starts afresh"
    step = worker_steps[0][-1]
    return step, (
        f"no step has a checkpoint on every worker ({worker_steps}): all resume at the chief's "
        f"step {step}; workers without it restore the chief's checkpoint and start their input "
        "afresh"
    )


def restore(
    manager: tf.train.CheckpointManager,
    checkpoint: tf.train.Checkpoint,
    partial: bool = False,
    path: str | None = None,
) -> bool:
    """Restores `path` (default: the manager's latest checkpoint), if any; returns whether there
    was one.

    With `partial`, the file may hold more than `checkpoint` (e.g. an input iterator left out).

    Raises:
        ValueError: the checkpoint does not fit (another model, another input pipeline).
    """
    path = path or manager.latest_checkpoint
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


_MAX_STEPS_SHARED = 64  # checkpoint steps a worker reports (far above --keep_checkpoints)


def resume(
    model_dir: str,
    strategy: tf.distribute.Strategy,
    manager: tf.train.CheckpointManager,
    checkpoint: tf.train.Checkpoint,
    without_input: tf.train.Checkpoint,
    restore_input_position: bool = True,
) -> bool:
    """Restores the run's last checkpoint; returns whether there was one.

    One process: the manager's latest. Several workers: they exchange the steps of their
    complete checkpoints (one collective) and all resume at the step `agree_on_step` picks, so
    that none trains out of step after a kill left their checkpoints at different steps; a
    worker without that step restores the chief's checkpoint without its input position. With
    `restore_input_position` False, `without_input` (model, optimizer, step) is restored.
    """
    path, from_chief = manager.latest_checkpoint, False
    if distribute.num_workers(strategy) > 1:
        own = complete_checkpoints(manager.directory)
        steps = list(own)[-_MAX_STEPS_SHARED:]
        row = steps + [-1] * (_MAX_STEPS_SHARED - len(steps))
        rows = distribute.gather_worker_rows(strategy, row)
        step, why = agree_on_step([sorted(int(v) for v in r if v >= 0) for r in rows])
        if why:
            logging.warning(why)
        if step is None:
            return False
        path = own.get(step)
        if path is None:
            chief_dir = model_dir_lib.checkpoint_dir(model_dir, "last")
            path, from_chief = os.path.join(chief_dir, f"ckpt-{step}"), True
            logging.warning(
                "this worker has no checkpoint of step %d: restoring %s (model, optimizer, step); "
                "its input starts afresh", step, path,
            )  # fmt: skip
    if from_chief or not restore_input_position:
        return restore(manager, without_input, partial=True, path=path)
    return restore(manager, checkpoint, path=path)


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
