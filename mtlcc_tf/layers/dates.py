"""Fourier features of the acquisition date, appended to every observation inside the model."""

import math

import keras
import tensorflow as tf

from mtlcc_tf.choices import DOY_CHANNEL


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class DateEncoding(keras.layers.Layer):
    """Appends sin and cos of 2πk·doy/365, k = 1..num_harmonics, to every observation.

    The original gives the date as one linear channel (doy / 365); a cell then has to learn
    thresholds on it to time phenological events. Periodic features at several frequencies make
    "which part of the season" a linear read-out. Computed inside the model from the doy
    channel, so records, the input pipeline and the exported signature stay as they are.
    Padding steps (doy 0, all-zero inputs) stay all zero.

    Call arguments:
        inputs: [batch, time, height, width, channels] with doy / 365 at `DOY_CHANNEL`.

    Returns:
        [batch, time, height, width, channels + 2 * num_harmonics].

    Args:
        num_harmonics: Frequencies 1..num_harmonics per year.
    """

    def __init__(self, num_harmonics: int, **kwargs):
        super().__init__(**kwargs)
        if num_harmonics < 1:
            raise ValueError(f"num_harmonics must be >= 1, got {num_harmonics}")
        self.num_harmonics = num_harmonics

    def call(self, inputs):
        doy = inputs[..., DOY_CHANNEL : DOY_CHANNEL + 1]  # [..., 1]
        real = tf.cast(doy > 0, inputs.dtype)
        frequencies = tf.range(1, self.num_harmonics + 1, dtype=inputs.dtype)
        angle = 2.0 * math.pi * doy * frequencies  # [..., num_harmonics]
        features = tf.concat([tf.sin(angle), tf.cos(angle)], axis=-1) * real
        return tf.concat([inputs, features], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2 * self.num_harmonics)

    def get_config(self):
        config = super().get_config()
        config.update(num_harmonics=self.num_harmonics)
        return config
