"""Learning-rate schedules and optimizers built from a TrainConfig."""

from __future__ import annotations

import keras
import pytest

from mtlcc_tf import optimization
from mtlcc_tf.train_config import TrainConfig


def test_learning_rate_schedules():
    config = TrainConfig(learning_rate=1.0, schedule="cosine", warmup_steps=10)
    schedule = optimization.create_learning_rate(config, total_steps=110, steps_per_epoch=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-6)
    assert optimization.create_learning_rate(TrainConfig(), 10, 5) == TrainConfig().learning_rate
    exponential = TrainConfig(learning_rate=1.0, schedule="exponential", decay_rate=0.5)
    schedule = optimization.create_learning_rate(exponential, total_steps=100, steps_per_epoch=10)
    assert float(schedule(20)) == pytest.approx(0.25)


def test_optimizers_take_their_settings_and_only_float16_scales_the_loss():
    config = TrainConfig(optimizer="adam", adam_epsilon=1e-3, clipnorm=2.0)
    adam = optimization.create_optimizer(config, 0.1, "mixed_bfloat16")
    assert isinstance(adam, keras.optimizers.Adam)
    assert (adam.epsilon, adam.clipnorm) == (1e-3, 2.0)
    scaled = optimization.create_optimizer(config, 0.1, "mixed_float16")
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    sgd = optimization.create_optimizer(TrainConfig(optimizer="sgd"), 0.1, "float32")
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
