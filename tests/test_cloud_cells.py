"""Tests of the cloud-cell study: AUC, state changes, a constructed ranking, a tiny run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn import metrics

from mtlcc_tf import cloud_cells_images, cloud_cells_lib
from tests.conftest import run_entry_point


def test_roc_auc_matches_scikit_learn_and_handles_ties_and_signs():
    rng = np.random.default_rng(0)
    target = rng.random(500) < 0.3
    noisy = target + rng.normal(0, 1.0, 500)
    rounded = np.round(noisy)  # many ties
    scores = np.stack(
        [target.astype(float), -target.astype(float), np.zeros(500), noisy, rounded], axis=1
    )
    auc = cloud_cells_lib.roc_auc(scores, target)
    assert auc[:3] == pytest.approx([1.0, 0.0, 0.5])
    assert auc[3] == pytest.approx(metrics.roc_auc_score(target, noisy))
    assert auc[4] == pytest.approx(metrics.roc_auc_score(target, rounded))
    assert cloud_cells_lib.detector_score(auc)[:3] == pytest.approx([1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="0 positives"):
        cloud_cells_lib.roc_auc(scores, np.zeros(500, bool))
    with pytest.raises(ValueError, match="need"):
        cloud_cells_lib.roc_auc(scores[:, 0], target)


def test_state_changes_follow_the_reading_direction_and_skip_padding():
    states = np.arange(1.0, 6.0).reshape(1, 5, 1, 1, 1)  # 1 2 3 4 5, last step is padding
    length = np.array([4])
    forward = cloud_cells_lib.state_changes(states, length, backward=False)[0, :, 0, 0, 0]
    backward = cloud_cells_lib.state_changes(states, length, backward=True)[0, :, 0, 0, 0]
    assert forward.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # nothing read before the first step
    assert backward.tolist() == [-1.0, -1.0, -1.0, 0.0, 0.0]  # read from t=3 down to 0


def test_a_channel_that_equals_the_cloud_mask_ranks_first_with_auc_one():
    rng = np.random.default_rng(1)
    batch, time_steps, size = 2, 4, 6
    mask = rng.integers(0, 3, (batch, time_steps, size, size)).astype(np.uint8)
    inputs = rng.random((batch, time_steps, size, size, 15)).astype(np.float32)
    hidden = rng.normal(size=(batch, time_steps, size, size, 3)).astype(np.float32)
    hidden[..., 2] = -(mask > 0).astype(np.float32)  # channel 2: the mask, negated
    numpy_batch = {
        "inputs": inputs, "sequence_length": np.array([4, 3]), "cloud_mask": mask,
        "has_cloud_mask": np.array([True, True]),
    }  # fmt: skip
    states = {"layer0_forward_hidden": hidden, "layer0_backward_hidden": hidden[:, ::-1] * 0.5}
    features, bands, target, names = cloud_cells_lib.sample_batch(
        states, numpy_batch, rng, fraction=1.0
    )
    assert features.shape == (target.size, 12) and bands.shape == (target.size, 13)
    assert target.size == (4 + 3) * size * size  # padding step of the second tile left out
    samples = cloud_cells_lib.Samples(names, [features], [bands], [target])
    ranking = cloud_cells_lib.rank(samples, top=3)
    assert ranking["top"][0]["feature"] == "layer0_forward_hidden[2] activation"
    assert ranking["top"][0]["auc"] == pytest.approx(0.0)
    assert ranking["top"][0]["score"] == pytest.approx(1.0)
    assert ranking["best_band"]["score"] < 0.7  # random inputs hardly see the mask


def test_frames_show_every_channel_of_every_state():
    rng = np.random.default_rng(2)
    inputs = rng.random((3, 6, 6, 15)).astype(np.float32)
    mask = np.zeros((3, 6, 6), np.uint8)
    mask[1, :3] = 1
    states = {"a_hidden": rng.normal(size=(3, 6, 6, 4)), "b_cell": rng.normal(size=(3, 6, 6, 4))}
    frames = cloud_cells_images.state_frames(inputs, mask, states, sequence_length=2, scale=2)
    assert len(frames) == 2
    assert frames[0].shape == (3 * (12 + 2), 4 * (12 + 2), 3) and frames[0].dtype == np.uint8
    # The mask panel (row 0, column 1) is white where clouds are, at step 1 only.
    assert frames[1][0, 14 + 0].tolist() == [255, 255, 255]
    assert frames[0][0, 14 + 0].tolist() == [0, 0, 0]


def test_entry_point_ranks_trained_and_untrained_models_and_draws_them(
    tiny_trained_model, tmp_path
):
    root, models = tiny_trained_model
    out_dir, results_dir = str(tmp_path / "out"), str(tmp_path / "results")
    command = [
        "mtlcc_tf.cloud_cells", f"--datadir={root}", f"--out_dir={out_dir}",
        f"--results_dir={results_dir}", f"--model=tiny={models}/seed_*", "--untrained=tiny",
        "--sample_fraction=0.5", "--num_pictured=2",
    ]  # fmt: skip
    done = run_entry_point(*command)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(os.path.join(results_dir, "results.json"), encoding="utf-8"))
    assert [row["row"] for row in results["rows"]] == ["tiny", "tiny_untrained"]
    for row in results["rows"]:
        assert 0.5 <= row["runs"][0]["best"]["score"] <= 1.0
        # 2 filters x (hidden, cell) x 2 directions x (activation, change)
        assert row["runs"][0]["num_features"] == 16
    for name in ("detector_scores.png", "tiny_seed_0_best_cells.png", "tiny_seed_0_states.gif",
                 "tiny_untrained_seed_0_best_cells.png", "results.md"):  # fmt: skip
        assert os.path.getsize(os.path.join(results_dir, name)) > 0, name
    assert os.listdir(os.path.join(out_dir, "tensorboard", "tiny_untrained", "seed_0"))
    frames = os.listdir(os.path.join(out_dir, "pictures", "tiny", "seed_0"))
    assert frames and all(name.endswith(".png") for name in frames)
    # Rankings are cached: a rerun without the checkpoints still reports the same.
    hidden = str(tmp_path / "hidden")
    os.rename(os.path.join(models, "seed_0", "best"), hidden)
    try:
        again = run_entry_point(*command)
    finally:
        os.rename(hidden, os.path.join(models, "seed_0", "best"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        json.load(open(os.path.join(results_dir, "results.json"), encoding="utf-8"))["rows"]
        == (results["rows"])
    )


def test_entry_point_refuses_an_unknown_untrained_row(tiny_trained_model, tmp_path):
    root, models = tiny_trained_model
    done = run_entry_point(
        "mtlcc_tf.cloud_cells", f"--datadir={root}", f"--out_dir={tmp_path}",
        f"--model=tiny={models}/seed_*", "--untrained=other",
    )  # fmt: skip
    assert done.returncode != 0 and "not among the --model rows" in done.stderr
