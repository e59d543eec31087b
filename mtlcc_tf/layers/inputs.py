"""Per-band standardisation of the reflectances, inside the model."""

import keras
import tensorflow as tf

from mtlcc_tf.layers.dates import DOY_CHANNEL


@keras.saving.register_keras_serializable(package="mtlcc_tf")
class BandStandardization(keras.layers.Layer):
    """(x - mean) / std on the first `len(mean)` channels; the others pass unchanged.

    Reflectances x 1e-4 of raw, cloudy series span small and unequal ranges (per band a mean
    of 0.1-0.45 and a standard deviation of 0.07-0.25 on the simulated data); standardised,
    every band starts on an equal footing for the first convolution. The statistics come
    from the training tiles (`data_pipeline.input_pipeline.band_statistics`) and are part of
    the model's configuration, so evaluation, export and prediction apply the same.
    Padding steps (doy 0, all-zero inputs) stay all zero. Computed in float32.

    Call arguments:
        inputs: [batch, time, height, width, channels] with doy / 365 at `DOY_CHANNEL`.

    Args:
        mean: per-band means, one per standardised channel.
        std: per-band standard deviations (> 0), as many as `mean`.
    """

    def __init__(self, mean, std, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        if not self.mean or len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(
                f"BandStandardization needs as many means as standard deviations (> 0), got "
                f"{len(self.mean)} means and stds {self.std}"
            )
        if len(self.mean) > DOY_CHANNEL:
            raise ValueError(
                f"BandStandardization: {len(self.mean)} bands would reach the day-of-year "
                f"channel {DOY_CHANNEL}"
            )

    def call(self, inputs):
        bands = len(self.mean)
        real = tf.cast(inputs[..., DOY_CHANNEL : DOY_CHANNEL + 1] > 0, inputs.dtype)
        mean = tf.constant(self.mean, inputs.dtype)
        std = tf.constant(self.std, inputs.dtype)
        standardized = (inputs[..., :bands] - mean) / std * real
        return tf.concat([standardized, inputs[..., bands:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std))
        return config
