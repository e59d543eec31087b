"""Resuming a training run: after SIGKILL and SIGTERM, with changed data settings, after a
validation cut short, and a resume that fails."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from mtlcc_tf import model_dir as model_dir_lib
from mtlcc_tf import train_lib
from tests.conftest import write_random_root
from tests.test_train import (
    REPOSITORY,
    TINY_FLAGS,
    event_steps,
    run_module,
    saved_step,
    subprocess_env,
    tiny_configs,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """6 tiles: train = 0, 2, 4; test = 1, 3, 5."""
    path = str(tmp_path_factory.mktemp("data") / "root")
    write_random_root(path, num_tiles=6, pix10=12, nobs=6)
    return path


def start_until_first_checkpoint(arguments, log, log_path, model_dir) -> subprocess.Popen:
    """Starts `mtlcc_tf.train` writing to `log`; returns once its first checkpoint exists."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mtlcc_tf.train", *arguments],
        cwd=REPOSITORY,
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    checkpoints = os.path.join(model_dir, "checkpoints")
    deadline = time.monotonic() + 240
    while not tf.train.latest_checkpoint(checkpoints):
        assert process.poll() is None, f"ended without a checkpoint: {log_path.read_text()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    return process


@pytest.mark.slow
def test_sigkill_then_resume_ends_at_the_same_step(root, tmp_path):
    model_dir = str(tmp_path / "run")
    log_path = tmp_path / "first.log"
    arguments = [
        f"--datadir={root}",
        f"--model_dir={model_dir}",
        "--train_steps=40",
        "--steps_per_epoch=1000",
        "--checkpoint_every=2",
        "--max_eval_batches=1",
        *TINY_FLAGS,
    ]
    with open(log_path, "w") as log:
        process = start_until_first_checkpoint(arguments, log, log_path, model_dir)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    checkpoints = os.path.join(model_dir, "checkpoints")
    killed_at = saved_step(tf.train.latest_checkpoint(checkpoints))
    assert 2 <= killed_at < 40, log_path.read_text()[-2000:]

    # The flags file of the run repeats it, and resumes it.
    done = run_module(f"--flagfile={model_dir}/flags.txt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at step {killed_at} of 40" in done.stderr
    last = tf.train.latest_checkpoint(checkpoints)
    assert last.endswith("ckpt-40") and saved_step(last) == 40
    # Two attempts, unless the kill came between the first checkpoint and its time record.
    timed = model_dir_lib.read_train_time(model_dir)
    assert timed["step"] == 40 and timed["seconds"] > 0
    assert timed["attempts"] == 2 or not timed["complete"], timed


def test_sigterm_saves_a_checkpoint_at_the_current_step(root, tmp_path):
    model_dir = str(tmp_path / "run")
    log_path = tmp_path / "run.log"
    arguments = [
        f"--datadir={root}",
        f"--model_dir={model_dir}",
        "--train_steps=100000",
        "--steps_per_epoch=100000",
        "--checkpoint_every=3",
        *TINY_FLAGS,
    ]
    with open(log_path, "w") as log:
        process = start_until_first_checkpoint(arguments, log, log_path, model_dir)
        time.sleep(0.3)  # let it run past the checkpoint
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=120)
    output = log_path.read_text()
    checkpoints = os.path.join(model_dir, "checkpoints")
    assert returncode == 143, output[-3000:]
    stopped_at = int(re.search(r"stopped by SIGTERM: checkpoint saved at step (\d+)", output)[1])
    last = tf.train.latest_checkpoint(checkpoints)
    assert last.endswith(f"ckpt-{stopped_at}") and saved_step(last) == stopped_at >= 3


def test_resume_with_other_data_settings_warns_records_and_cleans_partial_writes(root, tmp_path):
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(*tiny_configs(root), model_dir)
    assert model_dir_lib.read_runtime_record(model_dir)["train_files"] == 3
    assert model_dir_lib.resume_changes(model_dir, tiny_configs(root)[1], 3) == []
    partial = os.path.join(model_dir, "checkpoints", "ckpt-9_temp")
    os.makedirs(partial)
    model, train_data, eval_data, train, runtime = tiny_configs(root, train_steps=3)
    train_data = dataclasses.replace(train_data, batch_size=3, seed=5)
    assert model_dir_lib.resume_changes(model_dir, train_data, 2) == [
        "batch_size: 2 -> 3", "seed: 0 -> 5", "training files: 3 -> 2",
    ]  # fmt: skip
    result = train_lib.train_and_evaluate(model, train_data, eval_data, train, runtime, model_dir)
    assert (result.initial_step, result.step) == (2, 3)
    assert not os.path.exists(partial)
    assert model_dir_lib.read_runtime_record(model_dir)["resumed_with_changes"] == [
        "batch_size: 2 -> 3", "seed: 0 -> 5",
    ]  # fmt: skip


@pytest.mark.slow
def test_a_step_whose_validation_was_cut_short_is_validated_on_resume(root, tmp_path):
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(*tiny_configs(root), model_dir)
    assert model_dir_lib.read_validated_step(model_dir) == 2
    first = model_dir_lib.read_train_time(model_dir)
    assert (first["step"], first["attempts"], first["complete"]) == (2, 1, True)
    assert first["seconds"] > 0
    # As if killed during the validation of step 2: no record of it, no best checkpoint.
    model_dir_lib.write_validated_step(model_dir, 0)
    for folder in ("validation", "best"):
        shutil.rmtree(os.path.join(model_dir, folder))
    result = train_lib.train_and_evaluate(*tiny_configs(root, train_steps=3), model_dir)
    assert (result.initial_step, result.step) == (2, 3)
    assert event_steps(os.path.join(model_dir, "validation"))["kappa"] == {2, 3}
    assert model_dir_lib.read_validated_step(model_dir) == 3
    assert model_dir_lib.read_best_metrics(model_dir)["step"] in (2, 3)
    # The training time sums both attempts (each counts from its start to its checkpoint).
    second = model_dir_lib.read_train_time(model_dir)
    assert (second["step"], second["attempts"], second["complete"]) == (3, 2, True)
    assert second["seconds"] > first["seconds"]
    # A resume at a step that was validated does not validate it again.
    shutil.rmtree(os.path.join(model_dir, "validation"))
    train_lib.train_and_evaluate(*tiny_configs(root, train_steps=5, eval_every=5), model_dir)
    assert event_steps(os.path.join(model_dir, "validation"))["kappa"] == {5}


def test_the_training_time_of_a_resume_without_a_record_of_its_step_is_incomplete(tmp_path):
    model_dir = str(tmp_path)
    started = time.monotonic() - 10.0  # an attempt that began 10 s ago
    train_lib.TrainClock(model_dir, 0, chief=True, started=started).record(4)
    fresh = model_dir_lib.read_train_time(model_dir)
    assert (fresh["step"], fresh["attempts"], fresh["complete"]) == (4, 1, True)
    assert 10.0 <= fresh["seconds"] < 60.0
    # Resumed at the recorded step: the earlier seconds carry over.
    train_lib.TrainClock(model_dir, 4, chief=True, started=time.monotonic() - 5.0).record(6)
    resumed = model_dir_lib.read_train_time(model_dir)
    assert (resumed["step"], resumed["attempts"], resumed["complete"]) == (6, 2, True)
    assert resumed["seconds"] >= fresh["seconds"] + 5.0
    # Resumed at another step than the record's (a kill between a checkpoint and its record):
    # the sum is kept, and marked as missing steps from then on.
    train_lib.TrainClock(model_dir, 8, chief=True).record(10)
    mismatched = model_dir_lib.read_train_time(model_dir)
    assert (mismatched["attempts"], mismatched["complete"]) == (3, False)
    assert mismatched["seconds"] >= resumed["seconds"]
    train_lib.TrainClock(model_dir, 10, chief=True).record(12)
    assert model_dir_lib.read_train_time(model_dir)["complete"] is False
    # No record at all (an older model directory), and a worker that is not the chief.
    older = str(tmp_path / "older")
    train_lib.TrainClock(older, 5, chief=True).record(7)
    assert model_dir_lib.read_train_time(older)["complete"] is False
    worker = str(tmp_path / "worker")
    train_lib.TrainClock(worker, 0, chief=False).record(2)
    assert model_dir_lib.read_train_time(worker) is None


@pytest.mark.slow
def test_a_failed_resume_leaves_flags_and_config_as_they_were(root, tmp_path):
    model_dir = str(tmp_path / "run")
    base = (f"--datadir={root}", f"--model_dir={model_dir}", *TINY_FLAGS, "--num_image_tiles=0")
    done = run_module(*base, "--train_steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    before = {
        name: open(os.path.join(model_dir, name)).read() for name in ("flags.txt", "config.json")
    }
    # A damaged checkpoint: the restore fails after the start-up checks passed.
    (data,) = glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-2.data-*"))
    content = open(data, "rb").read()
    with open(data, "wb") as handle:
        handle.write(content[: len(content) // 2])
    done = run_module(*base, "--train_steps=3", "--learning_rate=0.01")
    assert done.returncode != 0 and "cannot resume from this checkpoint" in done.stderr
    after = {name: open(os.path.join(model_dir, name)).read() for name in before}
    assert after == before
