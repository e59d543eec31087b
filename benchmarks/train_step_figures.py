"""The figures `train_step.py` derives from its timings: speed ratios and the issue's targets."""

from __future__ import annotations

from typing import Any

# name: (numerator, denominator), both "cell/precision".
RATIOS = {
    "lstm_vs_stock_float32": ("lstm/float32", "keras_convlstm/float32"),
    "lstm_vs_stock_bfloat16": ("lstm/mixed_bfloat16", "keras_convlstm/mixed_bfloat16"),
    "gru_vs_stock_float32": ("gru/float32", "keras_convlstm/float32"),
    "gru_vs_lstm_float32": ("gru/float32", "lstm/float32"),
    "lstm_vs_unmasked_stock_float32": ("lstm/float32", "keras_convlstm_unmasked/float32"),
    "lstm_stock_math_vs_stock_float32": ("lstm_stock_math/float32", "keras_convlstm/float32"),
    "lstm_fused_vs_graph_ops_float32": ("lstm/float32", "lstm_graph_ops/float32"),
    "lstm_bfloat16_vs_float32": ("lstm/mixed_bfloat16", "lstm/float32"),
    "lstm_bfloat16_vs_stock_float32": ("lstm/mixed_bfloat16", "keras_convlstm/float32"),
    "gru_bfloat16_vs_float32": ("gru/mixed_bfloat16", "gru/float32"),
    "stock_bfloat16_vs_float32": ("keras_convlstm/mixed_bfloat16", "keras_convlstm/float32"),
    "utae_vs_lstm_float32": ("utae/float32", "lstm/float32"),
    "utae_vs_lstm_bfloat16": ("utae/mixed_bfloat16", "lstm/mixed_bfloat16"),
    "utae_bfloat16_vs_float32": ("utae/mixed_bfloat16", "utae/float32"),
    "tsvit_vs_lstm_float32": ("tsvit/float32", "lstm/float32"),
    "tsvit_vs_lstm_bfloat16": ("tsvit/mixed_bfloat16", "lstm/mixed_bfloat16"),
    "tsvit_bfloat16_vs_float32": ("tsvit/mixed_bfloat16", "tsvit/float32"),
}
# The targets: (figure, threshold).
TARGETS = {
    "lstm_vs_stock_float32 >= 0.9": ("lstm_vs_stock_float32", 0.9),
    "lstm_float32_fraction_of_matmul_peak >= 0.8": ("lstm_float32_fraction_of_matmul_peak", 0.8),
    "lstm_bfloat16_vs_float32 >= 1.3": ("lstm_bfloat16_vs_float32", 1.3),
}
# Targets that apply on CPUs with AMX only (elsewhere bf16 is not the fast path).
AMX_TARGETS = {
    "lstm_bfloat16_vs_stock_float32 >= 3": ("lstm_bfloat16_vs_stock_float32", 3.0),
    "lstm_bfloat16_fraction_of_bf16_matmul_peak >= 0.6": (
        "lstm_bfloat16_fraction_of_bf16_matmul_peak",
        0.6,
    ),
}


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every ratio of RATIOS whose two variants were timed, and the LSTM's matmul-peak fractions.

    Args:
        results: by "cell/precision": at least "samples_per_second"; recurrent cells also
            "fraction_of_float32_matmul_peak" and "fraction_of_bfloat16_matmul_peak".
    """
    figures = {
        name: round(
            results[numerator]["samples_per_second"] / results[denominator]["samples_per_second"],
            3,
        )
        for name, (numerator, denominator) in RATIOS.items()
        if numerator in results and denominator in results
    }
    if "lstm/float32" in results:
        figures["lstm_float32_fraction_of_matmul_peak"] = results["lstm/float32"][
            "fraction_of_float32_matmul_peak"
        ]
    if "lstm/mixed_bfloat16" in results:
        figures["lstm_bfloat16_fraction_of_bf16_matmul_peak"] = results["lstm/mixed_bfloat16"][
            "fraction_of_bfloat16_matmul_peak"
        ]
    return figures


def targets_met(figures: dict[str, float], amx_cpu: bool) -> dict[str, bool]:
    """Met or not, for every target whose figure was measured; the AMX targets on AMX CPUs only."""
    wanted = {**TARGETS, **(AMX_TARGETS if amx_cpu else {})}
    return {
        name: figures[figure] >= threshold
        for name, (figure, threshold) in wanted.items()
        if figure in figures
    }
