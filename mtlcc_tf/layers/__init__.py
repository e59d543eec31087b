"""Keras 3 layers of mtlcc-tf: convolutional recurrent cells, encoders and heads."""

from mtlcc_tf.layers.attention import TemporalAttentionEncoder
from mtlcc_tf.layers.cells import ConvGRUCell, ConvLSTMCell, ConvRecurrentCell
from mtlcc_tf.layers.dates import DateEncoding
from mtlcc_tf.layers.encoder import ConvRNNEncoder
from mtlcc_tf.layers.heads import ClassificationHead, TemporalPooling
from mtlcc_tf.layers.inputs import BandStandardization
from mtlcc_tf.layers.recurrence import run_recurrence
from mtlcc_tf.layers.stock import StockConvLSTMEncoder

__all__ = [
    "BandStandardization",
    "ClassificationHead",
    "ConvGRUCell",
    "ConvLSTMCell",
    "ConvRNNEncoder",
    "ConvRecurrentCell",
    "DateEncoding",
    "StockConvLSTMEncoder",
    "TemporalAttentionEncoder",
    "TemporalPooling",
    "run_recurrence",
]
