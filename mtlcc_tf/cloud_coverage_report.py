"""The report of the cloud experiment: aggregates, results.md, plots and TensorBoard scalars.

Reads the scores of `cloud_coverage_lib.score_rows`. Accuracy per bin of cloud coverage pools the
tiles of every injection level (the recorded data covers only a narrow range of coverage; the
injected clouds widen it), so a bin holds tile-level pairs. The clear twins are left out of the
bins: they differ from the recorded tiles in more than coverage (no haze either) and are
reported on their own. A bin's 95 % interval is a bootstrap over tiles (all levels and runs of a
tile move together: pixels of one tile, and one tile at several levels, are not independent).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_pipeline import files
from mtlcc_tf import cloud_coverage_lib, experiment_lib, experiment_report, summaries

DEFAULT_TILE_EDGES = (0, 10, 25, 50, 75, 90)  # percent; bins [0, 10), ..., [90, 100]
NUM_BOOTSTRAP = 1000
MIN_TILES_FOR_INTERVAL = 5  # a bootstrap over fewer tiles says nothing
_METRICS = ("overall_accuracy", "kappa", "macro_f1")


def _bin_labels(edges: Sequence[float], unit: str) -> list[str]:
    labels = [f"{low:g}–{high:g}{unit}" for low, high in itertools.pairwise(edges)]
    return [*labels, f"≥ {edges[-1]:g}{unit}"]


def _clear_labels(edges: Sequence[int]) -> list[str]:
    labels = []
    for low, high in itertools.pairwise(edges):
        labels.append(str(low) if high == low + 1 else f"{low}–{high - 1}")
    return [*labels, f"≥ {edges[-1]}"]


def _tile_bin(coverage: float, edges: Sequence[float]) -> int:
    return int(np.digitize(100.0 * coverage, edges[1:]))


def _counts(
    runs: Mapping[str, Mapping[str, dict]], tile_edges: Sequence[float], names: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Known/correct counts [run, tile, bin] per tile-coverage bin and per clear-count bin,
    pooled over the conditions `names`."""
    run_names = list(runs)
    tiles = sorted(
        {tile["tileid"] for run in runs.values() for s in run.values() for tile in s["tiles"]}
    )
    index = {tileid: position for position, tileid in enumerate(tiles)}
    first = next(iter(next(iter(runs.values())).values()))
    num_clear = len(first["clear_edges"])
    shape = (len(run_names), len(tiles))
    tile_known = np.zeros((*shape, len(tile_edges)), np.int64)
    tile_correct = np.zeros_like(tile_known)
    pixel_known = np.zeros((*shape, num_clear), np.int64)
    pixel_correct = np.zeros_like(pixel_known)
    for r, run in enumerate(run_names):
        for score in (runs[run][name] for name in names):
            for tile in score["tiles"]:
                t = index[tile["tileid"]]
                if tile["coverage"] is not None:
                    b = _tile_bin(tile["coverage"], tile_edges)
                    tile_known[r, t, b] += tile["known"]
                    tile_correct[r, t, b] += tile["correct"]
                pixel_known[r, t] += tile["pixel_known"]
                pixel_correct[r, t] += tile["pixel_correct"]
    return tiles, tile_known, tile_correct, pixel_known, pixel_correct


def _bins(known: np.ndarray, correct: np.ndarray, labels: Sequence[str], seed: int) -> list[dict]:
    """Per bin: pixels, accuracy per run (mean ± std) and a tile-bootstrap 95 % interval."""
    rng = np.random.default_rng(seed)
    num_tiles = known.shape[1]
    by_tile_known, by_tile_correct = known.sum(0), correct.sum(0)  # [tile, bin]
    draws = rng.integers(0, num_tiles, size=(NUM_BOOTSTRAP, num_tiles))
    boot_known = by_tile_known[draws].sum(1)  # [draw, bin]
    boot_correct = by_tile_correct[draws].sum(1)
    out = []
    for b, label in enumerate(labels):
        run_known, run_correct = known[:, :, b].sum(1), correct[:, :, b].sum(1)
        entry: dict[str, Any] = {
            "bin": label,
            "pixels_per_run": int(run_known.max()),
            "tiles": int(np.count_nonzero(by_tile_known[:, b])),
        }
        if run_known.min() > 0:
            entry["overall_accuracy"] = experiment_lib.mean_std(list(run_correct / run_known))
        if run_known.min() > 0 and entry["tiles"] >= MIN_TILES_FOR_INTERVAL:
            valid = boot_known[:, b] > 0
            ratios = boot_correct[valid, b] / boot_known[valid, b]
            entry["ci95"] = [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]
        out.append(entry)
    return out


def check_tile_edges(tile_edges: Sequence[float]) -> None:
    """Raises ValueError unless the edges start at 0 and increase to at most 100 (percent)."""
    edges = list(tile_edges)
    if not edges or edges != sorted(set(edges)) or edges[0] != 0 or edges[-1] > 100:
        raise ValueError(f"tile coverage bin edges {edges}: 0, then increasing to <= 100")


def aggregate(
    rows: Sequence[cloud_coverage_lib.Row],
    scores: Mapping[str, Mapping[str, Mapping[str, dict]]],
    conditions: Sequence[cloud_coverage_lib.Condition],
    tile_edges: Sequence[float] = DEFAULT_TILE_EDGES,
    seed: int = 0,
) -> dict[str, Any]:
    """Means over runs per condition, and accuracy per coverage bin, of every row."""
    check_tile_edges(tile_edges)
    out_rows = []
    clear_edges: list[int] = []
    for row in rows:
        runs = scores[row.name]
        per_condition = {}
        for condition in conditions:
            values = [run[condition.name] for run in runs.values()]
            per_condition[condition.name] = {
                key: experiment_lib.mean_std([value[key] for value in values]) for key in _METRICS
            }
            per_condition[condition.name]["num_pixels"] = values[0]["num_pixels"]
        first = next(iter(runs.values()))
        clear_edges = first[conditions[0].name]["clear_edges"]
        sweep = [c.name for c in conditions if c.name != cloud_coverage_lib.CLEAR]
        _, tile_known, tile_correct, pixel_known, pixel_correct = _counts(runs, tile_edges, sweep)
        recorded = [
            t["coverage"] for t in first[conditions[0].name]["tiles"] if t["coverage"] is not None
        ]
        out_rows.append(
            {
                "name": row.name,
                "kind": row.kind,
                "feature_variant": row.feature_variant,
                "runs": list(runs),
                "conditions": per_condition,
                "recorded_coverage": [min(recorded), max(recorded)] if recorded else None,
                "tile_bins": _bins(tile_known, tile_correct, _bin_labels(tile_edges, " %"), seed),
                "pixel_bins": _bins(pixel_known, pixel_correct, _clear_labels(clear_edges), seed),
            }
        )
    return {
        "conditions": [dict(vars(condition)) for condition in conditions],
        "tile_edges": list(tile_edges),
        "clear_edges": list(clear_edges),
        "num_bootstrap": NUM_BOOTSTRAP,
        "rows": out_rows,
    }


def _cell(statistics: dict | None, digits: int = 3) -> str:
    return "–" if statistics is None else experiment_report.cell(statistics, digits)


def _sweep(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in results["conditions"] if c["name"] != cloud_coverage_lib.CLEAR]


def markdown(results: dict[str, Any], header: Sequence[str]) -> str:
    """results.md: the sweep, cloudy versus clear, and both kinds of coverage bins."""
    rows = results["rows"]
    sweep = _sweep(results)
    has_clear = any(c["name"] == cloud_coverage_lib.CLEAR for c in results["conditions"])
    lines = ["# Is a ConvLSTM cloud-robust?", "", *header, ""]
    heading = "| row | " + " | ".join(f"{round(100 * c['cloud_injection'])} %" for c in sweep)
    lines += [
        "## Overall accuracy with injected clouds",
        "",
        "Simulated clouds added to a fraction of the observations of the same tiles, the same"
        " clouds for every model (mean ± std over runs).",
        "",
        heading + " |",
        "|---|" + "---|" * len(sweep),
    ]
    for row in rows:
        cells = [_cell(row["conditions"][c["name"]]["overall_accuracy"]) for c in sweep]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Kappa:", "", heading + " |", "|---|" + "---|" * len(sweep)]
    for row in rows:
        cells = [_cell(row["conditions"][c["name"]]["kappa"]) for c in sweep]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    first, last = sweep[0]["name"], sweep[-1]["name"]
    lines += ["", f"Change from {first} to {last} (overall accuracy):", ""]
    for row in rows:
        a = row["conditions"][first]["overall_accuracy"]["mean"]
        b = row["conditions"][last]["overall_accuracy"]["mean"]
        lines.append(f"- {row['name']}: {a:.3f} → {b:.3f} ({b - a:+.3f})")
    if has_clear:
        lines += [
            "",
            "## Cloudy versus clear test tiles",
            "",
            "The same tiles as recorded (cloudy) and from the paired cloud-free dataset.",
            "",
            "| row | cloudy OA | clear OA | cloudy kappa | clear kappa |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            cloudy, clear = row["conditions"][first], row["conditions"][cloud_coverage_lib.CLEAR]
            lines.append(
                f"| {row['name']} | {_cell(cloudy['overall_accuracy'])} | "
                f"{_cell(clear['overall_accuracy'])} | {_cell(cloudy['kappa'])} | "
                f"{_cell(clear['kappa'])} |"
            )
    for key, title, what in (
        ("tile_bins", "tile cloud coverage", "share of the tile's pixel-observations cloud or"
         " shadow"),
        ("pixel_bins", "clear observations per pixel", "observations of the pixel that are clear"),
    ):  # fmt: skip
        labels = [entry["bin"] for entry in rows[0][key]]
        lines += [
            "",
            f"## Overall accuracy per bin of {title}",
            "",
            f"Bins by {what}, pooled over the injection levels above (tile-level pairs; the"
            " clear twins are not in the bins). Cells:"
            " mean ± std over runs [95 % tile-bootstrap interval, or the number of tiles when"
            f" fewer than {MIN_TILES_FOR_INTERVAL}]; n: labelled pixels per run.",
            "",
            "| row | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for row in rows:
            cells = []
            for entry in row[key]:
                if "overall_accuracy" not in entry:
                    cells.append("–")
                    continue
                interval = (
                    "[{:.2f}, {:.2f}]".format(*entry["ci95"])
                    if "ci95" in entry
                    else f"[{entry['tiles']} tiles]"
                )
                cells.append(
                    f"{_cell(entry['overall_accuracy'])} {interval} n={entry['pixels_per_run']:,}"
                )
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    ranges = [row["recorded_coverage"] for row in rows if row["recorded_coverage"]]
    if ranges:
        low, high = ranges[0]
        lines += [
            "",
            f"As recorded, the tiles' cloud coverage spans {100 * low:.0f}–{100 * high:.0f} %.",
        ]
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = _sweep(results)
    x = [100 * c["cloud_injection"] for c in sweep]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in zip(
        axes, ("overall_accuracy", "kappa"), ("overall accuracy", "kappa"), strict=True
    ):
        for row in results["rows"]:
            stats = [row["conditions"][c["name"]][key] for c in sweep]
            axis.errorbar(
                x, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o",
                markersize=3, capsize=2, label=row["name"],
            )  # fmt: skip
        axis.set_xlabel("observations with injected clouds (%)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Injected clouds on the same tiles (mean ± std over runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_bins(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for axis, key, label in zip(
        axes,
        ("tile_bins", "pixel_bins"),
        ("tile cloud coverage", "clear observations per pixel"),
        strict=True,
    ):
        labels = [entry["bin"] for entry in rows[0][key]]
        width = 0.8 / len(rows)
        for index, row in enumerate(rows):
            means, errors = [], [[], []]
            for entry in row[key]:
                mean = entry["overall_accuracy"]["mean"] if "overall_accuracy" in entry else np.nan
                low, high = entry.get("ci95", (mean, mean))
                means.append(mean)
                errors[0].append(max(mean - low, 0) if "ci95" in entry else 0)
                errors[1].append(max(high - mean, 0) if "ci95" in entry else 0)
            axis.bar(
                np.arange(len(labels)) + index * width, means, width, yerr=errors, capsize=2,
                label=row["name"],
            )  # fmt: skip
        axis.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
        axis.set_xticklabels(labels)
        axis.set_xlabel(label)
        axis.set_ylabel("overall accuracy")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    figure.suptitle("Accuracy per bin of cloud coverage (95 % tile-bootstrap intervals)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_tensorboard(
    directory: str, scores: Mapping[str, Mapping[str, Mapping[str, dict]]], conditions
) -> None:
    """One run per row and seed under `directory`: the sweep as scalars over injected %."""
    import tensorflow as tf

    for row_name, runs in scores.items():
        for run_name, by_condition in runs.items():
            writer = tf.summary.create_file_writer(os.path.join(directory, row_name, run_name))
            with writer.as_default():
                for condition in conditions:
                    score = by_condition[condition.name]
                    if condition.name == cloud_coverage_lib.CLEAR:
                        for key in _METRICS:
                            summaries.scalar(f"clear_tiles/{key}", score[key], 0)
                        continue
                    step = round(100 * condition.cloud_injection)
                    for key in _METRICS:
                        summaries.scalar(f"injected_clouds/{key}", score[key], step)
            writer.close()


def write_results(results: dict[str, Any], directory: str, header: Sequence[str]) -> list[str]:
    """results.json, results.md, injected_sweep.png and coverage_bins.png; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in ("results.json", "results.md")]
    files.write_text(paths[0], json.dumps({**results, "header": list(header)}, indent=2) + "\n")
    files.write_text(paths[1], markdown(results, header))
    plots = [os.path.join(directory, name) for name in ("injected_sweep.png", "coverage_bins.png")]
    plot_sweep(results, plots[0])
    plot_bins(results, plots[1])
    return [*paths, *plots]
