"""The names and layout facts that the configs validate against and the layers implement.

One definition each, without TensorFlow: `model_config` (and so every entry point's flag
checking) imports this module instead of the layers, so a usage error is reported before the
seconds that importing TensorFlow takes.
"""

from __future__ import annotations

# Recurrent cells of `layers.encoder.ConvRNNEncoder`, in the order of its CELL_TYPES.
RECURRENT_CELLS = ("lstm", "gru")
# How `layers.encoder` turns the sequence into one feature map per tile.
AGGREGATIONS = ("state", "avg_output", "sum_output")
# Spatial padding of the convolutions (`layers.functional`).
PADDINGS = ("reflect", "same")
# Classification heads (`layers.heads`).
HEAD_KINDS = ("original", "logits", "hidden")
# Channel of the model's inputs that holds day of year / 365
# (`data_pipeline.transforms.to_model_inputs`).
DOY_CHANNEL = 13
# Groups of the group normalisation in the temporal-attention encoder (`layers.attention`).
ATTENTION_GROUPS = 4


def attention_settings_problems(
    widths: tuple[int, ...], decoder_widths: tuple[int, ...], num_heads: int, d_model: int | None
) -> list[str]:
    """What is wrong with these `TemporalAttentionEncoder` settings (empty when nothing)."""
    groups = ATTENTION_GROUPS
    attention_width = d_model or (widths[-1] if widths else 0)
    checks = [
        (len(widths) >= 2, f"widths {widths} need at least two levels"),
        (all(w % groups == 0 for w in widths), f"widths {widths}: multiples of {groups}"),
        (
            len(decoder_widths) == len(widths) and decoder_widths[-1:] == widths[-1:],
            f"decoder_widths {decoder_widths} must match widths {widths} in length and last",
        ),
        (
            all(w % groups == 0 for w in decoder_widths),
            f"decoder_widths {decoder_widths}: multiples of {groups}",
        ),
        (
            num_heads >= 1
            and attention_width % num_heads == 0
            and widths[-1:] != ()
            and widths[-1] % num_heads == 0,
            f"num_heads={num_heads} must divide the attention's width {attention_width} and "
            "the lowest level's",
        ),
    ]
    return [message for ok, message in checks if not ok]
