"""Is a model cloud-robust? Scores trained models and classical baselines on cloudy tiles, on the
same tiles with injected clouds, and on their cloud-free twins; accuracy per coverage bin.

python -m mtlcc_tf.cloud_coverage --flagfile=experiments/cloud_coverage.flags

Rows: `--model=NAME=GLOB` (trained model directories, e.g. the seeds of the accuracy table) and
`--classical=NAME=masked|raw` (random forests on monthly composites, fitted here per seed).
"""

from __future__ import annotations

import os
import shlex
import sys

import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import dataset_root, records
from mtlcc_tf import cloud_coverage_lib, cloud_coverage_report, hardware, tile_predictions

_DATADIR = flags.DEFINE_string("datadir", None, "Dataset root of the cloudy tiles.")
_CLEAR_DATADIR = flags.DEFINE_string(
    "clear_datadir", None,
    "Its cloud-free twin (synthesize --cloud_rate=0 with the same seed); adds a 'clear' condition.",
)  # fmt: skip
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Cached scores (scores/) and TensorBoard runs (tensorboard/)."
)
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Also write results.md, results.json and the plots here."
)
_MODELS = flags.DEFINE_multi_string(
    "model", [], "NAME=GLOB: a row of trained model directories (one run per directory)."
)
_CLASSICAL = flags.DEFINE_multi_string(
    "classical", [], "NAME=masked or NAME=raw: a random-forest row, fitted once per --seeds."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the classical rows.")
_LEVELS = flags.DEFINE_list(
    "injection_levels", [str(level) for level in cloud_coverage_lib.DEFAULT_LEVELS],
    "Fractions of observations that get injected clouds; 0 scores the tiles as recorded.",
)  # fmt: skip
_DATA_SEED = flags.DEFINE_integer(
    "data_seed", 0, "Seed of the injected clouds (the same clouds for every row)."
)
_PARTITION = flags.DEFINE_enum("partition", "eval", dataset_root.PARTITIONS, "Tiles to score.")
_FOLD = flags.DEFINE_integer("fold", 0, "Fold of the train/test partitions.", lower_bound=0)
_TILE_BINS = flags.DEFINE_list(
    "tile_coverage_bins", [str(edge) for edge in cloud_coverage_report.DEFAULT_TILE_EDGES],
    "Lower edges (percent) of the tile cloud-coverage bins.",
)  # fmt: skip
_CLEAR_BINS = flags.DEFINE_list(
    "clear_observation_bins", [str(edge) for edge in cloud_coverage_lib.DEFAULT_CLEAR_EDGES],
    "Lower edges of the bins of clear observations per pixel.",
)  # fmt: skip


def _numbers(values: list[str], kind, flag: str) -> tuple:
    try:
        return tuple(kind(value) for value in values)
    except ValueError as error:
        raise app.UsageError(f"--{flag}: {error}") from error


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags need --name=value")
    try:
        seeds = _numbers(_SEEDS.value, int, "seeds")
        rows = [cloud_coverage_lib.parse_model_row(text) for text in _MODELS.value]
        rows += [cloud_coverage_lib.parse_classical_row(text, seeds) for text in _CLASSICAL.value]
        if not rows:
            raise ValueError("no rows: give --model=NAME=GLOB and/or --classical=NAME=masked|raw")
        conditions = cloud_coverage_lib.make_conditions(
            _DATADIR.value, _numbers(_LEVELS.value, float, "injection_levels"),
            _CLEAR_DATADIR.value,
        )  # fmt: skip
        for condition in conditions:
            if not os.path.isfile(os.path.join(condition.root, "dataset.ini")):
                raise ValueError(f"{condition.root}: no dataset.ini; not a dataset root")
        settings = cloud_coverage_lib.Settings(
            conditions=conditions,
            out_dir=_OUT_DIR.value,
            partition=_PARTITION.value,
            fold=_FOLD.value,
            injection_seed=_DATA_SEED.value,
            clear_edges=_numbers(_CLEAR_BINS.value, int, "clear_observation_bins"),
        )
        tile_edges = _numbers(_TILE_BINS.value, float, "tile_coverage_bins")
        cloud_coverage_report.check_tile_edges(tile_edges)
        cloud_coverage_lib.CoverageScorer(settings.clear_edges)  # checks the edges
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    try:
        scores = cloud_coverage_lib.score_rows(rows, settings)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"cloud_coverage: {error}")
    except tf.errors.OpError as error:
        sys.exit(f"cloud_coverage: {records.op_error_message(error)}")
    except tile_predictions.ClassMismatchError as error:
        sys.exit(f"cloud_coverage: {error}")
    results = cloud_coverage_report.aggregate(rows, scores, conditions, tile_edges)
    cpu = hardware.cpu_info()
    seconds, unrecorded = cloud_coverage_lib.total_seconds(scores)
    header = [
        f"- command: `{shlex.join(['python', '-m', 'mtlcc_tf.cloud_coverage', *sys.argv[1:]])}`",
        f"- hardware: {cpu.model} ({cpu.kind}), {os.cpu_count()} CPUs; scoring took "
        + (f"{seconds / 60:.0f} min" if not unrecorded else f"unrecorded for {unrecorded} scores")
        + " in all (model loading and forest fits included; summed over the cached scores)",
        f"- tiles: partition '{settings.partition}' (fold {settings.fold}) of `{_DATADIR.value}`"
        + (f" and of its clear twin `{_CLEAR_DATADIR.value}`" if _CLEAR_DATADIR.value else "")
        + f"; injected clouds from --data_seed={settings.injection_seed}",
        "- rows: " + "; ".join(
            f"{row.name} ({len(row.runs)} runs: "
            + (", ".join(row.runs) if row.kind == cloud_coverage_lib.MODEL
               else f"random forest, {row.feature_variant} composites, seeds {', '.join(row.runs)}")
            + ")" for row in rows
        ),
    ]  # fmt: skip
    cloud_coverage_report.write_tensorboard(
        os.path.join(_OUT_DIR.value, "tensorboard"), scores, conditions
    )
    for directory in filter(None, (_OUT_DIR.value, _RESULTS_DIR.value)):
        for path in cloud_coverage_report.write_results(results, directory, header):
            logging.info("wrote %s", path)
    print(cloud_coverage_report.markdown(results, header))


if __name__ == "__main__":
    flags.mark_flags_as_required(["datadir", "out_dir"])
    app.run(main)
