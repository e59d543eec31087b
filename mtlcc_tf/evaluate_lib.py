"""Evaluation: scores per-tile predictions and writes metrics, reports, tiles.csv and images."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import numpy as np
from absl import logging

from data_pipeline import dataset_root, files
from data_pipeline.data_config import DataConfig
from mtlcc_tf import images, metrics, reports, tile_predictions


def data_settings(config: DataConfig) -> dict[str, Any]:
    """The settings of a DataConfig that change evaluation results, for metrics.json."""
    return {
        "root": config.root,
        "partition": config.partition,
        "fold": config.fold,
        "years": list(config.years),
        "temporal_samples": config.temporal_samples,
        "batch_size": config.batch_size,
        "cloud_injection": config.cloud_injection,
        "seed": config.seed,
        "skip_corrupt": config.skip_corrupt,
    }


def evaluate(
    model: keras.Model,
    data_config: DataConfig,
    class_table: dataset_root.ClassTable | None = None,
    out_dir: str | None = None,
    write_images: bool = False,
    metadata: Mapping[str, Any] | None = None,
    on_tile: Callable[[tile_predictions.TileResult], None] | None = None,
    log_every: int = 50,
    views: int = 1,
) -> dict[str, Any]:
    """Evaluates `model` on a partition and, with `out_dir`, writes the evaluation files.

    Files in `out_dir`: metrics.json (the returned summary), report.md, confusion_matrix.png,
    tiles.csv (one row per tile, `tile_predictions.TILE_COLUMNS`) and, with `write_images`,
    under images/:
    `<section>/<tileid>_{prediction,labels,confidence}.png` and, for tiles in the dataset's
    geotransforms.csv, `<section>/<tileid>_{prediction,confidence}.tif`.

    Args:
      model: see `tile_predictions.predict_tiles`.
      data_config: the partition to evaluate; `training` must be False.
      class_table: the classes the model was trained with; checked against the dataset's
        classes.txt. None uses the dataset's.
      out_dir: where to write; None writes nothing (e.g. for experiment runners).
      write_images: also write per-tile images (needs `out_dir`).
      metadata: extra JSON-ready entries for the summary (e.g. checkpoint path and step).
      on_tile: called with every TileResult, e.g. to collect per-tile statistics in the same pass.
      log_every: progress line every this many tiles.
      views: test-time views averaged per tile (`tile_predictions.viewed_probabilities`).

    Returns:
      `metrics.summarize`'s dict (overall_accuracy, kappa, macro_f1, weighted_f1, miou,
      per_class, num_pixels) plus num_tiles, class_ids, class_names, confusion_matrix, data,
      test_time_views and the `metadata` entries.

    Raises:
      tile_predictions.ClassMismatchError: the model's classes and the dataset's disagree.
      ValueError: no known pixel in the whole partition.
    """
    dataset_classes = dataset_root.read_classes(data_config.root)
    if class_table is not None:
        tile_predictions.check_classes(
            class_table, dataset_classes, dataset_source=f"{data_config.root}/classes.txt"
        )
    return score_tiles(
        tile_predictions.predict_tiles(model, data_config, log_every=log_every, views=views),
        data_config,
        dataset_classes,
        out_dir=out_dir,
        write_images=write_images,
        metadata={"test_time_views": views, **(metadata or {})},
        on_tile=on_tile,
    )


def score_tiles(
    tiles: Iterable[tile_predictions.TileResult],
    data_config: DataConfig,
    class_table: dataset_root.ClassTable,
    out_dir: str | None = None,
    write_images: bool = False,
    metadata: Mapping[str, Any] | None = None,
    on_tile: Callable[[tile_predictions.TileResult], None] | None = None,
) -> dict[str, Any]:
    """Scores predicted tiles of any predictor and, with `out_dir`, writes the evaluation files.

    `evaluate` for a Keras model; other predictors (e.g. `classical_lib`) hand in their own
    TileResults to get the same summary and files.

    Args:
      tiles: the TileResults (`tile_predictions`) of `data_config`'s partition.
      data_config: the partition they come from (for the summary's `data` entry).
      class_table: the dataset's classes.
      out_dir: where to write; None writes nothing.
      write_images: also write per-tile images (needs `out_dir`).
      metadata: extra JSON-ready entries for the summary. They are read after the last tile, so
        a predictor may fill them in while `tiles` is consumed.
      on_tile: called with every TileResult.

    Returns:
      The summary of `evaluate`.

    Raises:
      ValueError: no known pixel in the whole partition.
    """
    num_classes = class_table.num_classes
    geotransforms = dataset_root.read_geotransforms(data_config.root) if write_images else {}
    if write_images and out_dir is None:
        raise ValueError("write_images needs an out_dir")
    if write_images and not geotransforms:
        logging.warning("%s/geotransforms.csv is missing: writing PNGs only", data_config.root)
    confusion = np.zeros([num_classes, num_classes], np.int64)
    rows = []
    for tile in tiles:
        confusion += tile.confusion(num_classes)
        rows.append(tile.row())
        if write_images:
            images.write_tile_images(
                os.path.join(out_dir, "images", tile.section or "tiles", tile.tileid),
                tile.predictions, tile.labels, tile.confidence, class_table,
                geotransforms.get(tile.tileid),
            )  # fmt: skip
        if on_tile is not None:
            on_tile(tile)
    if not confusion.any():
        raise ValueError(
            f"no pixel with a known label in the {len(rows)} tiles of partition "
            f"'{data_config.partition}' of {data_config.root}: nothing to score"
        )
    summary = metrics.summarize(confusion, class_table.known_names)
    summary.update(
        num_tiles=len(rows),
        class_ids=list(class_table.known_ids),
        class_names=list(class_table.known_names),
        confusion_matrix=confusion.tolist(),
        data=data_settings(data_config),
        **(metadata or {}),
    )
    logging.info(
        "%d tiles, %d pixels: overall accuracy %.4f, kappa %.4f, macro F1 %.4f, mIoU %.4f",
        summary["num_tiles"], summary["num_pixels"], summary["overall_accuracy"],
        summary["kappa"], summary["macro_f1"], summary["miou"],
    )  # fmt: skip
    if out_dir is not None:
        write_results(out_dir, summary, confusion, class_table, rows)
    return summary


def write_results(
    out_dir: str,
    summary: Mapping[str, Any],
    confusion: np.ndarray,
    class_table: dataset_root.ClassTable,
    rows: list[dict[str, Any]],
) -> None:
    """Writes metrics.json, report.md, confusion_matrix.png and tiles.csv into `out_dir`."""
    files.write_json(os.path.join(out_dir, "metrics.json"), summary)
    files.write_text(
        os.path.join(out_dir, "report.md"),
        _report_header(summary)
        + reports.classification_report_markdown(summary, class_table.known_names),
    )
    reports.confusion_matrix_figures_png(
        confusion, class_table.known_names, os.path.join(out_dir, "confusion_matrix.png")
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=tile_predictions.TILE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(os.path.join(out_dir, "tiles.csv"), buffer.getvalue())
    logging.info("wrote metrics.json, report.md, confusion_matrix.png, tiles.csv to %s", out_dir)


def _report_header(summary: Mapping[str, Any]) -> str:
    data = summary["data"]
    years = ", ".join(data["years"]) or "all"
    lines = [
        "# Evaluation report",
        "",
        f"- data: `{data['root']}`, partition `{data['partition']}` (fold {data['fold']}), "
        f"years {years}",
        f"- tiles: {summary['num_tiles']:,}; labelled pixels: {summary['num_pixels']:,}",
        f"- observations per tile: {data['temporal_samples'] or 'all'}; "
        f"cloud injection: {data['cloud_injection']} (seed {data['seed']})",
    ]
    if summary.get("test_time_views", 1) > 1:
        lines.append(
            f"- test-time views: softmax averaged over {summary['test_time_views']} flips / "
            "rotations of each tile"
        )
    if "checkpoint" in summary:
        lines.append(f"- checkpoint: `{summary['checkpoint']}` (step {summary.get('step')})")
    if "baseline" in summary:  # classical_lib's per-pixel classifier instead of a model
        lines.append(f"- classical baseline: {summary['baseline']['description']}")
    return "\n".join(lines) + "\n\n"
