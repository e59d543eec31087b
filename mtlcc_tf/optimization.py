"""The optimizer and its learning-rate schedule (constant, cosine, exponential; warm-up)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtlcc_tf.train_config import TrainConfig


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `after(step - warmup_steps)`."""

    def __init__(self, after: Any, warmup_steps: int, peak: float):
        self.after = after
        self.warmup_steps = warmup_steps
        self.peak = peak

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        after = self.after(tf.maximum(step - self.warmup_steps, 0.0))
        warm = self.peak * step / max(self.warmup_steps, 1)
        return tf.where(step < self.warmup_steps, warm, tf.cast(after, tf.float32))

    def get_config(self) -> dict[str, Any]:
        return {"warmup_steps": self.warmup_steps, "peak": self.peak}


def create_learning_rate(config: TrainConfig, total_steps: int, steps_per_epoch: int) -> Any:
    """A float (constant, no warm-up) or a LearningRateSchedule of the optimizer's step."""
    peak = config.learning_rate
    if config.schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(
            peak, decay_steps=max(1, total_steps - config.warmup_steps)
        )
    elif config.schedule == "exponential":
        after = keras.optimizers.schedules.ExponentialDecay(
            peak, decay_steps=config.decay_steps or steps_per_epoch, decay_rate=config.decay_rate
        )
    elif config.warmup_steps == 0:
        return peak
    else:
        after = lambda step: peak  # noqa: E731 - a constant after the warm-up
    return WarmupSchedule(after, config.warmup_steps, peak) if config.warmup_steps else after


def create_optimizer(config: TrainConfig, learning_rate: Any, precision: str):
    """The Keras optimizer; wrapped in a LossScaleOptimizer for float16 (not for bfloat16).

    Under a distribution strategy create it inside `strategy.scope()`. Note that Keras clips
    (`clipnorm`) each replica's share of the gradient, before the cross-replica sum.
    """
    common = {"learning_rate": learning_rate, "clipnorm": config.clipnorm}
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(epsilon=config.adam_epsilon, **common)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            weight_decay=config.weight_decay, epsilon=config.adam_epsilon, **common
        )
    else:
        optimizer = keras.optimizers.SGD(momentum=0.9, **common)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
