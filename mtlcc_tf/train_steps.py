"""Per-replica train and eval steps, their distributed tf.functions and inputs, evaluation."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from data_pipeline import input_pipeline
from data_pipeline.data_config import DataConfig
from mtlcc_tf import distribute, metrics

# What the replicas get of a batch (strings such as tile ids stay on the host).
STEP_KEYS = ("inputs", "sequence_length", "labels")
PANEL_KEYS = ("inputs", "sequence_length", "labels", "cloud_mask", "has_cloud_mask", "tileid")


def compute_loss_and_gradients(
    model, optimizer, batch: dict, global_known: tf.Tensor, class_weights=None
):
    """Forward and backward pass of one replica.

    The loss is this replica's summed cross-entropy over known pixels divided by the GLOBAL
    number of known pixels, so that summing gradients over replicas gives the gradient of the
    global mean. `class_weights` ([num_classes] floats, optional) weight each pixel's term.

    Returns:
        (loss: this replica's share of the global mean loss, gradients, logits).
    """
    with tf.GradientTape() as tape:
        logits = model({key: batch[key] for key in input_pipeline.MODEL_KEYS}, training=True)
        sum_loss, _ = metrics.masked_cross_entropy(batch["labels"], logits, class_weights)
        loss = tf.math.divide_no_nan(sum_loss, global_known)
        scaled_loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    return loss, gradients, logits


def train_step(
    model, optimizer, confusion, batch: dict, gradients_fn: Callable | None = None
) -> tf.Tensor:
    """One replica's training step (call through `strategy.run`); returns its share of the loss.

    Args:
        model: the Keras model (created in the strategy's scope, like the next two).
        optimizer: the Keras optimizer.
        confusion: a `metrics.ConfusionMatrix` of the training batches.
        batch: [per_replica_batch, ...] inputs, sequence_length and labels.
        gradients_fn: `compute_loss_and_gradients`, possibly XLA-compiled.
    """
    gradients_fn = gradients_fn or compute_loss_and_gradients
    local_known = tf.reduce_sum(tf.cast(batch["labels"] >= 0, tf.float32))
    global_known = tf.distribute.get_replica_context().all_reduce("SUM", local_known)
    loss, gradients, logits = gradients_fn(model, optimizer, batch, global_known)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    confusion.update_state(batch["labels"], logits)
    return loss


def eval_step(model, confusion, batch: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """One replica's evaluation step: (summed cross-entropy, number of known pixels)."""
    logits = model({key: batch[key] for key in input_pipeline.MODEL_KEYS}, training=False)
    confusion.update_state(batch["labels"], logits)
    return metrics.masked_cross_entropy(batch["labels"], logits)


def make_train_function(
    strategy: tf.distribute.Strategy,
    model,
    optimizer,
    confusion,
    step: tf.Variable,
    jit_compile: bool,
    *,
    class_weights=None,
    weight_average=None,
) -> Callable:
    """A tf.function: (iterator, stop_requested) -> (global mean loss, any worker stopping).

    The stop flags are summed over replicas, so that all workers of a multi-worker run leave
    the loop at the same step when one of them receives SIGTERM. `class_weights` (optional,
    [num_classes] floats) weight the training loss per class; `weight_average` (optional, a
    `weight_average.WeightAverage`) is updated after every step.
    """
    gradients_fn = functools.partial(compute_loss_and_gradients, class_weights=class_weights)
    if jit_compile:
        gradients_fn = tf.function(gradients_fn, jit_compile=True)

    def replica_fn(batch, stop):
        loss = train_step(model, optimizer, confusion, batch, gradients_fn)
        return loss, tf.cast(stop, tf.int32)

    @tf.function
    def train_function(iterator: Iterator, stop_requested: tf.Tensor):
        batch = distribute.split_stacked(strategy, next(iterator))
        losses, stops = strategy.run(replica_fn, args=(batch, stop_requested))
        if weight_average is not None:
            weight_average.update()
        step.assign_add(1)
        loss = strategy.reduce("SUM", losses, axis=None)
        return loss, strategy.reduce("SUM", stops, axis=None) > 0

    return train_function


def make_eval_function(strategy: tf.distribute.Strategy, model, confusion) -> Callable:
    """A tf.function: distributed batch -> (summed cross-entropy, known pixels), global sums."""

    @tf.function
    def eval_function(batch):
        sums = strategy.run(functools.partial(eval_step, model, confusion), args=(batch,))
        return [strategy.reduce("SUM", value, axis=None) for value in sums]

    return eval_function


def evaluate(eval_function, dataset, confusion, class_names) -> tuple[dict | None, np.ndarray]:
    """Runs a distributed dataset through `eval_function`; returns (summary, confusion matrix).

    The summary is `metrics.summarize` plus `loss`; None when no pixel of the split is known.
    """
    confusion.reset_state()
    total_loss, total_known = 0.0, 0.0
    for batch in dataset:
        sum_loss, known = eval_function(batch)
        total_loss += float(sum_loss)
        total_known += float(known)
    matrix = confusion.result().numpy()
    if total_known == 0:
        logging.warning("validation split has no known pixel: no validation metrics")
        return None, matrix
    summary = metrics.summarize(matrix, class_names)
    summary["loss"] = total_loss / total_known
    return summary, matrix


def train_iterator(
    train_data: DataConfig, strategy, split: input_pipeline.SplitFiles | None = None
) -> Iterator:
    """This worker's training input: [num_local_replicas, per_replica_batch, ...] elements."""
    dataset = input_pipeline.build_dataset(train_data, distribute.input_context(strategy), split)
    dataset = dataset.map(lambda batch: {key: batch[key] for key in STEP_KEYS})
    return iter(dataset.batch(distribute.num_local_replicas(strategy), drop_remainder=True))


def pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a partial batch with empty tiles (all labels unknown) up to `batch_size`.

    Full batches split evenly across replicas, so no replica meets an empty batch (which some
    ops, e.g. reflect padding, reject), and the padding tiles count in no metric.
    """
    missing = batch_size - tf.shape(batch["labels"])[0]
    padded = {}
    for key, value in batch.items():
        fill = {"labels": -1, "sequence_length": 1}.get(key, 0)
        paddings = [[0, missing]] + [[0, 0]] * (len(value.shape) - 1)
        value = tf.pad(value, paddings, constant_values=tf.cast(fill, value.dtype))
        padded[key] = tf.ensure_shape(value, [batch_size, *value.shape[1:]])
    return padded


def eval_dataset(
    eval_data: DataConfig,
    strategy,
    max_batches: int | None,
    split: input_pipeline.SplitFiles | None = None,
):
    """The validation split as global batches split across replicas; the last one is padded."""
    dataset = input_pipeline.build_dataset(eval_data, split=split)
    dataset = dataset.map(
        lambda batch: pad_batch({key: batch[key] for key in STEP_KEYS}, eval_data.batch_size)
    )
    if max_batches:
        dataset = dataset.take(max_batches)
    options = tf.data.Options()
    # Every worker reads every file and keeps its share of the batches: exact for any number
    # of files, and evaluation is cheap next to training.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def panel_tiles(
    eval_data: DataConfig, num_tiles: int, split: input_pipeline.SplitFiles | None = None
) -> dict[str, np.ndarray] | None:
    """The first `num_tiles` validation tiles (fixed for the whole run) as numpy arrays."""
    if num_tiles == 0:
        return None
    config = dataclasses.replace(eval_data, batch_size=num_tiles, drop_remainder=False)
    for batch in input_pipeline.build_dataset(config, split=split).take(1):
        return {key: batch[key].numpy() for key in PANEL_KEYS}
    return None


def check_training_labels(census: input_pipeline.LabelCensus, root: str) -> None:
    """Logs how many training tiles hold no labelled pixel (they are skipped); raises
    ValueError naming the root if none holds one."""
    if not census.labelled_tiles:
        raise ValueError(
            f"{root}: none of the {census.tiles} training tiles holds a labelled pixel "
            "(every label is 0, unknown): nothing to learn from"
        )
    unlabelled = census.tiles - census.labelled_tiles
    if unlabelled:
        log = logging.warning if unlabelled * 2 > census.tiles else logging.info
        log(
            "%d of %d training tiles hold no labelled pixel: skipped in training batches",
            unlabelled, census.tiles,
        )  # fmt: skip


def loss_class_weights(
    census: input_pipeline.LabelCensus, power: float, class_names
) -> tuple | None:
    """The loss's class weights for `power` (None when 0), from the training split's labels."""
    if not power:
        return None
    weights = metrics.class_weights(census.counts, power)
    pairs = zip(class_names, weights, strict=True)
    logging.info("class weights (power %g): %s", power, ", ".join(f"{n} {w:.2f}" for n, w in pairs))
    return weights
