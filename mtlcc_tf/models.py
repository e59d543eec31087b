"""Builds the Keras models of a `ModelConfig`, and an analysis view of their recurrent states."""

import keras

from mtlcc_tf.layers import (
    BandStandardization,
    ClassificationHead,
    ConvRNNEncoder,
    DateEncoding,
    StockConvLSTMEncoder,
    TemporalPooling,
)
from mtlcc_tf.layers.attention import TemporalAttentionEncoder
from mtlcc_tf.layers.transformer import TemporoSpatialTransformer
from mtlcc_tf.model_config import ATTENTION, TRANSFORMER, ModelConfig

ENCODER_NAME = "encoder"
# Layers between the model input and the encoder, in this order, where the config has them.
BAND_STANDARDIZATION = "band_standardization"
DATE_ENCODING = "date_encoding"


def build_encoder(model_config: ModelConfig) -> keras.layers.Layer:
    """The recurrent encoder of `model_config`, named `ENCODER_NAME`."""
    config = model_config
    if config.convcell == ATTENTION:
        return TemporalAttentionEncoder(
            filters=config.convrnn_filters,
            num_heads=config.attention_heads,
            key_dim=config.attention_key_dim,
            dropout=config.dropout,
            widths=config.attention_widths or None,
            decoder_widths=config.attention_decoder_widths or None,
            d_model=config.attention_d_model or None,
            name=ENCODER_NAME,
        )
    if config.convcell == TRANSFORMER:
        return TemporoSpatialTransformer(
            outputs=config.num_classes,
            dim=config.convrnn_filters,
            depth=config.convrnn_layers,
            num_heads=config.attention_heads,
            key_dim=config.attention_key_dim,
            patch_size=config.patch_size,
            dropout=config.dropout,
            name=ENCODER_NAME,
        )
    if config.convcell == "keras_convlstm":
        return StockConvLSTMEncoder(
            filters=config.convrnn_filters,
            kernel_size=config.convrnn_kernel,
            num_layers=config.convrnn_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            aggregation=config.aggr_strat,
            unroll=config.unroll,
            name=ENCODER_NAME,
        )
    return ConvRNNEncoder(
        filters=config.convrnn_filters,
        kernel_size=1 if config.pixelwise else config.convrnn_kernel,
        cell_type=config.convcell,
        num_layers=config.convrnn_layers,
        bidirectional=config.bidirectional,
        normalization=config.normalization,
        spatial_normalization=not config.pixelwise and config.normalization_scope == "tile",
        padding=config.padding,
        peepholes=config.peepholes,
        dropout=config.dropout,
        aggregation=config.aggr_strat,
        unroll=config.unroll,
        name=ENCODER_NAME,
    )


def build_model(model_config: ModelConfig) -> keras.Model:
    """Builds the segmentation model; layers follow the global Keras dtype policy.

    The model takes `{"inputs": float [batch, time, height, width, input_channels],
    "sequence_length": int32 [batch]}` (padding at the end of the time axis) and returns
    float32 logits [batch, height, width, num_classes]. Time, height and width may vary
    between calls (height and width are fixed to `tile_size` if it is set).

    Raises:
        ValueError: If `model_config` is invalid.
    """
    config = model_config.validate()
    size = config.tile_size
    # [batch, time, height, width, channels]
    inputs = keras.Input((None, size, size, config.input_channels), name="inputs")
    sequence_length = keras.Input((), dtype="int32", name="sequence_length")

    encoder_inputs = inputs
    if config.band_mean:
        encoder_inputs = BandStandardization(
            config.band_mean, config.band_std, name=BAND_STANDARDIZATION
        )(encoder_inputs)
    if config.date_harmonics:
        # In float32 before the transformer, whose day table needs the exact doy channel.
        dtype = "float32" if config.convcell == TRANSFORMER else None
        encoder_inputs = DateEncoding(config.date_harmonics, name=DATE_ENCODING, dtype=dtype)(
            encoder_inputs
        )
    features = build_encoder(config)(encoder_inputs, sequence_length)
    head = ClassificationHead(
        num_classes=config.num_classes,
        kernel_size=1 if config.pixelwise else 3,
        kind=config.head,
        padding=config.padding,
        name="head",
    )
    if config.aggr_strat == "state":
        logits = head(features)
    else:
        # [batch, time, height, width, num_classes] -> [batch, height, width, num_classes]
        per_step_logits = head(features, sequence_length)
        mode = "avg" if config.aggr_strat == "avg_output" else "sum"
        logits = TemporalPooling(mode, name="temporal_pooling")(per_step_logits, sequence_length)
    return keras.Model(
        {"inputs": inputs, "sequence_length": sequence_length},
        logits,
        name=f"mtlcc_{config.convcell}",
    )


def _encoder_inputs(model: keras.Model, inputs):
    """`inputs` through `model`'s own layers before its encoder (standardisation, dates)."""
    names = {layer.name for layer in model.layers}
    for name in (BAND_STANDARDIZATION, DATE_ENCODING):
        if name in names:
            inputs = model.get_layer(name)(inputs)
    return inputs


class EncoderStateSequences(keras.layers.Layer):
    """A view of a `ConvRNNEncoder` returning its per-step states; owns no weights.

    Calling the encoder itself a second time in a functional graph with another output
    structure is not supported by Keras, hence this thin layer.
    """

    def __init__(self, encoder: ConvRNNEncoder, **kwargs):
        kwargs.setdefault("dtype", encoder.dtype_policy)
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs, sequence_length):
        return self.encoder(inputs, sequence_length, return_state_sequences=True)

    def compute_output_spec(self, inputs, sequence_length):
        return self.encoder.compute_output_spec(
            inputs, sequence_length, return_state_sequences=True
        )


def build_analysis_model(model: keras.Model) -> keras.Model:
    """A view of `model` returning every per-step recurrent state; it shares all weights.

    For the cloud-cell study: the returned model takes the same inputs as `model` and returns
    `{"layer{l}_{forward|backward}_{hidden|cell}": float32 [batch, time, height, width,
    filters]}` in input time order, zero at padding steps ('cell' for the LSTM only: the
    layer-normalised cell state the cell carries). It is a view for analysis, not meant to be
    saved: build it again from a loaded `model`.

    Raises:
        ValueError: If `model` was built with convcell='keras_convlstm', whose stock layer does
            not expose per-step cell states.
    """
    encoder = model.get_layer(ENCODER_NAME)
    if not isinstance(encoder, ConvRNNEncoder):
        raise ValueError(
            "build_analysis_model needs convcell 'lstm' or 'gru'; "
            f"got an encoder of type {type(encoder).__name__}"
        )
    inputs = {tensor.name: tensor for tensor in model.inputs}
    encoder_inputs = _encoder_inputs(model, inputs["inputs"])
    view = EncoderStateSequences(encoder, name="state_sequences")
    states = view(encoder_inputs, inputs["sequence_length"])
    return keras.Model(inputs, states, name=f"{model.name}_states")


class EncoderAttention(keras.layers.Layer):
    """A view of a `TemporalAttentionEncoder` returning its attention weights; owns no weights."""

    def __init__(self, encoder: TemporalAttentionEncoder, **kwargs):
        kwargs.setdefault("dtype", encoder.dtype_policy)
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs, sequence_length):
        return self.encoder(inputs, sequence_length, return_attention=True)[1]

    def compute_output_spec(self, inputs, sequence_length):
        return self.encoder.compute_output_spec(inputs, sequence_length, return_attention=True)[1]


def build_attention_model(model: keras.Model) -> keras.Model:
    """A view of a `convcell='utae'` model returning its attention weights per date, float32
    [batch, heads, time, height / 2, width / 2] (0 at padding dates); shares all weights.

    Raises:
        ValueError: for a model without a temporal-attention encoder.
    """
    encoder = model.get_layer(ENCODER_NAME)
    if not isinstance(encoder, TemporalAttentionEncoder):
        raise ValueError(f"build_attention_model needs convcell '{ATTENTION}'")
    inputs = {tensor.name: tensor for tensor in model.inputs}
    encoder_inputs = _encoder_inputs(model, inputs["inputs"])
    attention = EncoderAttention(encoder, name="attention")(
        encoder_inputs, inputs["sequence_length"]
    )
    return keras.Model(inputs, attention, name=f"{model.name}_attention")
