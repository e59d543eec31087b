"""`python -m data_pipeline.inspect`: validation, statistics, JSON output and exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import inspection, realism, records
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
    per_observation = np.concatenate(
        [
            (t.cloud_mask[: t.num_observations] == records.CLOUD).mean(axis=(1, 2))
            for t in tiles.values()
        ]
    )
    tile_observations = report["cloud_coverage"]["tile_observations"]
    assert tile_observations["num_observations"] == sum(lengths)
    assert abs(tile_observations["mean_cloud_fraction"] - per_observation.mean()) < 1e-3
    # Clear-sky NDVI counts the clear, snow-free observations of each class's pixels.
    maize = [
        (t.cloud_mask[: t.num_observations] == records.CLEAR)
        & (t.x10[: t.num_observations, ..., 2] < realism.SNOW_BLUE)
        & (t.labels == 26)
        for t in tiles.values()
    ]
    assert report["clear_sky_ndvi"]["maize"]["num_observations"] == sum(m.sum() for m in maize)


@pytest.mark.slow
def test_json_output_and_exit_codes(tmp_path):
    root = str(tmp_path)
    write_random_root(root, num_tiles=4, schema=records.ORIGINAL)
    clean = run_inspect(root, "--json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert {"num_tiles", "num_classes", "schema", "corrupt"} <= set(report)
    assert report["schema"] == {"original": 4}
    assert report["cloud_coverage"]["tiles_with_mask"] == 0  # the original schema has no masks
    assert report["clear_sky_ndvi"] == {}
    assert report["cloud_coverage"]["tile_observations"] == {"num_observations": 0}

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
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_realism_figures_of_known_tiles():
    # Four observations of a 2 x 2 tile: clear, overcast, half cloud and half shadow, clear.
    mask = np.zeros((4, 2, 2), np.uint8)
    mask[1] = records.CLOUD
    mask[2, 0], mask[2, 1] = records.CLOUD, records.SHADOW
    clouds = realism.TileClouds()
    clouds.add(mask, records.CLOUD, records.CLEAR)
    assert clouds.summary() == {
        "num_observations": 4, "clear_share": 0.5, "partly_share": 0.25, "overcast_share": 0.25,
        "mean_cloud_fraction": 0.375, "mean_cloud_or_shadow_fraction": 0.5, "usable_share": 0.5,
    }  # fmt: skip

    # Class 0 on the left column, class 1 top right, unknown bottom right.
    x10 = np.zeros((4, 2, 2, 4))
    x10[..., 0], x10[..., 3] = 1000, 1000  # red, NIR: NDVI 0
    x10[0, :, 0, 3] = 9000  # NDVI 0.8
    x10[1, :, 0, 3] = 3000  # NDVI 0.5, but under cloud
    x10[3, 1, 0, 2] = 5000  # blue: snow, neither vegetation nor soil
    labels = np.array([[0, 1], [0, -1]])
    levels = realism.NdviLevels(num_classes=2)
    levels.add(x10, labels, mask == records.CLEAR)
    first, second = levels.summary(("first", "second")).values()
    assert first["num_observations"] == 3 and second["num_observations"] == 2
    assert first["p05"] == pytest.approx(0.005) and first["p95"] == pytest.approx(0.805)
    assert first["peak_median"] == pytest.approx(0.805)  # each pixel's best clear observation
    assert second["p50"] == pytest.approx(0.005) and second["peak_median"] == pytest.approx(0.005)
