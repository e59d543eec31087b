"""The report of an experiment: results.md, results.json and a per-class F1 plot."""

from __future__ import annotations

import json
import os
from typing import Any

from data_pipeline import files
from mtlcc_tf import experiment_lib


def cell(statistics: dict[str, float], digits: int = 3) -> str:
    if statistics["n"] > 1:
        return f"{statistics['mean']:.{digits}f} ± {statistics['std']:.{digits}f}"
    return f"{statistics['mean']:.{digits}f}"


def _partition_title(entry: str) -> str:
    """'eval' -> 'eval tiles'; 'eval_views8' -> 'eval tiles, 8 test-time views'."""
    partition, views = experiment_lib.parse_partition(entry)
    return f"{partition} tiles" + (f", {views} test-time views" if views > 1 else "")


def markdown(results: dict[str, Any], command: str, hardware_line: str) -> str:
    """The results as a Markdown report: one headline table per partition, per-class F1."""
    lines = [
        "# Experiment results",
        "",
        f"- command: `{command}`",
        f"- hardware: {hardware_line}",
        f"- dataset: `{results['datadir']}`, fold {results['fold']}, seeds {results['seeds']}"
        " (mean ± sample standard deviation over seeds)",
        f"- trained variants start from `{results['train_flagfile']}`"
        + (f", plus `{' '.join(results['train_args'])}`" if results["train_args"] else ""),
        "",
    ]
    for partition in results["partitions"]:
        rows = [row for row in results["rows"] if partition in row["partitions"]]
        pixels = rows[0]["partitions"][partition]["num_pixels"] if rows else 0
        lines += [
            f"## {_partition_title(partition)} ({pixels:,} labelled pixels)",
            "",
            "| variant | OA | kappa | macro F1 | train s | parameters | flags |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            metrics = row["partitions"][partition]
            flags_text = " ".join(row["args"]) or "(base)"
            lines.append(
                f"| {row['variant']} | {cell(metrics['overall_accuracy'])} | "
                f"{cell(metrics['kappa'])} | {cell(metrics['macro_f1'])} | "
                f"{cell(row['train_seconds'], 0)} | {row['parameters'] or '-'} | "
                f"`{flags_text}` |"
            )
        lines.append("")
    last = results["partitions"][-1]
    rows = [row for row in results["rows"] if last in row["partitions"]]
    if rows:
        names = list(rows[0]["partitions"][last]["per_class_f1"])
        lines += [
            f"## Per-class F1 on the {_partition_title(last)}",
            "",
            "| class | " + " | ".join(row["variant"] for row in rows) + " |",
            "|---|" + "---|" * len(rows),
        ]
        for name in names:
            cells = [cell(row["partitions"][last]["per_class_f1"][name], 2) for row in rows]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _per_seed_lines(results)
    notes = [(row["variant"], note) for row in results["rows"] for note in row.get("notes", [])]
    if notes:
        lines += ["## Notes on runs", ""]
        lines += [f"- {variant}, {note}" for variant, note in notes]
        lines.append("")
    return "\n".join(lines)


def _per_seed_lines(results: dict[str, Any]) -> list[str]:
    """A table of each seed's OA and macro F1 for the variants run with several seeds."""
    rows = [row for row in results["rows"] if len(row["seeds"]) > 1]
    if not rows:
        return []
    lines = [
        "## Per seed",
        "",
        "OA / macro F1 of each run (per-class values per seed are in results.json, `values`).",
        "",
        "| variant | tiles | seed: OA / macro F1 |",
        "|---|---|---|",
    ]
    for row in rows:
        for partition, metrics in row["partitions"].items():
            accuracies = metrics["overall_accuracy"].get("values")
            scores = metrics["macro_f1"].get("values")
            text = "-"  # results written before the per-seed values were kept
            if accuracies and scores:
                text = "; ".join(
                    f"{seed}: {oa:.3f} / {f1:.3f}"
                    for seed, oa, f1 in zip(row["seeds"], accuracies, scores, strict=True)
                )
            lines.append(f"| {row['variant']} | {partition} | {text} |")
    return [*lines, ""]


def plot_per_class_f1(results: dict[str, Any], partition: str, path: str) -> None:
    """Grouped bars of per-class F1 (mean, with the std as error bars) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [row for row in results["rows"] if partition in row["partitions"]]
    if not rows:
        return
    names = list(rows[0]["partitions"][partition]["per_class_f1"])
    width = 0.8 / len(rows)
    figure, axes = plt.subplots(figsize=(max(8, len(names) * 0.7), 4.5))
    for index, row in enumerate(rows):
        stats = row["partitions"][partition]["per_class_f1"]
        axes.bar(
            np.arange(len(names)) + index * width,
            [stats[name]["mean"] for name in names],
            width,
            yerr=[stats[name]["std"] for name in names],
            label=row["variant"],
        )
    axes.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    axes.set_xticklabels(names, rotation=60, ha="right")
    axes.set_ylabel("F1")
    axes.set_ylim(0, 1)
    axes.set_title(f"Per-class F1 on the {_partition_title(partition)}")
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(
    results: dict[str, Any], directory: str, command: str, hardware_line: str
) -> list[str]:
    """Writes results.json, results.md and per_class_f1.png into `directory`; returns paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in ("results.json", "results.md")]
    payload = {**results, "command": command, "hardware": hardware_line}
    for path, text in zip(
        paths,
        (json.dumps(payload, indent=2) + "\n", markdown(results, command, hardware_line)),
        strict=True,
    ):
        files.write_text(path, text)
    plot = os.path.join(directory, "per_class_f1.png")
    plot_per_class_f1(results, results["partitions"][-1], plot)
    return [*paths, plot]
