"""Is a model cloud-robust? Every model scored on cloudy, cloud-injected and clear tiles.

The experiment of `mtlcc_tf.cloud_coverage`. Rows are trained model directories (one per seed)
and classical baselines (fitted here, one per seed). Each is scored under every condition:

- `injected_<p>`: the partition of the cloudy dataset with simulated clouds added to p % of the
  observations (`injected_00` is the data as recorded). The same injection seed gives every
  model the same clouds, and a larger fraction clouds a superset of the observations.
- `clear`: the same partition of a paired cloud-free dataset (`synthesize --cloud_rate=0`: same
  surfaces, dates and labels, no clouds, haze or shadows), if one is given.

Per row, run and condition the score keeps the confusion matrix and, per tile, its cloud coverage
and the known/correct pixel counts in bins of clear observations per pixel: enough for the
accuracy per coverage bin with confidence intervals (`cloud_coverage_report`). Scores are cached
as JSON under `<out_dir>/scores/`, so a rerun resumes where a killed one stopped.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from data_pipeline import dataset_root, files, records
from data_pipeline.data_config import DataConfig
from mtlcc_tf import evaluate_lib, tile_predictions

MODEL = "model"
CLASSICAL = "classical"
CLEAR = "clear"
DEFAULT_LEVELS = tuple(round(0.1 * step, 1) for step in range(10))
DEFAULT_CLEAR_EDGES = (0, 1, 3, 6, 10, 15)  # bins [0, 1), [1, 3), ..., [15, inf)
_BATCH_SIZE = 8


def injected_name(level: float) -> str:
    """'injected_30' for 0.3."""
    return f"injected_{round(level * 100):02d}"


@dataclasses.dataclass(frozen=True)
class Condition:
    """Tiles a row is scored on: a dataset root and the fraction of observations clouded."""

    name: str
    root: str
    cloud_injection: float = 0.0


def make_conditions(
    datadir: str, levels: Sequence[float], clear_datadir: str | None = None
) -> tuple[Condition, ...]:
    """The injected-cloud sweep on `datadir`, then `clear` on `clear_datadir` if given."""
    if not levels:
        raise ValueError("at least one injection level is needed (0 scores the data as recorded)")
    bad = [level for level in levels if not 0.0 <= level <= 1.0]
    if bad:
        raise ValueError(f"injection levels {bad} are not fractions in [0, 1]")
    conditions = [Condition(injected_name(level), datadir, float(level)) for level in levels]
    if len({condition.name for condition in conditions}) != len(conditions):
        raise ValueError(f"injection levels {list(levels)} repeat a percentage")
    if clear_datadir:
        conditions.append(Condition(CLEAR, clear_datadir))
    return tuple(conditions)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the tables: model directories (one run each) or a classical baseline.

    Attributes:
        name: folder-safe name.
        kind: MODEL or CLASSICAL.
        runs: model directories (MODEL), or seeds as strings (CLASSICAL).
        feature_variant: 'masked' or 'raw' composites (CLASSICAL only).
    """

    name: str
    kind: str
    runs: tuple[str, ...]
    feature_variant: str | None = None

    def run_name(self, run: str) -> str:
        """'seed_0' for a seed or a model directory named seed_0; else the directory's name."""
        base = run if self.kind == CLASSICAL else os.path.basename(os.path.normpath(run))
        return f"seed_{base}" if self.kind == CLASSICAL else base


def _check_name(name: str, text: str) -> None:
    if not name or not all(character.isalnum() or character in "_-." for character in name):
        raise ValueError(f"{text!r}: the row name must be letters, digits, '_', '-' or '.'")


def parse_model_row(text: str) -> Row:
    """'NAME=GLOB' -> a Row of the model directories GLOB matches (sorted)."""
    name, _, pattern = text.partition("=")
    _check_name(name, text)
    if not pattern:
        raise ValueError(f"{text!r}: expected NAME=GLOB of model directories")
    matches = sorted(
        path for path in glob.glob(pattern) if os.path.isfile(os.path.join(path, "config.json"))
    )
    if not matches:
        raise ValueError(f"{text!r}: no model directory (with config.json) matches {pattern}")
    return Row(name, MODEL, tuple(matches))


def parse_classical_row(text: str, seeds: Sequence[int]) -> Row:
    """'NAME=masked' or 'NAME=raw' -> a classical Row fitted once per seed."""
    name, _, variant = text.partition("=")
    _check_name(name, text)
    if variant not in ("masked", "raw"):
        raise ValueError(f"{text!r}: expected NAME=masked or NAME=raw")
    if not seeds:
        raise ValueError("classical rows need at least one seed")
    return Row(name, CLASSICAL, tuple(str(seed) for seed in seeds), variant)


class CoverageScorer:
    """Per-tile counts for the coverage bins; an `on_tile` callback of `evaluate_lib`.

    Each tile gives its id, cloud coverage (fraction of its pixel-observations cloud or shadow;
    None without a mask) and, per bin of clear observations per pixel (`clear_edges`: bin i is
    [edges[i], edges[i+1]), the last open), how many known pixels it has and how many are right.
    """

    def __init__(self, clear_edges: Sequence[int] = DEFAULT_CLEAR_EDGES):
        edges = list(clear_edges)
        if not edges or edges[0] != 0 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"clear-observation bin edges {edges}: start at 0 and increase")
        self.edges = edges
        self.tiles: list[dict[str, Any]] = []

    def __call__(self, tile: tile_predictions.TileResult) -> None:
        known = tile.known
        correct = known & (tile.predictions == tile.labels)
        num_bins = len(self.edges)
        if tile.cloud_mask is None:
            pixel_known = pixel_correct = [0] * num_bins
        else:
            clear = np.sum(tile.cloud_mask == records.CLEAR, axis=0)
            bins = np.digitize(clear, self.edges[1:])
            pixel_known = np.bincount(bins[known], minlength=num_bins).tolist()
            pixel_correct = np.bincount(bins[correct], minlength=num_bins).tolist()
        self.tiles.append(
            {
                "tileid": f"{tile.section}/{tile.tileid}" if tile.section else tile.tileid,
                "coverage": tile.cloud_coverage,
                "known": int(np.count_nonzero(known)),
                "correct": int(np.count_nonzero(correct)),
                "pixel_known": pixel_known,
                "pixel_correct": pixel_correct,
            }
        )


def data_config(condition: Condition, partition: str, fold: int, injection_seed: int) -> DataConfig:
    return DataConfig(
        root=condition.root,
        partition=partition,
        fold=fold,
        batch_size=_BATCH_SIZE,
        training=False,
        augment=False,
        cloud_injection=condition.cloud_injection,
        seed=injection_seed,
    ).validate()


def _score(summary: dict[str, Any], scorer: CoverageScorer, condition: Condition) -> dict:
    return {
        "condition": dataclasses.asdict(condition),
        **{key: summary[key] for key in ("overall_accuracy", "kappa", "macro_f1", "num_pixels")},
        "confusion_matrix": summary["confusion_matrix"],
        "clear_edges": scorer.edges,
        "tiles": scorer.tiles,
    }


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every row is scored on and where scores are cached."""

    conditions: tuple[Condition, ...]
    out_dir: str
    partition: str = "eval"
    fold: int = 0
    injection_seed: int = 0
    clear_edges: tuple[int, ...] = DEFAULT_CLEAR_EDGES

    def score_path(self, row: Row, run: str, condition: Condition) -> str:
        return os.path.join(
            self.out_dir, "scores", row.name, row.run_name(run), f"{condition.name}.json"
        )


def score_run(
    row: Row, run: str, settings: Settings, predict: Callable[[DataConfig, Any], dict] | None = None
) -> dict[str, dict[str, Any]]:
    """Scores of one run under every condition: {condition name: score}; cached ones are read.

    Args:
        row: the row the run belongs to.
        run: a model directory or a seed (see Row).
        settings: conditions, partition, cache.
        predict: for tests, replaces the model or baseline: `predict(data_config, on_tile)`
            returns an `evaluate_lib` summary.
    """
    scores, missing = {}, []
    for condition in settings.conditions:
        path = settings.score_path(row, run, condition)
        if os.path.isfile(path):
            scores[condition.name] = files.read_json(path)
        else:
            missing.append(condition)
    if not missing:
        return scores
    start = time.perf_counter()
    predict = predict or (_model_predictor(run) if row.kind == MODEL else None)
    if predict is None:
        predict = _classical_predictor(row, int(run), settings)
    setup_seconds = time.perf_counter() - start  # loading the model, or fitting the forest
    for index, condition in enumerate(missing):
        logging.info("%s %s: scoring on %s", row.name, row.run_name(run), condition.name)
        start = time.perf_counter()
        config = data_config(condition, settings.partition, settings.fold, settings.injection_seed)
        scorer = CoverageScorer(settings.clear_edges)
        summary = predict(config, scorer)
        score = _score(summary, scorer, condition)
        # The set-up is counted once, with the first score it was needed for.
        score["seconds"] = round(
            time.perf_counter() - start + (setup_seconds if not index else 0), 1
        )
        files.write_json(settings.score_path(row, run, condition), score, indent=None)
        logging.info(
            "%s %s on %s: overall accuracy %.4f, kappa %.4f",
            row.name, row.run_name(run), condition.name, score["overall_accuracy"],
            score["kappa"],
        )  # fmt: skip
        scores[condition.name] = score
    return scores


def _model_predictor(model_dir: str) -> Callable[[DataConfig, Any], dict]:
    from mtlcc_tf import model_restore

    model, run_config, _ = model_restore.restore_for_inference(model_dir, "best")

    def predict(config: DataConfig, on_tile) -> dict:
        return evaluate_lib.evaluate(
            model, config, run_config.classes, on_tile=on_tile, log_every=0
        )

    return predict


def _classical_predictor(
    row: Row, seed: int, settings: Settings
) -> Callable[[DataConfig, Any], dict]:
    """Fits the row's baseline on the training partition of the first (cloudy) condition."""
    from mtlcc_tf import classical_lib, composites, pixel_features

    features = composites.FeatureConfig(variant=row.feature_variant).validate()
    classifier_config = classical_lib.ClassifierConfig(seed=seed).validate()
    train_data = DataConfig(
        root=settings.conditions[0].root,
        partition="train",
        fold=settings.fold,
        batch_size=_BATCH_SIZE,
        training=False,
        augment=False,
    ).validate()
    pixels, labels, _ = pixel_features.collect_training_pixels(
        train_data, features, classifier_config.max_train_pixels, seed, log_every=0
    )
    classifier = classical_lib.fit(pixels, labels, classifier_config)

    def predict(config: DataConfig, on_tile) -> dict:
        class_table = dataset_root.read_classes(config.root)
        tiles = classical_lib.predict_tiles(
            classifier, config, features, classifier_config, class_table.num_classes,
            log_every=0,
        )  # fmt: skip
        return evaluate_lib.score_tiles(tiles, config, class_table, on_tile=on_tile)

    return predict


def total_seconds(scores: dict[str, dict[str, dict]]) -> tuple[float, int]:
    """(seconds summed over every score that recorded them, scores without a record)."""
    every = [score for runs in scores.values() for run in runs.values() for score in run.values()]
    return sum(score.get("seconds", 0.0) for score in every), sum("seconds" not in s for s in every)


def score_rows(rows: Sequence[Row], settings: Settings) -> dict[str, dict[str, dict]]:
    """{row name: {run name: {condition name: score}}} for every row and run, in order."""
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must be unique, got {names}")
    total = sum(len(row.runs) for row in rows)
    scores: dict[str, dict[str, dict]] = {}
    done = 0
    for row in rows:
        scores[row.name] = {}
        for run in row.runs:
            done += 1
            logging.info("[%d/%d] %s %s", done, total, row.name, row.run_name(run))
            scores[row.name][row.run_name(run)] = score_run(row, run, settings)
    return scores
