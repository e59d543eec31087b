"""An exponential moving average of a model's trainable weights (Polyak averaging).

Training keeps updating the model's own weights; the average follows them,

    average <- d * average + (1 - d) * weights,   d = min(decay, n / (n + 10))

after the n-th update (n counted from 0), so the first update copies the weights and the
average does not lean on the initial values early in a run. Validation and the best checkpoint
use the average (`swapped`): the model then carries the averaged weights, and everything that
reads a checkpoint (evaluate, export, predict) needs nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import tensorflow as tf


class WeightAverage(tf.Module):
    """Shadow copies of `variables` and their update count, checkpointed with the run.

    Create it inside the distribution strategy's scope (as the model), after the model's
    variables exist; call `update` in cross-replica context, after each optimizer step.
    """

    def __init__(self, variables: Sequence[tf.Variable], decay: float):
        super().__init__(name="weight_average")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight average decay {decay!r} is invalid: must be in (0, 1)")
        self.decay = decay
        self._variables = list(variables)
        self.averages = [
            tf.Variable(tf.identity(variable), trainable=False, name=f"average_{index}")
            for index, variable in enumerate(self._variables)
        ]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")

    def update(self) -> None:
        """One step of the average towards the variables' current values."""
        count = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(tf.constant(self.decay, tf.float32), count / (count + 10.0))
        for average, variable in zip(self.averages, self._variables, strict=True):
            value = tf.cast(tf.identity(variable), average.dtype)
            average.assign(decay * average + (1.0 - decay) * value)
        self.updates.assign_add(1)

    @tf.function
    def _swap(self) -> None:
        for average, variable in zip(self.averages, self._variables, strict=True):
            held = tf.identity(variable)
            variable.assign(tf.identity(average))
            average.assign(held)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it."""
        self._swap()
        try:
            yield
        finally:
            self._swap()
