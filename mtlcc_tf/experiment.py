"""Runs an experiment table: `python -m mtlcc_tf.experiment --flagfile=experiments/<name>.flags`.

Each `--variant='NAME --flag=value ...'` is trained (`mtlcc_tf.train --flagfile=<--train_flagfile>`
plus its flags) once per seed and evaluated on every `--partitions` entry; each
`--classical='NAME --flag=value ...'` runs `mtlcc_tf.classical` per seed. Results (mean ± std
over seeds) go to `<out_dir>/results.{md,json}` and `per_class_f1.png`, and also to
`--results_dir` when given (the folder committed under experiments/results/). Running the same
command again skips finished runs.
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags, logging

from mtlcc_tf import experiment_lib, experiment_report, hardware

_DATADIR = flags.DEFINE_string("datadir", None, "Dataset root.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Models, evaluations and results of every run.")
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Also write results.{md,json} and the plot here (e.g. to commit them)."
)
_VARIANTS = flags.DEFINE_multi_string(
    "variant", [], "'NAME --flag=value ...': a trained row (flags of mtlcc_tf.train)."
)
_CLASSICAL = flags.DEFINE_multi_string(
    "classical", [], "'NAME --flag=value ...': a classical-baseline row (mtlcc_tf.classical)."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every row runs once per seed.")
_PARTITIONS = flags.DEFINE_list(
    "partitions",
    ["test", "eval"],
    "Partitions to evaluate on (train, test, eval); 'eval_views8' evaluates the trained models "
    "with 8 test-time views (2, 4, 8; mtlcc_tf.evaluate --test_time_views). An entry added to a "
    "finished experiment is evaluated without training again.",
)
_FOLD = flags.DEFINE_integer("fold", 0, "Fold of the train/test partitions.", lower_bound=0)
_TRAIN_FLAGFILE = flags.DEFINE_string(
    "train_flagfile", None, "Flagfile of mtlcc_tf.train shared by every trained row."
)
_TRAIN_ARGS = flags.DEFINE_string(
    "train_args", "", "Flags appended to every trained row (e.g. '--train_steps=2' for a test)."
)
_CLASSICAL_ARGS = flags.DEFINE_string(
    "classical_args", "", "Flags appended to every classical row."
)


def _command_line() -> str:
    return shlex.join(["python", "-m", "mtlcc_tf.experiment", *sys.argv[1:]])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags need --name=value")
    try:
        variants = [
            experiment_lib.parse_variant(text, experiment_lib.TRAINED) for text in _VARIANTS.value
        ]
        variants += [
            experiment_lib.parse_variant(text, experiment_lib.CLASSICAL)
            for text in _CLASSICAL.value
        ]
        seeds = tuple(int(seed) for seed in _SEEDS.value)
        experiment = experiment_lib.Experiment(
            datadir=_DATADIR.value,
            out_dir=_OUT_DIR.value,
            variants=tuple(variants),
            seeds=seeds,
            partitions=tuple(_PARTITIONS.value),
            train_flagfile=_TRAIN_FLAGFILE.value,
            train_args=tuple(shlex.split(_TRAIN_ARGS.value)),
            classical_args=tuple(shlex.split(_CLASSICAL_ARGS.value)),
            fold=_FOLD.value,
        ).validate()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    try:
        records = experiment_lib.execute(experiment)
    except RuntimeError as error:
        sys.exit(f"experiment: {error}")
    results = experiment_lib.aggregate(experiment, records)
    cpu = hardware.cpu_info()
    hardware_line = f"{cpu.model} ({cpu.kind}), {os.cpu_count()} CPUs"
    command = _command_line()
    for directory in filter(None, (_OUT_DIR.value, _RESULTS_DIR.value)):
        for path in experiment_report.write_results(results, directory, command, hardware_line):
            logging.info("wrote %s", path)
    print(experiment_report.markdown(results, command, hardware_line))


if __name__ == "__main__":
    flags.mark_flags_as_required(["datadir", "out_dir"])
    app.run(main)
