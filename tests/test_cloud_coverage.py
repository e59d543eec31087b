"""Tests of the cloud experiment: per-tile coverage counts, bins with intervals, a tiny run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mtlcc_tf import cloud_coverage_lib, cloud_coverage_report, tile_predictions
from tests.conftest import run_entry_point


def _tile(labels, predictions, cloud_mask, tileid="7"):
    num_classes = 3
    probabilities = np.eye(num_classes, dtype=np.float32)[predictions]
    return tile_predictions.TileResult(
        tileid=tileid, section="2016", year=2016, source=f"data16/{tileid}.tfrecord.gz",
        probabilities=probabilities, labels=np.asarray(labels, np.int32),
        cloud_mask=None if cloud_mask is None else np.asarray(cloud_mask, np.uint8),
        doy=np.arange(1, 1 + (0 if cloud_mask is None else len(cloud_mask)), dtype=np.int32),
    )  # fmt: skip


def test_scorer_counts_known_and_correct_pixels_per_bin_of_clear_observations():
    labels = [[0, 1], [2, -1]]
    predictions = [[0, 0], [2, 1]]
    # 3 observations: pixel (0,0) clear 3 times, (0,1) twice, (1,0) never, (1,1) once.
    mask = [[[0, 0], [1, 0]], [[0, 2], [1, 1]], [[0, 0], [2, 1]]]
    scorer = cloud_coverage_lib.CoverageScorer(clear_edges=(0, 1, 3))
    scorer(_tile(labels, predictions, mask))
    (tile,) = scorer.tiles
    assert tile["tileid"] == "2016/7"
    assert tile["known"] == 3 and tile["correct"] == 2
    assert tile["coverage"] == pytest.approx(6 / 12)
    # bins: 0 clear -> (1,0) known, correct; 1-2 clear -> (0,1) known, wrong; >=3 -> (0,0) right.
    assert tile["pixel_known"] == [1, 1, 1]
    assert tile["pixel_correct"] == [1, 0, 1]
    scorer(_tile(labels, predictions, None))
    assert scorer.tiles[1]["coverage"] is None and scorer.tiles[1]["pixel_known"] == [0, 0, 0]
    for bad in ((1, 3), (0, 3, 3), ()):
        with pytest.raises(ValueError, match="bin edges"):
            cloud_coverage_lib.CoverageScorer(bad)


def test_conditions_and_rows_are_checked(tmp_path):
    conditions = cloud_coverage_lib.make_conditions("cloudy", (0.0, 0.5), "clear")
    assert [c.name for c in conditions] == ["injected_00", "injected_50", "clear"]
    assert conditions[1] == cloud_coverage_lib.Condition("injected_50", "cloudy", 0.5)
    for levels, message in (((), "at least one"), ((1.5,), "fractions"), ((0.1, 0.1), "repeat")):
        with pytest.raises(ValueError, match=message):
            cloud_coverage_lib.make_conditions("cloudy", levels)
    with pytest.raises(ValueError, match="no model directory"):
        cloud_coverage_lib.parse_model_row(f"m={tmp_path}/none_*")
    (tmp_path / "seed_3").mkdir()
    (tmp_path / "seed_3" / "config.json").write_text("{}")
    row = cloud_coverage_lib.parse_model_row(f"m={tmp_path}/seed_*")
    assert row.runs == (str(tmp_path / "seed_3"),) and row.run_name(row.runs[0]) == "seed_3"
    assert cloud_coverage_lib.parse_classical_row("rf=raw", (4,)).run_name("4") == "seed_4"
    for bad in ("rf=cloudy", "a/b=raw"):
        with pytest.raises(ValueError):
            cloud_coverage_lib.parse_classical_row(bad, (0,))


def _score(condition, tiles):
    return {
        "condition": vars(condition), "overall_accuracy": 0.5, "kappa": 0.25, "macro_f1": 0.2,
        "num_pixels": sum(t["known"] for t in tiles), "confusion_matrix": [[1]],
        "clear_edges": [0, 5], "tiles": tiles,
    }  # fmt: skip


def test_bins_pool_conditions_and_give_intervals_around_the_accuracy():
    conditions = cloud_coverage_lib.make_conditions("cloudy", (0.0, 0.9))
    rows = [cloud_coverage_lib.Row("m", cloud_coverage_lib.MODEL, ("a", "b"))]

    def tile(tileid, coverage, correct):
        return {
            "tileid": tileid, "coverage": coverage, "known": 10, "correct": correct,
            "pixel_known": [0, 10] if coverage < 0.5 else [10, 0],
            "pixel_correct": [0, correct] if coverage < 0.5 else [correct, 0],
        }  # fmt: skip

    clear_tiles = [tile(f"t{i}", 0.3, 9) for i in range(5)]
    cloudy_tiles = [tile(f"t{i}", 0.95, 4 + i % 2) for i in range(5)]
    scores = {
        "m": {
            run: {
                "injected_00": _score(conditions[0], clear_tiles),
                "injected_90": _score(conditions[1], cloudy_tiles),
            }
            for run in ("a", "b")
        }
    }  # fmt: skip
    results = cloud_coverage_report.aggregate(rows, scores, conditions, (0, 25, 50, 90))
    (row,) = results["rows"]
    low_bin, empty, high_bin = row["tile_bins"][1], row["tile_bins"][2], row["tile_bins"][3]
    assert low_bin["overall_accuracy"]["mean"] == pytest.approx(0.9)
    assert low_bin["pixels_per_run"] == 50 and low_bin["tiles"] == 5
    assert "overall_accuracy" not in empty and empty["pixels_per_run"] == 0
    assert high_bin["overall_accuracy"]["mean"] == pytest.approx(22 / 50)
    low, high = high_bin["ci95"]
    assert low < 22 / 50 < high and 0.4 <= low and high <= 0.5
    clear_few, clear_many = row["pixel_bins"]
    assert clear_few["overall_accuracy"]["mean"] == pytest.approx(22 / 50)
    assert clear_many["overall_accuracy"]["mean"] == pytest.approx(0.9)
    assert row["recorded_coverage"] == [0.3, 0.3]
    text = cloud_coverage_report.markdown(results, ["- header"])
    assert "| m | 0.500 ± 0.000 | 0.500 ± 0.000 |" in text and "25–50 %" in text
    with pytest.raises(ValueError, match="bin edges"):
        cloud_coverage_report.aggregate(rows, scores, conditions, (5, 50))


@pytest.mark.slow
def test_entry_point_scores_models_and_baselines_and_resumes(tiny_trained_model, tmp_path):
    root, models = tiny_trained_model
    out_dir, results_dir = str(tmp_path / "out"), str(tmp_path / "results")
    command = [
        "mtlcc_tf.cloud_coverage", f"--datadir={root}",
        f"--clear_datadir={root}", f"--out_dir={out_dir}", f"--results_dir={results_dir}",
        f"--model=tiny={models}/seed_*", "--classical=rf=raw", "--seeds=0",
        "--injection_levels=0,0.5",
    ]  # fmt: skip
    done = run_entry_point(*command)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(os.path.join(results_dir, "results.json"), encoding="utf-8"))
    assert [row["name"] for row in results["rows"]] == ["tiny", "rf"]
    for row in results["rows"]:
        assert set(row["conditions"]) == {"injected_00", "injected_50", "clear"}
        recorded = row["conditions"]["injected_00"]["overall_accuracy"]["mean"]
        # The clear twin is the same root here: the same tiles, so the same accuracy.
        assert row["conditions"]["clear"]["overall_accuracy"]["mean"] == pytest.approx(recorded)
        # The bins pool the two injection levels, not the clear twins.
        binned = sum(entry["pixels_per_run"] for entry in row["tile_bins"])
        assert binned == 2 * row["conditions"]["clear"]["num_pixels"]
    for name in ("injected_sweep.png", "coverage_bins.png", "results.md"):
        assert os.path.getsize(os.path.join(results_dir, name)) > 0
    assert os.listdir(os.path.join(out_dir, "tensorboard", "tiny", "seed_0"))
    scores = os.path.join(out_dir, "scores", "tiny", "seed_0", "injected_50.json")
    injected = json.load(open(scores, encoding="utf-8"))
    recorded = json.load(open(scores.replace("injected_50", "injected_00"), encoding="utf-8"))
    assert injected["seconds"] >= 0 and recorded["seconds"] > 0  # the first includes loading
    text = open(os.path.join(results_dir, "results.md"), encoding="utf-8").read()
    assert "scoring took" in text and "unrecorded" not in text
    coverage = [tile["coverage"] for tile in injected["tiles"]]
    assert np.all(np.array(coverage) >= [t["coverage"] for t in recorded["tiles"]])
    # A rerun reads the cached scores: without any checkpoint of the model, it still succeeds.
    model_dir = os.path.join(models, "seed_0")
    hidden = str(tmp_path / "hidden")
    os.mkdir(hidden)
    for name in ("best", "checkpoints"):
        os.rename(os.path.join(model_dir, name), os.path.join(hidden, name))
    try:
        done = run_entry_point(*command)
    finally:
        for name in ("best", "checkpoints"):
            os.rename(os.path.join(hidden, name), os.path.join(model_dir, name))
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.load(open(os.path.join(results_dir, "results.json"), encoding="utf-8"))
    assert again["rows"] == results["rows"]


def test_entry_point_refuses_bad_flags(tiny_trained_model, tmp_path):
    # The library's checks and their messages are tested in process above; here, that the entry
    # point runs them (the last one, the tile bins) before any scoring and exits with the message.
    root, models = tiny_trained_model
    done = run_entry_point(
        "mtlcc_tf.cloud_coverage", f"--datadir={root}", f"--out_dir={tmp_path}",
        f"--model=m={models}/seed_*", "--tile_coverage_bins=5,50",
    )  # fmt: skip
    assert done.returncode != 0 and "bin edges" in done.stderr, done.stderr[-2000:]
    assert not os.listdir(tmp_path)  # nothing scored, nothing written
