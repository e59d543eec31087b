"""The report of the cloud-cell study: per-row statistics, results.md, a plot, chosen pictures."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from data_pipeline import files
from mtlcc_tf import cloud_cells_lib, experiment_lib, experiment_report

STRONG = 0.9  # a feature with detector score >= this is counted as a cloud cell


def _scores(ranking: dict[str, Any], kind: str | None = None) -> np.ndarray:
    names = ranking["feature_names"]
    auc = np.asarray(ranking["auc"])
    keep = np.array([kind is None or name.endswith(kind) for name in names], bool)
    return cloud_cells_lib.detector_score(auc[keep])


def summarize(rankings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per row (in order of appearance): best scores per run, mean ± std, strong-cell counts."""
    rows: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        row = rows.setdefault(ranking["row"], {"row": ranking["row"], "runs": []})
        activation = _scores(ranking, cloud_cells_lib.ACTIVATION)
        change = _scores(ranking, cloud_cells_lib.CHANGE)
        row["runs"].append(
            {
                "run": ranking["run"],
                "best": ranking["top"][0],
                "best_activation": float(activation.max()),
                "best_change": float(change.max()),
                "strong_cells": int(np.count_nonzero(_scores(ranking) >= STRONG)),
                "num_features": len(ranking["feature_names"]),
                "best_band": ranking["best_band"],
            }
        )
    for row in rows.values():
        for key in ("best_activation", "best_change", "strong_cells"):
            row[key] = experiment_lib.mean_std([run[key] for run in row["runs"]])
        row["beats_best_band"] = sum(
            run["best"]["score"] > run["best_band"]["score"] for run in row["runs"]
        )
    first = rankings[0]
    states = list(dict.fromkeys(name.split("[")[0] for name in first["feature_names"]))
    return {
        "states": states,
        "strong": STRONG,
        "num_samples": first["num_samples"],
        "cloudy_share": first["cloudy_share"],
        "band_auc": first["band_auc"],
        "best_band": first["best_band"],
        "rows": list(rows.values()),
        "rankings": list(rankings),
    }


def markdown(summary: dict[str, Any], header: Sequence[str]) -> str:
    """results.md: per-row table, the best cells of every run, the input bands."""
    cell = experiment_report.cell
    band = summary["best_band"]
    lines = [
        "# Cloud cells in the hidden states",
        "",
        *header,
        f"- {summary['num_samples']:,} pixel-observations, {summary['cloudy_share']:.1%} cloud"
        " or shadow in the records' masks; score = max(AUC, 1 − AUC) of a feature against the"
        f" mask; a 'cloud cell' scores ≥ {summary['strong']}",
        "",
        f"The best input band alone, {band['band']}, scores {band['score']:.3f}.",
        "",
        "| row | runs | best state score | best change score | cloud cells | best beats"
        f" {band['band']} |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['row']} | {len(row['runs'])} | {cell(row['best_activation'])} | "
            f"{cell(row['best_change'])} | {cell(row['strong_cells'], 1)} of "
            f"{row['runs'][0]['num_features']} | {row['beats_best_band']} of {len(row['runs'])} |"
        )
    lines += [
        "",
        "## Best cell of every run",
        "",
        "| row | run | feature | AUC |",
        "|---|---|---|---|",
    ]
    for row in summary["rows"]:
        for run in row["runs"]:
            best = run["best"]
            lines.append(
                f"| {row['row']} | {run['run']} | `{best['feature']}` | {best['auc']:.3f} |"
            )
    lines += [
        "",
        "Pictures: `<row>_<run>_best_cells.png` shows the input, the mask (clear black, cloud"
        " white, shadow blue) and the best cells over time; the GIF shows every state at every"
        " step: first row input and mask, then one row per state ("
        + ", ".join(f"`{name}`" for name in summary["states"])
        + "), channels 0, 1, ... left to right, blue negative, red positive.",
    ]
    lines += ["", "## Input bands as cloud detectors (AUC)", ""]
    lines.append(", ".join(f"{name} {auc:.3f}" for name, auc in summary["band_auc"].items()))
    return "\n".join(lines) + "\n"


def plot_scores(summary: dict[str, Any], path: str) -> None:
    """Sorted detector scores of every feature, a line per run, coloured by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtlcc_tf import reports

    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = [row["row"] for row in summary["rows"]]
    for ranking in summary["rankings"]:
        scores = np.sort(_scores(ranking))[::-1]
        index = rows.index(ranking["row"])
        label = (
            ranking["row"] if ranking["run"] == summary["rows"][index]["runs"][0]["run"] else None
        )
        axis.plot(scores, color=colours[index % len(colours)], label=label, linewidth=1.2)
    band = summary["best_band"]
    axis.axhline(band["score"], color="black", linestyle="--", linewidth=1,
                 label=f"best input band ({band['band']})")  # fmt: skip
    axis.set_xlabel("state features, best first")
    axis.set_ylabel("cloud detector score, max(AUC, 1 − AUC)")
    axis.set_ylim(0.5, 1.0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    reports.save_figure(figure, path)
    plt.close(figure)


def write_results(
    rankings: Sequence[dict[str, Any]], directory: str, header: Sequence[str], out_dir: str
) -> list[str]:
    """results.json/.md, detector_scores.png and, outside `out_dir`, the first run's pictures.

    Into a results directory other than `out_dir` go, per row, the best-cells picture of its
    first run and, for the first row, the animated GIF of every state.
    """
    summary = summarize(rankings)
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in ("results.json", "results.md")]
    compact = {**summary, "rankings": [
        {key: value for key, value in ranking.items() if key not in ("auc", "feature_names")}
        for ranking in rankings
    ], "header": list(header)}  # fmt: skip
    files.write_text(paths[0], json.dumps(compact, indent=2) + "\n")
    files.write_text(paths[1], markdown(summary, header))
    paths.append(os.path.join(directory, "detector_scores.png"))
    plot_scores(summary, paths[-1])
    if os.path.abspath(directory) != os.path.abspath(out_dir):
        for index, row in enumerate(summary["rows"]):
            run = row["runs"][0]["run"]
            pictures = os.path.join(out_dir, "pictures", row["row"])
            names = [f"{run}_best_cells.png"] + ([f"{run}_states.gif"] if index == 0 else [])
            for name in names:
                target = os.path.join(directory, f"{row['row']}_{name}")
                shutil.copyfile(os.path.join(pictures, name), target)
                paths.append(target)
    return paths
