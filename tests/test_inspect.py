"""`python -m data_pipeline.inspect`: validation, statistics, JSON output and exit codes."""

import json
import os
import subprocess
import sys

import numpy as np

from data_pipeline import inspection, records
from tests.conftest import write_random_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_inspect(*args):
    return subprocess.run(
        [sys.executable, "-m", "data_pipeline.inspect", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_statistics_match_the_tiles(tmp_path):
    root = str(tmp_path)
    tiles = write_random_root(root, num_tiles=4, years=(2016, 2017), schema=records.COMPACT)
    report = inspection.inspect_root(root)
    assert report["num_tiles"] == 8 and report["num_classes"] == 4
    assert report["schema"] == {"compact": 8} and report["corrupt"] == []
    assert report["splits"]["train_fold0"] == {"listed": 2, "2016": 2, "2017": 2}
    all_labels = np.concatenate([t.labels.ravel() for t in tiles.values()])
    assert report["class_histogram"]["maize"] == np.count_nonzero(all_labels == 26)
    assert report["class_histogram"]["unknown"] == np.count_nonzero(all_labels == 0)
    lengths = [t.num_observations for t in tiles.values()]
    assert report["sequence_length"]["min"] == min(lengths)
    assert report["sequence_length"]["max"] == max(lengths)
    coverage = [
        np.mean(t.cloud_mask[: t.num_observations] != records.CLEAR) for t in tiles.values()
    ]
    assert abs(report["cloud_coverage"]["mean"] - np.mean(coverage)) < 1e-3
    assert set(report["cloud_coverage"]["by_month"]) <= set(range(1, 13))


def test_json_output_and_exit_codes(tmp_path):
    root = str(tmp_path)
    write_random_root(root, num_tiles=4, schema=records.ORIGINAL)
    clean = run_inspect(root, "--json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert {"num_tiles", "num_classes", "schema", "corrupt"} <= set(report)
    assert report["schema"] == {"original": 4}
    assert report["cloud_coverage"]["tiles_with_mask"] == 0  # the original schema has no masks

    bad = os.path.join(root, "data16", "2.tfrecord.gz")
    with open(bad, "r+b") as handle:
        handle.truncate(300)
    failed = run_inspect(root, "--json")
    assert failed.returncode == 1
    problems = json.loads(failed.stdout)["corrupt"]
    assert [p["file"] for p in problems] == [bad] and "truncated" in problems[0]["problem"]
    skipped = run_inspect(root, "--json", "--skip_corrupt")
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["num_tiles"] == 3

    text = run_inspect(root)
    assert text.returncode == 1 and "corrupt records: 1" in text.stdout and bad in text.stdout


def test_missing_root_exits_2(tmp_path):
    result = run_inspect(str(tmp_path / "nothing"))
    assert result.returncode == 2 and "does not exist" in result.stderr
