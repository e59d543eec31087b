"""Frozen, validated configuration dataclasses; flags are turned into these once, at start-up."""

import dataclasses
import math

from mtlcc_tf import choices
from mtlcc_tf.choices import DOY_CHANNEL

# The choices are the layers' own (one definition each); the stock cell is built by models.
ATTENTION = "utae"  # the temporal-attention encoder (layers/attention.py), not a recurrent cell
TRANSFORMER = "tsvit"  # the temporo-spatial transformer (layers/transformer.py)
CONVCELLS = (*choices.RECURRENT_CELLS, "keras_convlstm", ATTENTION, TRANSFORMER)
PADDINGS = choices.PADDINGS
AGGREGATION_STRATEGIES = choices.AGGREGATIONS
HEADS = choices.HEAD_KINDS
NORMALIZATION_SCOPES = ("tile", "pixel")
# Fields that only some encoders read: set for another one, they are an error, not ignored.
FIELD_CELLS = {
    "attention_widths": (ATTENTION,),
    "attention_decoder_widths": (ATTENTION,),
    "attention_d_model": (ATTENTION,),
    "attention_heads": (ATTENTION, TRANSFORMER),
    "attention_key_dim": (ATTENTION, TRANSFORMER),
    "patch_size": (TRANSFORMER,),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What `mtlcc_tf.models.build_model` builds.

    Attributes:
        num_classes: Classes scored by the head (the paper: 17; 'unknown' is not a class).
        input_channels: Channels per observation (the original: 13 bands + doy + year = 15).
        convcell: 'lstm' or 'gru' (the original's cells), or 'keras_convlstm' (baseline:
            stock `keras.layers.ConvLSTM2D`, needs `normalization=False`, `padding='same'`
            and `tile_size`); or 'utae', a U-TAE-style temporal-attention encoder
            (`layers.attention`: no recurrence; `convrnn_filters` is its width at the tile's
            resolution, a multiple of 4; the recurrent options do not apply); or 'tsvit', a
            TSViT-style temporo-spatial transformer (`layers.transformer`: `convrnn_filters`
            is its token width, `convrnn_layers` the depth of its temporal and of its spatial
            transformer, `attention_heads` and `attention_key_dim` its heads, `patch_size`
            its patches; one class token per class, so its features are `num_classes` wide).
        convrnn_filters: Hidden channels per direction (the released models: 256).
        convrnn_kernel: Side of the square recurrent kernels (ignored when `pixelwise`).
        convrnn_layers: Stacked recurrent layers.
        bidirectional: Add a backward direction with its own weights.
        normalization: Layer-normalise gate pre-activations (else biased convolutions).
        normalization_scope: Statistics of that normalisation: 'tile' (over height × width ×
            channels of each gate, the original) or 'pixel' (over each pixel's channels, so a
            pixel's normalised gates do not depend on the rest of its tile, e.g. on clouds
            elsewhere in it). `pixelwise` always normalises per pixel.
        padding: Spatial padding of the convolutions, 'reflect' (the original) or 'same'.
        peepholes: LSTM peephole connections (per channel).
        aggr_strat: 'state' (classify the final states), 'avg_output' / 'sum_output' (classify
            every step, average / sum the logits over real steps).
        head: 'original' (conv without bias + batch norm + leaky ReLU), 'logits' (conv with
            bias) or 'hidden' (a hidden layer of 64 channels with batch norm and ReLU before the
            original's block, as a 1x1 conv: a nonlinear per-pixel classifier of the features).
        date_harmonics: Append sin and cos of 2πk·doy/365, k = 1..date_harmonics, to every
            observation inside the model (0: the original's linear doy channel only).
        pixelwise: Per-pixel baseline: 1x1 kernels everywhere and per-pixel normalisation, so
            no spatial context at all.
        dropout: Dropout rate on the input of every recurrent layer.
        unroll: Unroll the time loop when the number of steps is static (faster on CPU).
        tile_size: Static height and width of the model input, or None for any size (not
            allowed for 'keras_convlstm', whose zero state needs a static size).
        attention_widths: 'utae' only: the per-date encoder's channels per resolution level
            (each halves the resolution); empty: (convrnn_filters, 2 * convrnn_filters).
        attention_decoder_widths: 'utae' only: the decoder's channels per level, the last
            equal to the encoder's; empty: `attention_widths`. The model's features have
            the first entry's channels.
        attention_heads: 'utae' and 'tsvit' only: attention heads.
        attention_key_dim: 'utae' and 'tsvit' only: size of each head's keys and query.
        attention_d_model: 'utae' only: width of the attention (a projection of the lowest
            level to it); 0: the lowest level's width, without projection.
        patch_size: 'tsvit' only: side of its square patches in pixels.
        band_mean: Per-band means of the first `len(band_mean)` input channels (the
            reflectances); with `band_std`, the model standardises them first
            (`layers.BandStandardization`). Empty: the reflectances enter as they are (the
            original). `mtlcc_tf.train --standardize_bands` fills both from the training tiles.
        band_std: Per-band standard deviations (> 0), as many as `band_mean`.
    """

    num_classes: int
    input_channels: int = 15
    convcell: str = "lstm"
    convrnn_filters: int = 64
    convrnn_kernel: int = 3
    convrnn_layers: int = 1
    bidirectional: bool = True
    normalization: bool = True
    normalization_scope: str = "tile"
    padding: str = "reflect"
    peepholes: bool = False
    aggr_strat: str = "state"
    head: str = "original"
    date_harmonics: int = 0
    pixelwise: bool = False
    dropout: float = 0.0
    unroll: bool = True
    tile_size: int | None = None
    attention_widths: tuple[int, ...] = ()
    attention_decoder_widths: tuple[int, ...] = ()
    attention_heads: int = 4
    attention_key_dim: int = 8
    attention_d_model: int = 0
    patch_size: int = 2
    band_mean: tuple[float, ...] = ()
    band_std: tuple[float, ...] = ()

    def validate(self) -> "ModelConfig":
        """Checks every field.

        Returns:
            self, so that `ModelConfig(...).validate()` can be chained.

        Raises:
            ValueError: Naming the first bad field and why.
        """

        def require(condition: bool, field: str, why: str) -> None:
            if not condition:
                value = getattr(self, field)
                raise ValueError(f"ModelConfig.{field}={value!r} is invalid: {why}")

        def positive(field: str) -> None:
            value = getattr(self, field)
            require(isinstance(value, int) and value >= 1, field, "must be an integer >= 1")

        positive("input_channels")
        positive("convrnn_filters")
        positive("convrnn_kernel")
        positive("convrnn_layers")
        require(
            isinstance(self.num_classes, int) and self.num_classes >= 2,
            "num_classes",
            "must be an integer >= 2",
        )
        require(self.convcell in CONVCELLS, "convcell", f"must be one of {CONVCELLS}")
        require(self.convrnn_kernel % 2 == 1, "convrnn_kernel", "must be odd")
        require(self.padding in PADDINGS, "padding", f"must be one of {PADDINGS}")
        require(
            self.normalization_scope in NORMALIZATION_SCOPES,
            "normalization_scope",
            f"must be one of {NORMALIZATION_SCOPES}",
        )
        require(
            self.aggr_strat in AGGREGATION_STRATEGIES,
            "aggr_strat",
            f"must be one of {AGGREGATION_STRATEGIES}",
        )
        require(self.head in HEADS, "head", f"must be one of {HEADS}")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require(
            isinstance(self.date_harmonics, int) and self.date_harmonics >= 0,
            "date_harmonics",
            "must be an integer >= 0",
        )
        require(
            not self.date_harmonics or self.input_channels >= 15,
            "date_harmonics",
            "needs the 15 input channels of the original (doy / 365 in channel 13)",
        )
        require(not self.peepholes or self.convcell == "lstm", "peepholes", "needs convcell='lstm'")
        if self.tile_size is not None:
            positive("tile_size")
        require(
            len(self.band_mean) == len(self.band_std) <= min(self.input_channels, DOY_CHANNEL),
            "band_mean",
            f"needs as many values as band_std ({len(self.band_std)}), at most "
            f"{min(self.input_channels, DOY_CHANNEL)} (the channels before day of year)",
        )
        require(
            all(math.isfinite(value) for value in self.band_mean),
            "band_mean",
            "must be finite numbers",
        )
        require(
            all(math.isfinite(value) and value > 0 for value in self.band_std),
            "band_std",
            "must be finite numbers > 0",
        )
        if self.convcell in (ATTENTION, TRANSFORMER):
            name = self.convcell
            require(self.aggr_strat == "state", "aggr_strat", f"{name} pools the dates itself")
            require(not self.pixelwise, "pixelwise", f"not available for {name}")
            positive("attention_key_dim")
            positive("attention_heads")
        if self.convcell == ATTENTION:
            require(self.convrnn_filters % 4 == 0, "convrnn_filters", "utae needs a multiple of 4")
            widths = self.attention_widths or (self.convrnn_filters, 2 * self.convrnn_filters)
            problems = choices.attention_settings_problems(
                widths,
                self.attention_decoder_widths or widths,
                self.attention_heads,
                self.attention_d_model or None,
            )
            require(not problems, "attention_widths", "; ".join(problems))
        if self.convcell == TRANSFORMER:
            positive("patch_size")
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        for field, cells_using in FIELD_CELLS.items():
            require(
                self.convcell in cells_using or getattr(self, field) == defaults[field],
                field,
                f"only for convcell {' or '.join(repr(cell) for cell in cells_using)}",
            )
        if self.convcell == "keras_convlstm":
            stock = "keras.layers.ConvLSTM2D"
            require(not self.normalization, "normalization", f"{stock} has no normalisation")
            require(self.padding == "same", "padding", f"{stock} pads with zeros: use 'same'")
            require(not self.pixelwise, "pixelwise", f"not available for {stock}")
            require(self.tile_size is not None, "tile_size", f"{stock} needs a static size")
        return self
