"""Tests of the experiment runner: variants, resuming, aggregation, and a tiny run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mtlcc_tf import experiment_lib, experiment_report
from tests.conftest import CLASSES, write_random_root

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("data") / "root")
    write_random_root(path, num_tiles=4, pix10=12, nobs=5)
    return path


def test_parse_variant():
    variant = experiment_lib.parse_variant("gru --convcell=gru --epochs=2", "train")
    assert variant == experiment_lib.Variant("gru", "train", ("--convcell=gru", "--epochs=2"))
    assert experiment_lib.parse_variant("base", "train").args == ()
    for bad, message in (
        ("", "expected"),
        ("--convcell=gru", "expected"),
        ("a/b --x=1", "variant name"),
        ("gru convcell=gru", "not --flags"),
    ):
        with pytest.raises(ValueError, match=message):
            experiment_lib.parse_variant(bad, "train")


def _fake_runner(f1_by_seed):
    """Writes the metrics.json an evaluation would, with values that depend on the seed."""
    calls = []

    def runner(command, log_path):
        calls.append(command)
        if "mtlcc_tf.train" in command:
            return
        out_dir = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--out_dir="))
        seed = int(os.path.basename(os.path.dirname(os.path.dirname(out_dir)))[len("seed_") :])
        value = f1_by_seed[seed]
        os.makedirs(out_dir, exist_ok=True)
        summary = {
            "overall_accuracy": value,
            "kappa": value / 2,
            "macro_f1": value / 4,
            "per_class": {name: {"f1": value} for name in CLASSES.names},
            "num_pixels": 100,
        }
        with open(os.path.join(out_dir, "metrics.json"), "w") as handle:
            json.dump(summary, handle)

    return runner, calls


def _two_seeds(root, tmp_path) -> experiment_lib.Experiment:
    """One tiny trained variant, seeds 0 and 1, evaluated on the test partition."""
    return experiment_lib.Experiment(
        datadir=root,
        out_dir=str(tmp_path / "out"),
        variants=(experiment_lib.parse_variant("small --convrnn_filters=2", "train"),),
        seeds=(0, 1),
        partitions=("test",),
    )


def test_execute_aggregates_over_seeds_and_skips_finished_runs(root, tmp_path):
    experiment = _two_seeds(root, tmp_path)
    runner, calls = _fake_runner({0: 0.5, 1: 0.7})
    records = experiment_lib.execute(experiment, runner)
    assert len(calls) == 4  # train and evaluate, per seed
    assert [record["seed"] for record in records] == [0, 1]
    train = calls[0]
    assert "--seed=0" in train and "--data_seed=0" in train and "--convrnn_filters=2" in train
    results = experiment_lib.aggregate(experiment, records)
    accuracy = results["rows"][0]["partitions"]["test"]["overall_accuracy"]
    assert accuracy["mean"] == pytest.approx(0.6) and accuracy["n"] == 2
    assert accuracy["std"] == pytest.approx(0.1414, abs=1e-4)
    # Each seed's figure is kept, in the row's seed order, beside the summary.
    assert results["rows"][0]["seeds"] == [0, 1]
    assert accuracy["values"] == pytest.approx([0.5, 0.7])
    per_class = results["rows"][0]["partitions"]["test"]["per_class_f1"]
    assert all(stats["values"] == pytest.approx([0.5, 0.7]) for stats in per_class.values())
    # Run again: both runs are done, nothing is started.
    runner_again, calls_again = _fake_runner({0: 0.0, 1: 0.0})
    assert len(experiment_lib.execute(experiment, runner_again)) == 2 and not calls_again
    # A note in a run.json (e.g. a run reused from another experiment) reaches the report.
    record_path = os.path.join(
        experiment_lib.run_dir(experiment, experiment.variants[0], 1), "run.json"
    )
    with open(record_path, encoding="utf-8") as handle:
        record = json.load(handle)
    with open(record_path, "w", encoding="utf-8") as handle:
        json.dump({**record, "note": "copied from elsewhere"}, handle)
    results = experiment_lib.aggregate(experiment, experiment_lib.execute(experiment, runner_again))
    paths = experiment_report.write_results(results, str(tmp_path / "results"), "cmd", "cpu")
    assert all(os.path.getsize(path) > 0 for path in paths)
    text = open(paths[1], encoding="utf-8").read()
    assert "0.600 ± 0.141" in text and "| maize |" in text
    assert "- small, seed 1: copied from elsewhere" in text
    assert "| small | test | 0: 0.500 / 0.125; 1: 0.700 / 0.175 |" in text


def test_a_resumed_run_reports_the_training_time_of_all_its_attempts(root, tmp_path):
    from mtlcc_tf import model_dir as model_dir_lib

    experiment = _two_seeds(root, tmp_path)
    # Seed 0 was interrupted after its first checkpoint, with its time recorded; seed 1 too,
    # in a model directory from before train_time.json.
    for seed in (0, 1):
        checkpoints = os.path.join(
            experiment_lib.run_dir(experiment, experiment.variants[0], seed), "checkpoints"
        )
        os.makedirs(checkpoints)
        open(os.path.join(checkpoints, "checkpoint"), "w").close()
    seed_0 = experiment_lib.run_dir(experiment, experiment.variants[0], 0)
    model_dir_lib.write_train_time(
        seed_0, {"step": 10, "seconds": 900.0, "attempts": 1, "complete": True}
    )
    runner, _ = _fake_runner({0: 0.5, 1: 0.7})

    def resuming_runner(command, log_path):
        if "mtlcc_tf.train" in command:
            directory = os.path.dirname(log_path)
            if model_dir_lib.read_train_time(directory) is not None:  # the resumed attempt
                model_dir_lib.write_train_time(
                    directory, {"step": 20, "seconds": 1800.0, "attempts": 2, "complete": True}
                )
        runner(command, log_path)

    records = experiment_lib.execute(experiment, resuming_runner)
    assert records[0]["train_seconds"] == 1800.0 and records[0]["train_attempts"] == 2
    assert "sums 2 attempts" in records[0]["note"]
    assert records[1]["train_seconds"] < 60 and "last attempt only" in records[1]["note"]
    results = experiment_lib.aggregate(experiment, records)
    assert results["rows"][0]["train_seconds"]["values"][0] == 1800.0
    assert any("seed 0: resumed" in note for note in results["rows"][0]["notes"])


def test_views_entries_evaluate_finished_runs_again_without_training(root, tmp_path):
    assert experiment_lib.parse_partition("eval") == ("eval", 1)
    assert experiment_lib.parse_partition("test_views8") == ("test", 8)
    for bad in ("eval_views3", "eval_views", "valid_views8"):
        with pytest.raises(ValueError, match="test-time views"):
            experiment_lib.parse_partition(bad)
    variant = experiment_lib.parse_variant("small --convrnn_filters=2", "train")
    first = experiment_lib.Experiment(
        datadir=root, out_dir=str(tmp_path / "out"), variants=(variant,), seeds=(0,),
        partitions=("test",),
    )  # fmt: skip
    runner, calls = _fake_runner({0: 0.5})
    experiment_lib.execute(first, runner)
    assert len(calls) == 2
    # The same finished run with views added: only the new entry is evaluated, with its views.
    viewed = experiment_lib.Experiment(**{**first.__dict__, "partitions": ("test", "test_views8")})
    runner, calls = _fake_runner({0: 0.6})
    records = experiment_lib.execute(viewed, runner)
    (command,) = calls
    assert "mtlcc_tf.evaluate" in command and "--test_time_views=8" in command
    assert "--partition=test" in command
    assert any(arg.endswith(os.path.join("evaluation", "test_views8")) for arg in command)
    results = experiment_lib.aggregate(viewed, records)
    partitions = results["rows"][0]["partitions"]
    assert partitions["test"]["overall_accuracy"]["mean"] == pytest.approx(0.5)
    assert partitions["test_views8"]["overall_accuracy"]["mean"] == pytest.approx(0.6)
    text = experiment_report.markdown(results, "cmd", "cpu")
    assert "## test tiles, 8 test-time views (100 labelled pixels)" in text
    assert "## Per-class F1 on the test tiles, 8 test-time views" in text
    # A classical row is per pixel: it is fitted on the partitions once and read for every entry.
    classical = experiment_lib.parse_variant("rf --variant=masked", "classical")
    (fit,) = experiment_lib.commands(viewed, classical, 0)
    assert "--partitions=test" in fit
    with pytest.raises(ValueError, match="partitions"):
        experiment_lib.Experiment(**{**first.__dict__, "partitions": ("test", "test")}).validate()


def test_a_failed_run_names_its_command_and_log(root, tmp_path):
    experiment = experiment_lib.Experiment(
        datadir=root,
        out_dir=str(tmp_path / "out"),
        variants=(experiment_lib.parse_variant("broken --no_such_flag=1", "train"),),
        seeds=(0,),
        partitions=("test",),
    )
    with pytest.raises(RuntimeError, match="(?s)no_such_flag.*log.txt"):
        experiment_lib.execute(experiment)
    assert not os.path.exists(
        os.path.join(experiment_lib.run_dir(experiment, experiment.variants[0], 0), "run.json")
    )


def test_bad_experiments_are_refused(root, tmp_path):
    variant = experiment_lib.parse_variant("a", "train")
    good = dict(datadir=root, out_dir=str(tmp_path), variants=(variant,))
    for changes, message in (
        ({"variants": ()}, "at least one variant"),
        ({"variants": (variant, variant)}, "unique"),
        ({"seeds": ()}, "at least one seed"),
        ({"partitions": ("validation",)}, "partition"),
        ({"partitions": ("eval_views5",)}, "test-time views"),
        ({"datadir": str(tmp_path / "none")}, "dataset.ini"),
        ({"train_flagfile": str(tmp_path / "none.flags")}, "flagfile not found"),
    ):
        with pytest.raises(ValueError, match=message):
            experiment_lib.Experiment(**{**good, **changes}).validate()


@pytest.mark.slow
def test_entry_point_trains_evaluates_and_writes_the_table(root, tmp_path):
    out_dir, results_dir = str(tmp_path / "out"), str(tmp_path / "results")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlcc_tf.experiment",
            f"--datadir={root}",
            f"--out_dir={out_dir}",
            f"--results_dir={results_dir}",
            "--variant=tiny --convrnn_filters=2",
            "--seeds=0",
            "--partitions=train,test",
            "--train_args=--train_steps=2 --batchsize=2 --temporal_samples=3 --num_image_tiles=0",
        ],
        cwd=REPOSITORY,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(os.path.join(results_dir, "results.json"), encoding="utf-8"))
    row = results["rows"][0]
    assert row["variant"] == "tiny" and row["parameters"] > 0
    assert set(row["partitions"]) == {"train", "test"}
    for partition in ("train", "test"):
        assert 0.0 <= row["partitions"][partition]["overall_accuracy"]["mean"] <= 1.0
    assert os.path.getsize(os.path.join(results_dir, "per_class_f1.png")) > 0
    assert "| tiny |" in done.stdout
