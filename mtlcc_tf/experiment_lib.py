"""Runs a table of models x seeds as separate processes and aggregates their metrics.

An experiment is a list of variants (a name and the flags that make it differ from a shared
training flagfile, or a classical baseline), each trained with several seeds and evaluated on
several partitions. Every run is its own process (`mtlcc_tf.train`, then `mtlcc_tf.evaluate`, or
`mtlcc_tf.classical`), so one crash names its run and the others' results stay. A run whose
`run.json` exists is done and skipped: rerunning the same command resumes an experiment.

A partition entry is a partition ('train', 'test', 'eval') or a partition with test-time views,
'eval_views8': the trained models evaluated with `mtlcc_tf.evaluate --test_time_views=8`, the
classical baselines (per pixel, so unchanged by flips and rotations) as on 'eval'. An entry added
to a finished experiment is evaluated on its own, without training again.

Layout of `out_dir`:
    models/<variant>/seed_<s>/      model directory (deep) or output folder (classical)
        run.json                    command, seconds, parameters; written when the run is done;
                                    an optional "note" (e.g. where a reused run came from, or
                                    that a run resumed: its train_seconds then sum the attempts,
                                    from the model's train_time.json) is carried into the report
        evaluation/<entry>/         metrics.json, report.md, ... of each partition entry
    results.json, results.md, per_class_f1.png   the aggregate (`experiment_report`)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging

from data_pipeline import files

TRAINED = "train"
CLASSICAL = "classical"
RUN_FILE = "run.json"
HEADLINE_KEYS = ("overall_accuracy", "kappa", "macro_f1")
PARTITIONS = ("train", "test", "eval")
VIEWS_SUFFIX = "_views"


def parse_partition(entry: str) -> tuple[str, int]:
    """'eval' -> ('eval', 1); 'eval_views8' -> ('eval', 8): the partition and its test-time views.

    Raises:
        ValueError: not a partition, or a number of views `mtlcc_tf.evaluate` does not take.
    """
    partition, separator, views = entry.partition(VIEWS_SUFFIX)
    if partition not in PARTITIONS or (separator and views not in ("2", "4", "8")):
        raise ValueError(
            f"partition {entry!r}: use train, test or eval, optionally with test-time views "
            "(e.g. eval_views8; 2, 4 or 8 views)"
        )
    return partition, int(views) if views else 1


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the table: `kind` 'train' (mtlcc_tf.train flags) or 'classical'."""

    name: str
    kind: str
    args: tuple[str, ...]


def parse_variant(text: str, kind: str) -> Variant:
    """'NAME --flag=value ...' -> Variant; the name is a folder name, the rest flags."""
    words = shlex.split(text)
    if not words or words[0].startswith("-"):
        raise ValueError(f"variant {text!r}: expected 'NAME --flag=value ...'")
    name = words[0]
    if not all(character.isalnum() or character in "_-." for character in name):
        raise ValueError(f"variant name {name!r}: use letters, digits, '_', '-' and '.' only")
    bad = [word for word in words[1:] if not word.startswith("--")]
    if bad:
        raise ValueError(f"variant {name!r}: {bad} are not --flags")
    return Variant(name, kind, tuple(words[1:]))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What to run: variants x seeds, evaluated on partitions, all on one dataset.

    Attributes:
        datadir: Dataset root.
        out_dir: Where models, evaluations and the aggregate go.
        variants: The rows.
        seeds: Each seed is a run per variant: `--seed` and `--data_seed` of training, `--seed`
            of a classical baseline.
        partitions: Partition entries every run is evaluated on ('train', 'test', 'eval', each
            optionally with test-time views: 'eval_views8'; see `parse_partition`).
        train_flagfile: Flagfile every trained variant starts from (its flags come after).
        train_args: Flags appended to every trained variant (e.g. a shorter run for a test).
        classical_args: Flags appended to every classical variant.
        fold: Fold of the train/test partitions.
    """

    datadir: str
    out_dir: str
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    partitions: tuple[str, ...] = ("test", "eval")
    train_flagfile: str | None = None
    train_args: tuple[str, ...] = ()
    classical_args: tuple[str, ...] = ()
    fold: int = 0

    def validate(self) -> Experiment:
        names = [variant.name for variant in self.variants]
        if not names:
            raise ValueError("an experiment needs at least one variant")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if not self.seeds:
            raise ValueError("an experiment needs at least one seed")
        if not self.partitions or len(set(self.partitions)) != len(self.partitions):
            raise ValueError(f"partitions {list(self.partitions)}: use train, test and/or eval")
        for entry in self.partitions:
            parse_partition(entry)
        if self.train_flagfile and not os.path.isfile(self.train_flagfile):
            raise ValueError(f"{self.train_flagfile}: training flagfile not found")
        if not os.path.isfile(os.path.join(self.datadir, "dataset.ini")):
            raise ValueError(f"{self.datadir}: no dataset.ini; not a dataset root")
        return self


def run_dir(experiment: Experiment, variant: Variant, seed: int) -> str:
    return os.path.join(experiment.out_dir, "models", variant.name, f"seed_{seed}")


def commands(experiment: Experiment, variant: Variant, seed: int) -> list[list[str]]:
    """The processes of one run, in order."""
    directory = run_dir(experiment, variant, seed)
    python = [sys.executable, "-m"]
    if variant.kind == CLASSICAL:
        return [
            [
                *python,
                "mtlcc_tf.classical",
                f"--datadir={experiment.datadir}",
                f"--fold={experiment.fold}",
                f"--partitions={','.join(_classical_partitions(experiment))}",
                f"--out_dir={os.path.join(directory, 'evaluation')}",
                f"--seed={seed}",
                *variant.args,
                *experiment.classical_args,
            ]
        ]
    flagfile = [f"--flagfile={experiment.train_flagfile}"] if experiment.train_flagfile else []
    train = [
        *python,
        "mtlcc_tf.train",
        *flagfile,
        f"--datadir={experiment.datadir}",
        f"--model_dir={directory}",
        f"--fold={experiment.fold}",
        f"--seed={seed}",
        f"--data_seed={seed}",
        *variant.args,
        *experiment.train_args,
    ]
    return [train, *(evaluation(experiment, directory, entry) for entry in experiment.partitions)]


def evaluation(experiment: Experiment, directory: str, entry: str) -> list[str]:
    """The `mtlcc_tf.evaluate` process of a trained run for one partition entry."""
    partition, views = parse_partition(entry)
    return [
        sys.executable,
        "-m",
        "mtlcc_tf.evaluate",
        f"--model_dir={directory}",
        f"--datadir={experiment.datadir}",
        f"--partition={partition}",
        f"--fold={experiment.fold}",
        f"--out_dir={os.path.join(directory, 'evaluation', entry)}",
        *([f"--test_time_views={views}"] if views > 1 else []),
    ]


def _classical_partitions(experiment: Experiment) -> list[str]:
    """The partitions behind the entries, once each, in order (views change no pixel's class)."""
    partitions = [parse_partition(entry)[0] for entry in experiment.partitions]
    return list(dict.fromkeys(partitions))


def _metrics_path(experiment: Experiment, variant: Variant, seed: int, entry: str) -> str:
    folder = parse_partition(entry)[0] if variant.kind == CLASSICAL else entry
    return os.path.join(run_dir(experiment, variant, seed), "evaluation", folder, "metrics.json")


def _resumed_training_time(model_dir: str, last_attempt: float) -> dict[str, Any]:
    """The "train_seconds" and "note" of a run that resumed an earlier, interrupted attempt.

    The wall time of the last training process misses the attempts before it; the run's own
    record (`train_time.json`, written at every checkpoint) sums them.
    """
    from mtlcc_tf import model_dir as model_dir_lib

    timed = model_dir_lib.read_train_time(model_dir)
    if timed is None:
        return {
            "note": f"resumed an interrupted run; train_seconds ({last_attempt:.0f}) counts the "
            "last attempt only (the run has no train_time.json)"
        }
    note = (
        f"resumed an interrupted run: train_seconds sums {timed['attempts']} attempts up to the "
        f"last checkpoint (the last attempt took {last_attempt:.0f} s)"
    )
    if not timed.get("complete", True):
        note += " (approximate: an attempt resumed from a checkpoint without a time record)"
    return {
        "train_seconds": float(timed["seconds"]),
        "train_attempts": timed["attempts"],
        "note": note,
    }


def _parameter_count(model_dir: str) -> int | None:
    """Trainable parameters of a trained run's model (None for classical runs)."""
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        return None
    from mtlcc_tf import model_dir as model_dir_lib
    from mtlcc_tf import model_restore, models

    try:
        run_config = model_dir_lib.read_run_config(model_dir)
    except ValueError as error:  # e.g. written by a newer version of the package
        logging.warning("no parameter count for %s: %s", model_dir, error)
        return None
    model = models.build_model(run_config.model)
    model(model_restore.dummy_inputs(run_config.model))
    return int(sum(math.prod(weight.shape) for weight in model.trainable_weights))


def execute(
    experiment: Experiment,
    runner: Callable[[list[str], str], None] | None = None,
) -> list[dict[str, Any]]:
    """Runs every run not yet done (variants in order, seeds inside); returns all run records.

    Args:
        experiment: What to run.
        runner: `runner(command, log_path)` runs one process and raises on failure; the default
            runs it with output appended to `log_path`.

    Raises:
        RuntimeError: a process failed (names the run, the command and its log).
    """
    experiment.validate()
    runner = runner or _run_process
    records = []
    total = len(experiment.variants) * len(experiment.seeds)
    for index, (variant, seed) in enumerate(
        ((variant, seed) for variant in experiment.variants for seed in experiment.seeds), 1
    ):
        directory = run_dir(experiment, variant, seed)
        record_path = os.path.join(directory, RUN_FILE)
        if os.path.isfile(record_path):
            with open(record_path, encoding="utf-8") as handle:
                records.append(json.load(handle))
            missing = [
                entry
                for entry in experiment.partitions
                if not os.path.isfile(_metrics_path(experiment, variant, seed, entry))
            ]
            if missing:
                # A trained run evaluates the new entries; a classical one fits and scores again.
                logging.info(
                    "[%d/%d] %s seed %d: done before; evaluating %s",
                    index, total, variant.name, seed, ",".join(missing),
                )  # fmt: skip
                steps = [evaluation(experiment, directory, entry) for entry in missing]
                if variant.kind == CLASSICAL:
                    steps = commands(experiment, variant, seed)
                for command in steps:
                    runner(command, os.path.join(directory, "log.txt"))
                continue
            logging.info(
                "[%d/%d] %s seed %d: done before, skipped", index, total, variant.name, seed
            )
            continue
        os.makedirs(directory, exist_ok=True)
        log_path = os.path.join(directory, "log.txt")
        logging.info(
            "[%d/%d] %s seed %d: running (log %s)", index, total, variant.name, seed, log_path
        )
        steps = commands(experiment, variant, seed)
        resumed = variant.kind == TRAINED and os.path.isfile(
            os.path.join(directory, "checkpoints", "checkpoint")
        )
        start = time.monotonic()
        seconds = []
        for command in steps:
            step_start = time.monotonic()
            runner(command, log_path)
            seconds.append(time.monotonic() - step_start)
        record = {
            "variant": variant.name,
            "kind": variant.kind,
            "seed": seed,
            "commands": [shlex.join(command) for command in steps],
            # Deep runs: the first process trains; a classical run fits and predicts in one.
            "train_seconds": round(seconds[0], 1),
            "total_seconds": round(time.monotonic() - start, 1),
            "parameters": _parameter_count(directory),
        }
        if resumed:
            record.update(_resumed_training_time(directory, record["train_seconds"]))
        files.write_json(record_path, record)
        logging.info(
            "[%d/%d] %s seed %d: done in %.0f s",
            index,
            total,
            variant.name,
            seed,
            record["total_seconds"],
        )
        records.append(record)
    return records


def _run_process(command: list[str], log_path: str) -> None:
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = "".join(log.readlines()[-15:])
        raise RuntimeError(
            f"exit status {done.returncode} of {shlex.join(command)}\nlast lines of {log_path}:\n"
            f"{tail}"
        )


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample; 0 for one value), "n", "values"} of `values`.

    "values" keeps each value in the order given (per seed, in the row's "seeds" order), so that
    a spread can be traced to the run behind it.
    """
    values = [float(value) for value in values]
    mean = sum(values) / len(values)
    variance = sum((value - mean) ** 2 for value in values) / max(len(values) - 1, 1)
    return {"mean": mean, "std": math.sqrt(variance), "n": len(values), "values": values}


def aggregate(experiment: Experiment, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every variant's metrics, per partition."""
    rows = []
    for variant in experiment.variants:
        runs = [record for record in records if record["variant"] == variant.name]
        if not runs:
            continue
        row = {
            "variant": variant.name,
            "kind": variant.kind,
            "args": list(variant.args),
            "seeds": [run["seed"] for run in runs],
            "train_seconds": mean_std([run["train_seconds"] for run in runs]),
            "parameters": runs[0]["parameters"],
            "notes": [f"seed {run['seed']}: {run['note']}" for run in runs if run.get("note")],
            "partitions": {},
        }
        for partition in experiment.partitions:
            summaries = []
            for run in runs:
                path = _metrics_path(experiment, variant, run["seed"], partition)
                with open(path, encoding="utf-8") as handle:
                    summaries.append(json.load(handle))
            names = list(summaries[0]["per_class"])
            row["partitions"][partition] = {
                **{key: mean_std([s[key] for s in summaries]) for key in HEADLINE_KEYS},
                "per_class_f1": {
                    name: mean_std([s["per_class"][name]["f1"] for s in summaries])
                    for name in names
                },
                "num_pixels": summaries[0]["num_pixels"],
            }
        rows.append(row)
    return {
        "datadir": experiment.datadir,
        "fold": experiment.fold,
        "seeds": list(experiment.seeds),
        "partitions": list(experiment.partitions),
        "train_flagfile": experiment.train_flagfile,
        "train_args": list(experiment.train_args),
        "rows": rows,
    }
