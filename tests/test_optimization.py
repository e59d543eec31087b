"""Learning-rate schedules and optimizers built from a TrainConfig."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtlcc_tf import optimization, weight_average
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


def test_weight_average_follows_the_weights_and_swaps_them_in_and_back():
    kernel = keras.Variable(np.array([1.0, 2.0], np.float32))
    bias = keras.Variable(np.array(4.0, np.float32))
    average = weight_average.WeightAverage([kernel, bias], decay=0.5)
    kernel.assign([3.0, 6.0])
    average.update()  # the first update copies the weights
    np.testing.assert_allclose(average.averages[0].numpy(), [3.0, 6.0])
    kernel.assign([14.0, 17.0])
    bias.assign(15.0)
    average.update()  # then decay min(0.5, 1 / 11): 1/11 of the old average, 10/11 of the new
    expected_kernel = np.array([3.0, 6.0]) / 11 + np.array([14.0, 17.0]) * 10 / 11
    np.testing.assert_allclose(average.averages[0].numpy(), expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(average.averages[1].numpy(), 4.0 / 11 + 150.0 / 11, rtol=1e-6)
    for _ in range(200):
        average.update()  # towards the weights, at 0.5 per step once n / (n + 10) passes it
    np.testing.assert_allclose(average.averages[0].numpy(), [14.0, 17.0], rtol=1e-6)
    assert int(average.updates.numpy()) == 202
    kernel.assign([-1.0, -1.0])
    held = average.averages[0].numpy().copy()
    with average.swapped():
        np.testing.assert_array_equal(kernel.numpy(), held)
    np.testing.assert_array_equal(kernel.numpy(), [-1.0, -1.0])
    np.testing.assert_array_equal(average.averages[0].numpy(), held)
    with pytest.raises(ValueError, match="decay"):
        weight_average.WeightAverage([kernel], decay=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0).validate()
