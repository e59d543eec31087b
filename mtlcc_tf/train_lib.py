"""The training loop: one custom loop for every strategy, step-exact resume, best-by-kappa."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from data_pipeline import dataset_root, input_pipeline
from data_pipeline.data_config import DataConfig
from mtlcc_tf import (
    distribute,
    fault_tolerance,
    hardware,
    metrics,
    model_restore,
    models,
    optimization,
    profiling,
    summaries,
    train_steps,
    weight_average,
)
from mtlcc_tf import model_dir as model_dir_lib
from mtlcc_tf.model_config import ModelConfig
from mtlcc_tf.train_config import RuntimeConfig, TrainConfig

# The per-replica steps live in train_steps; re-exported as part of this module's API.
compute_loss_and_gradients = train_steps.compute_loss_and_gradients
train_step = train_steps.train_step
eval_step = train_steps.eval_step
evaluate = train_steps.evaluate


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """How a call of `train_and_evaluate` ended."""

    step: int  # global step reached
    total_steps: int
    steps_per_epoch: int
    initial_step: int  # step restored from the last checkpoint (0 for a new run)
    validation: dict[str, Any] | None  # metrics of the last evaluation (metrics.summarize + loss)
    stopped: bool  # ended early by SIGTERM, after saving a checkpoint


def create_model(model_config: ModelConfig, seed: int = 0) -> keras.Model:
    """Builds the model with seeded initialisers (same weights for the same seed)."""
    keras.utils.set_random_seed(seed)
    return models.build_model(model_config)


def _steps(train_config: TrainConfig, num_tiles: int, batch_size: int) -> tuple[int, int]:
    """(steps per epoch, total steps): an epoch is training tiles // global batch size."""
    steps_per_epoch = train_config.steps_per_epoch or max(1, num_tiles // batch_size)
    return steps_per_epoch, train_config.train_steps or train_config.epochs * steps_per_epoch


def _hparams(**configs) -> dict[str, Any]:
    return {
        f"{prefix}/{key}": value
        for prefix, config in configs.items()
        for key, value in dataclasses.asdict(config).items()
    }


def _with_band_statistics(
    model_config: ModelConfig,
    train_data: DataConfig,
    split: input_pipeline.SplitFiles,
    model_dir: str,
) -> ModelConfig:
    """`model_config` with per-band statistics: its own if set, those of the run being resumed
    in `model_dir` if it has them, else measured on the training tiles."""
    model_config = model_dir_lib.with_run_band_statistics(model_dir, model_config)
    if model_config.band_mean:
        return model_config
    start = time.perf_counter()
    mean, std = input_pipeline.band_statistics(train_data, split=split)
    logging.info(
        "band statistics of the training tiles (%.1f s): mean %s, std %s",
        time.perf_counter() - start, mean, std,
    )  # fmt: skip
    return dataclasses.replace(model_config, band_mean=mean, band_std=std)


def train_and_evaluate(
    model_config: ModelConfig,
    train_data: DataConfig,
    eval_data: DataConfig,
    train_config: TrainConfig,
    runtime_config: RuntimeConfig,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    splits: tuple[input_pipeline.SplitFiles, input_pipeline.SplitFiles] | None = None,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Trains, evaluates every epoch (or `eval_every` steps) and checkpoints; resumes if it can.

    Args:
        model_config: the model; `num_classes` must match the dataset's classes.txt.
        train_data: training split (`training=True`); `batch_size` is the global batch.
        eval_data: validation split (`training=False`), e.g. the test fold.
        train_config: optimisation and frequencies.
        runtime_config: strategy, precision, XLA.
        model_dir: output folder; a run found there is resumed from its last checkpoint.
        strategy: an existing strategy to use instead of creating `runtime_config.strategy`
            (one process should create one strategy: their collectives may collide).
        splits: the training and validation splits (`input_pipeline.list_split_files`) if the
            caller has resolved them; otherwise they are read here, once.
        on_start: called on the chief once the run has started or resumed (its checkpoint
            restored), e.g. to write the entry point's flags.txt: not called if that fails.

    Returns:
        A TrainResult. The run is complete when `result.step == result.total_steps`.

    Raises:
        ValueError: bad or inconsistent settings (before any data is read).
        dataset_root.DatasetError: a missing or malformed dataset root or split.
        FloatingPointError: a non-finite training loss (names the step).
    """
    started = time.monotonic()  # the training time of this attempt counts from here
    for config in (model_config, train_data, eval_data, train_config, runtime_config):
        config.validate()
    # The strategy first: MultiWorkerMirroredStrategy must precede every other TF op.
    strategy = strategy or distribute.create_strategy(runtime_config.strategy)
    distribute.log_strategy(strategy)
    runtime_config, runtime_record = hardware.resolve_runtime(runtime_config)
    chief = distribute.is_chief(strategy)
    if splits is None:
        root = dataset_root.read_root(train_data.root)
        splits = (
            input_pipeline.list_split_files(train_data, root),
            input_pipeline.list_split_files(eval_data, root),
        )
    split = splits[0]
    classes = split.classes
    if model_config.num_classes != classes.num_classes:
        raise ValueError(
            f"ModelConfig.num_classes={model_config.num_classes} but "
            f"{train_data.root}/classes.txt has {classes.num_classes} classes"
        )
    if train_data.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch size {train_data.batch_size} does not divide into "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    if len(split.files) < distribute.num_workers(strategy):
        raise ValueError(
            f"{len(split.files)} training tiles for {distribute.num_workers(strategy)} "
            "workers: every worker needs at least one"
        )
    steps_per_epoch, total_steps = _steps(train_config, len(split.files), train_data.batch_size)
    if train_config.standardize_bands:
        model_config = _with_band_statistics(model_config, train_data, split, model_dir)
    model_dir_lib.check_resumable(model_dir, model_config, classes)
    changes = model_dir_lib.resume_changes(model_dir, train_data, len(split.files))
    if changes:
        logging.warning(
            "resuming %s with other training data settings than its run so far (old -> new): "
            "%s; the steps already taken saw the old ones, and the input position is not "
            "restored (the data order starts afresh)",
            model_dir, "; ".join(changes),
        )  # fmt: skip
    runtime_record["train_files"] = len(split.files)
    # For predict's warning on scenes of other years (sections are named by year).
    runtime_record["train_years"] = sorted(
        int(section.name) for section in split.sections if section.name.isdigit()
    )
    if chief:
        for path in model_dir_lib.remove_partial_checkpoints(model_dir):
            logging.warning("removed %s, left by an interrupted checkpoint write", path)

    def record_start() -> None:
        """Writes config.json (and runs `on_start`) once the checkpoint was restored, or none
        was found: a resume that fails changes nothing in the model directory."""
        if not chief:
            return
        earlier = model_dir_lib.read_runtime_record(model_dir).get("resumed_with_changes", [])
        if earlier or changes:
            runtime_record["resumed_with_changes"] = [*earlier, *changes]
        model_dir_lib.write_run_config(
            model_dir, model_config, train_data, classes, runtime=runtime_record
        )
        if on_start is not None:
            on_start()

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(runtime_config.precision)
    try:
        return _train_loop(
            strategy,
            model_config,
            train_data,
            eval_data,
            train_config,
            runtime_config,
            model_dir,
            classes.known_names,
            steps_per_epoch,
            total_steps,
            splits,
            record_start,
            restore_input_position=not changes,
            started=started,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


class TrainClock:
    """Seconds of training summed over the attempts at a run (`model_dir`/train_time.json).

    A killed run resumes from its last checkpoint, so the time it spent after that checkpoint
    is lost work; what the run costs is the time up to each checkpoint, over every attempt. The
    chief records it after every checkpoint save; a resumed attempt starts from the record of
    its checkpoint's step. Without such a record (a model directory from before this file, a
    kill between a checkpoint and its record) the sum is approximate and says so ("complete").
    """

    def __init__(
        self, model_dir: str, initial_step: int, chief: bool, started: float | None = None
    ):
        self._model_dir, self._chief = model_dir, chief
        self._started = time.monotonic() if started is None else started
        self._earlier, self._attempts, self._complete = 0.0, 1, True
        if not initial_step:
            return
        record = model_dir_lib.read_train_time(model_dir)
        if record is not None:
            self._earlier = float(record["seconds"])
            self._attempts = int(record["attempts"]) + 1
            self._complete = bool(record.get("complete", True))
        if record is None or int(record["step"]) != initial_step:
            self._complete = False
            if chief:
                logging.warning(
                    "%s has no training time for step %d (%s): the training time it records "
                    "is approximate from here on (train_time.json: complete false)",
                    model_dir, initial_step,
                    "no train_time.json" if record is None else f"it has step {record['step']}",
                )  # fmt: skip

    def record(self, step: int) -> None:
        """Writes the training time up to `step` (just checkpointed); on the chief only."""
        if not self._chief:
            return
        seconds = self._earlier + time.monotonic() - self._started
        model_dir_lib.write_train_time(
            self._model_dir,
            {
                "step": step,
                "seconds": round(seconds, 1),
                "attempts": self._attempts,
                "complete": self._complete,
            },
        )


def _check_weight_average(path: str, averaged: bool) -> None:
    """Refuses to resume a run with the weight average switched on or off (ValueError)."""
    names = {name for name, _ in tf.train.list_variables(path)}
    had = any(name.startswith("weight_average/") for name in names)
    if had != averaged:
        raise ValueError(
            f"{path}: the run was started {'with' if had else 'without'} a weight average "
            f"(--ema_decay); resume it {'with' if had else 'without'} one, or use a new "
            "--model_dir"
        )


def _train_loop(
    strategy,
    model_config,
    train_data,
    eval_data,
    train_config,
    runtime_config,
    model_dir,
    class_names,
    steps_per_epoch,
    total_steps,
    splits,
    record_start,
    restore_input_position=True,
    started=None,
) -> TrainResult:
    """The loop of `train_and_evaluate`, under the run's precision policy.

    Without `restore_input_position` a resumed run restores the model, optimizer and step but
    not the saved input iterator (whose pipeline no longer matches the data settings).
    `started` is the `time.monotonic()` at which this attempt at the run began.
    """
    chief = distribute.is_chief(strategy)
    with strategy.scope():
        model = create_model(model_config, train_config.seed)
        learning_rate = optimization.create_learning_rate(
            train_config, total_steps, steps_per_epoch
        )
        optimizer = optimization.create_optimizer(
            train_config, learning_rate, runtime_config.precision
        )
        optimizer.build(model.trainable_variables)
        averages = (
            weight_average.WeightAverage(model.trainable_variables, train_config.ema_decay)
            if train_config.ema_decay
            else None
        )
        step = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        train_confusion = metrics.ConfusionMatrix(len(class_names), name="train_confusion")
        eval_confusion = metrics.ConfusionMatrix(len(class_names), name="eval_confusion")
    train_split, eval_split = splits
    census = input_pipeline.label_census(train_data, train_split)
    train_steps.check_training_labels(census, train_data.root)
    iterator = train_steps.train_iterator(train_data, strategy, train_split)
    eval_dataset = train_steps.eval_dataset(
        eval_data, strategy, train_config.max_eval_batches, eval_split
    )
    panel_tiles = train_steps.panel_tiles(eval_data, train_config.num_image_tiles, eval_split)
    # The weight average (if any) travels with the optimizer state: resumed, not evaluated.
    state = {"optimizer": optimizer, "step": step}
    if averages is not None:
        state["weight_average"] = averages
    checkpoint = model_restore.model_checkpoint(model, iterator=iterator, **state)
    last_manager, best_manager = fault_tolerance.checkpoint_managers(
        model_dir,
        strategy,
        checkpoint,
        model_restore.model_checkpoint(model, step=step),
        train_config.keep_checkpoints,
    )
    without_input = model_restore.model_checkpoint(model, **state)
    if last_manager.latest_checkpoint:
        _check_weight_average(last_manager.latest_checkpoint, averages is not None)
    resumed = fault_tolerance.resume(
        model_dir, strategy, last_manager, checkpoint, without_input, restore_input_position
    )
    initial_step = int(step.numpy())
    record_start()
    clock = TrainClock(model_dir, initial_step, chief, started)
    logging.info(
        "%s at step %d of %d (%d per epoch)",
        "resuming" if resumed else "starting",
        initial_step,
        total_steps,
        steps_per_epoch,
    )
    # Every worker reads the best kappa so far, so all of them agree on when to save the best.
    best = model_dir_lib.read_best_metrics(model_dir)
    best_kappa = best["kappa"] if best else -math.inf

    train_function = train_steps.make_train_function(
        strategy,
        model,
        optimizer,
        train_confusion,
        step,
        runtime_config.jit_compile,
        class_weights=train_steps.loss_class_weights(
            census, train_config.class_weight_power, class_names
        ),
        weight_average=averages,
    )
    eval_function = train_steps.make_eval_function(strategy, model, eval_confusion)
    writers = summaries.Writers(model_dir, chief)
    hparams = _hparams(model=model_config, data=train_data, train=train_config, run=runtime_config)
    summaries.write_hparams(writers.train, hparams)
    progress = summaries.Progress(total_steps, initial_step, train_data.batch_size)

    def run_evaluation(current: int) -> dict | None:
        # With a weight average, the model validates (and is saved as the best) with it.
        with averages.swapped() if averages is not None else contextlib.nullcontext():
            return validate(current)

    def validate(current: int) -> dict | None:
        nonlocal best_kappa
        summary, matrix = evaluate(eval_function, eval_dataset, eval_confusion, class_names)
        if panel_tiles is not None:
            # Every worker runs the model (reading its variables may need collectives).
            logits = model({key: panel_tiles[key] for key in input_pipeline.MODEL_KEYS})
            summaries.write_tile_panels(writers.validation, current, panel_tiles, logits)
        if summary is None:
            return None
        scalars = {key: summary[key] for key in summaries.SCALAR_KEYS}
        summaries.write_scalars(writers.validation, current, scalars)
        summaries.write_confusion_matrix(writers.validation, current, matrix, class_names)
        writers.flush()
        text = " ".join(f"{key} {value:.4f}" for key, value in scalars.items())
        progress.message(f"validation at step {current}: {text}")
        if summary["kappa"] > best_kappa:
            best_kappa = summary["kappa"]
            fault_tolerance.save_best(model_dir, strategy, best_manager, current, summary)
        if chief:
            model_dir_lib.write_validated_step(model_dir, current)
        return summary

    def is_validation_step(current: int) -> bool:
        if current == total_steps:
            return True
        if train_config.eval_every:
            return current % train_config.eval_every == 0
        return current % steps_per_epoch == 0

    validated = model_dir_lib.read_validated_step(model_dir)
    if not resumed and chief:
        model_dir_lib.write_validated_step(model_dir, 0)
    elif (
        validated is not None
        and validated < initial_step < total_steps
        and is_validation_step(initial_step)
    ):
        progress.message(
            f"validating step {initial_step} first: the run stopped before its validation ended"
        )
        run_evaluation(initial_step)
    current, last_saved, validation, stopped = initial_step, initial_step, None, False
    losses, step_seconds = [], 0.0  # since the last training summary
    profiler = profiling.Profiler(
        model_dir, initial_step, runtime_config.profile_steps, progress, chief
    )
    with fault_tolerance.stop_on_sigterm() as stop:
        while current < total_steps and not stopped:
            profiler.before_step(current)
            start = time.monotonic()
            loss, stopped = train_function(iterator, tf.constant(stop.requested))
            loss, stopped = float(loss), bool(stopped)  # waits for the step to finish
            step_seconds += time.monotonic() - start  # samples/s count training steps only
            current += 1
            profiler.after_step(current)
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss} at step {current}")
            losses.append(loss)
            progress.update(current, loss)
            end_of_epoch = current % steps_per_epoch == 0
            last_step = current == total_steps
            if current % train_config.summary_every == 0 or end_of_epoch or last_step or stopped:
                matrix = train_confusion.result().numpy()  # a cross-replica sum: all workers
                train_confusion.reset_state()
                scalars = summaries.train_scalars(
                    matrix,
                    class_names,
                    losses,
                    float(tf.convert_to_tensor(optimizer.learning_rate)),
                    len(losses) * train_data.batch_size / step_seconds,
                )
                summaries.write_scalars(writers.train, current, scalars)
                losses, step_seconds = [], 0.0
            every = train_config.checkpoint_every
            if end_of_epoch or (every and current % every == 0) or last_step or stopped:
                last_manager.save(checkpoint_number=current)
                last_saved = current
                clock.record(current)
            if is_validation_step(current) and not stopped:
                validation = run_evaluation(current)
    profiler.stop()
    if stopped:
        progress.message(f"stopped by SIGTERM: checkpoint saved at step {last_saved}")
    elif initial_step >= total_steps:
        progress.message(f"already trained for {total_steps} steps: evaluating only")
        validation = run_evaluation(current)
    writers.close()
    return TrainResult(current, total_steps, steps_per_epoch, initial_step, validation, stopped)
