"""Training: smoke run and resume, bad flags, non-finite loss, precision, profile."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import dataset_root, input_pipeline, records
from data_pipeline.data_config import DataConfig
from mtlcc_tf import (
    evaluate_lib,
    hardware,
    metrics,
    model_restore,
    optimization,
    train_lib,
    train_steps,
)
from mtlcc_tf import model_dir as model_dir_lib
from mtlcc_tf.model_config import ModelConfig
from mtlcc_tf.train_config import RuntimeConfig, TrainConfig
from tests.conftest import CLASSES, write_random_root
from tests.encoder_checks import assert_export_serves_the_same

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny everything: 12 px tiles, 6 time steps (4 sampled), 4 filters, batch 2.
TINY_FLAGS = (
    "--batchsize=2",
    "--temporal_samples=4",
    "--convrnn_filters=4",
    "--num_image_tiles=1",
    "--strategy=default",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """6 tiles: train = 0, 2, 4; test = 1, 3, 5."""
    path = str(tmp_path_factory.mktemp("data") / "root")
    write_random_root(path, num_tiles=6, pix10=12, nobs=6)
    return path


def tiny_configs(root: str, **train_overrides):
    model = ModelConfig(num_classes=CLASSES.num_classes, convrnn_filters=4)
    train_data = DataConfig(root=root, batch_size=2, temporal_samples=4)
    eval_data = DataConfig(root=root, partition="test", batch_size=2, training=False)
    defaults = {"train_steps": 2, "steps_per_epoch": 2, "num_image_tiles": 1}
    train = TrainConfig(**{**defaults, **train_overrides})
    # float32: what --precision=auto picks depends on the CPU, and these tests compare values
    # with float32 evaluation (auto is tested through the entry point).
    return (
        model,
        train_data,
        eval_data,
        train,
        RuntimeConfig(strategy="default", precision="float32"),
    )


def run_module(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtlcc_tf.train", *args],
        cwd=REPOSITORY,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def checkpoint_steps(folder: str) -> list[int]:
    return sorted(
        int(re.search(r"ckpt-(\d+)\.index$", path).group(1))
        for path in glob.glob(os.path.join(folder, "ckpt-*.index"))
    )


def saved_step(path: str) -> int:
    return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def event_steps(folder: str) -> dict[str, set[int]]:
    """{tag: steps it was written at} of the event files in `folder`."""
    from tensorflow.core.util import event_pb2

    steps: dict[str, set[int]] = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                steps.setdefault(value.tag, set()).add(event.step)
    return steps


def event_tags(folder: str) -> set[str]:
    return set(event_steps(folder))


def test_smoke_run_then_resume(root, tmp_path):
    model_dir = str(tmp_path / "run")
    result = train_lib.train_and_evaluate(*tiny_configs(root), model_dir)
    assert (result.initial_step, result.step, result.stopped) == (0, 2, False)
    assert result.validation["num_pixels"] > 0 and -1 <= result.validation["kappa"] <= 1
    assert checkpoint_steps(os.path.join(model_dir, "checkpoints"))[-1] == 2
    best = model_dir_lib.read_best_metrics(model_dir)
    assert best["step"] == 2 and "kappa" in best
    train_tags = event_tags(os.path.join(model_dir, "train"))
    assert {
        "loss",
        "overall_accuracy",
        "kappa",
        "macro_f1",
        "learning_rate",
        "samples_per_second",
        "hparams",
    } <= train_tags
    validation_tags = event_tags(os.path.join(model_dir, "validation"))
    assert {"loss", "overall_accuracy", "kappa", "macro_f1", "confusion_matrix"} <= validation_tags
    assert any(tag.startswith("tiles/") for tag in validation_tags)
    run_config = model_dir_lib.read_run_config(model_dir)
    assert run_config.classes == CLASSES and run_config.model.convrnn_filters == 4

    resumed = train_lib.train_and_evaluate(*tiny_configs(root, train_steps=3), model_dir)
    assert (resumed.initial_step, resumed.step) == (2, 3)
    assert saved_step(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))) == 3
    model, _ = model_restore.restore_model(model_dir, "last")
    assert model.output.shape[-1] == CLASSES.num_classes
    # Every weight comes from the checkpoint (two fresh models start from different weights).
    again, _ = model_restore.restore_model(model_dir, "last")
    for weight, other in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(weight.numpy(), other.numpy(), err_msg=weight.path)

    changed = tiny_configs(root, train_steps=4)
    changed = (ModelConfig(num_classes=CLASSES.num_classes, convrnn_filters=8), *changed[1:])
    with pytest.raises(ValueError, match="convrnn_filters"):
        train_lib.train_and_evaluate(*changed, model_dir)


@pytest.mark.slow
def test_entry_point_writes_flags_checkpoints_and_summaries_and_resumes(root, tmp_path):
    model_dir = str(tmp_path / "run")
    common = (f"--datadir={root}", f"--model_dir={model_dir}", "--standardize_bands", *TINY_FLAGS)
    done = run_module(*common, "--train_steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    flags_text = open(os.path.join(model_dir, "flags.txt"), encoding="utf-8").read()
    assert f"--datadir={root}" in flags_text and "--train_steps=2" in flags_text
    assert "--convrnn_filters=4" in flags_text and "--nojit_compile" in flags_text
    # Only this module's flags: none of absl's logging flags or TensorFlow's.
    assert "--verbosity" not in flags_text and "--logtostderr" not in flags_text
    for folder in ("checkpoints", "best", "train", "validation"):
        assert os.listdir(os.path.join(model_dir, folder)), folder
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["format"] == 1
    # --precision=auto (the default) is resolved for this machine, logged and recorded.
    cpu = hardware.cpu_info()
    probe = lambda: hardware.cached_bfloat16_speedup(cpu)  # noqa: E731 - what train measured
    expected = hardware.resolve_precision("auto", cpu, [], probe).policy
    assert config["runtime"]["precision"] == expected
    assert config["runtime"]["precision_requested"] == "auto"
    assert set(config["runtime"]["cpu_flags"]) == set(hardware.SPEED_FLAGS)
    assert f"precision {expected} on CPU" in done.stderr
    assert "--precision=auto" in flags_text
    # The console keeps to progress and results: no TensorFlow INFO line per checkpoint.
    assert "Sharding callback" not in done.stderr and "functional_saver" not in done.stderr
    assert "validation at step 2" in done.stdout + done.stderr
    # A resume keeps the band statistics measured when the run started.
    resumed = run_module(*common, "--train_steps=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "validation at step 3" in resumed.stdout + resumed.stderr
    after = json.load(open(os.path.join(model_dir, "config.json")))
    assert len(after["model"]["band_mean"]) == 13
    assert after["model"] == config["model"]


def test_deterministic_runs_end_with_identical_weights(root, tmp_path):
    model, train_data, eval_data, train, runtime = tiny_configs(root, train_steps=3)
    train_data = dataclasses.replace(train_data, deterministic=True)
    weights = []
    for run in ("a", "b"):
        model_dir = str(tmp_path / run)
        train_lib.train_and_evaluate(model, train_data, eval_data, train, runtime, model_dir)
        restored, _ = model_restore.restore_model(model_dir, "last")
        weights.append(restored.get_weights())
    assert len(weights[0]) == len(weights[1])
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)


def test_validation_during_training_equals_evaluate_on_the_last_checkpoint(root, tmp_path):
    model, train_data, eval_data, train, runtime = tiny_configs(root, train_steps=3)
    model_dir = str(tmp_path / "run")
    result = train_lib.train_and_evaluate(model, train_data, eval_data, train, runtime, model_dir)
    restored, _ = model_restore.restore_model(model_dir, "last")
    summary = evaluate_lib.evaluate(restored, eval_data)
    for key in ("num_pixels", "overall_accuracy", "kappa", "macro_f1"):
        assert summary[key] == pytest.approx(result.validation[key], abs=1e-9), key


def test_a_weight_average_is_validated_kept_as_the_best_checkpoint_and_resumed(root, tmp_path):
    # One epoch of 3 steps: a single validation, at step 3, so the best checkpoint is step 3's.
    configs = tiny_configs(root, train_steps=3, steps_per_epoch=3, ema_decay=0.5)
    model_dir = str(tmp_path / "run")
    result = train_lib.train_and_evaluate(*configs, model_dir)
    best, _ = model_restore.restore_model(model_dir, "best")
    last, _ = model_restore.restore_model(model_dir, "last")
    # The last checkpoint holds the trained weights and their average; the best one holds the
    # average as the model's weights, and that is what was validated.
    path = model_dir_lib.checkpoint_path(model_dir, "last")
    reader = tf.train.load_checkpoint(path)
    averages = {
        int(name.split("/")[2]): reader.get_tensor(name)
        for name, _ in tf.train.list_variables(path)
        if name.startswith("weight_average/averages/")
    }
    assert reader.get_tensor("weight_average/updates/.ATTRIBUTES/VARIABLE_VALUE") == 3
    assert len(averages) == len(best.trainable_weights) > 0
    differs = []
    for index, (averaged, trained) in enumerate(
        zip(best.trainable_weights, last.trainable_weights, strict=True)
    ):
        np.testing.assert_array_equal(averaged.numpy(), averages[index], err_msg=averaged.path)
        differs.append(not np.array_equal(averaged.numpy(), trained.numpy()))
    assert any(differs)
    summary = evaluate_lib.evaluate(best, configs[2])
    for key in ("num_pixels", "overall_accuracy", "kappa"):
        assert summary[key] == pytest.approx(result.validation[key], abs=1e-9), key
    # Resumed, the average goes on from the checkpoint's.
    resumed = tiny_configs(root, train_steps=4, steps_per_epoch=3, ema_decay=0.5)
    assert train_lib.train_and_evaluate(*resumed, model_dir).initial_step == 3
    reader = tf.train.load_checkpoint(model_dir_lib.checkpoint_path(model_dir, "last"))
    assert reader.get_tensor("weight_average/updates/.ATTRIBUTES/VARIABLE_VALUE") == 4
    # Switching it off (or on) for a resumed run is refused, naming the flag.
    with pytest.raises(ValueError, match=r"started with a weight average \(--ema_decay\)"):
        train_lib.train_and_evaluate(*tiny_configs(root, train_steps=5), model_dir)


def test_non_finite_loss_raises_naming_the_step(root, tmp_path, monkeypatch):
    build = train_lib.create_model

    def poisoned_model(model_config, seed=0):
        model = build(model_config, seed)
        weights = model.trainable_weights[0]
        weights.assign(np.full(weights.shape, np.nan, np.float32))
        return model

    monkeypatch.setattr(train_lib, "create_model", poisoned_model)
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at step 1"):
        train_lib.train_and_evaluate(*tiny_configs(root), str(tmp_path / "run"))


# One case per way the entry point refuses flags (absl's parser, a config's validation, two checks
# against the dataset root); each starts a Python process. Unknown flags are tested for other
# entry points in test_entry_points, more of the configs' messages in process below.
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--convcell=foo"], "value should be one of"),
        (["--weight_decay=0.1"], "needs optimizer='adamw'"),
        (["--train_on=2031"], "no section for ['2031']"),
        (["--temporal_samples=50"], "--temporal_samples=50 exceeds the 6 time steps"),
    ],
)
def test_bad_flags_fail_fast_with_a_clear_message(root, tmp_path, flags, message):
    model_dir = str(tmp_path / "run")
    done = run_module(f"--datadir={root}", f"--model_dir={model_dir}", *flags, timeout=120)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-2000:]
    assert not os.path.exists(model_dir)  # nothing was written, nothing heavy was built


def test_configs_name_the_flag_and_the_problem():
    with pytest.raises(ValueError, match="ModelConfig.normalization"):
        ModelConfig(num_classes=3, convcell="keras_convlstm", padding="same").validate()
    with pytest.raises(ValueError, match="learning_rate=inf is invalid: must be a finite number"):
        TrainConfig(learning_rate=float("inf")).validate()


def test_usage_errors_are_one_line_and_a_model_dir_that_is_a_file_is_refused(root, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    done = run_module(f"--datadir={root}", f"--model_dir={path}", timeout=120)
    assert done.returncode == 1
    assert f"--model_dir={path} is a file, not a folder" in done.stderr
    assert "Peak learning rate" not in done.stderr  # no flag listing before the message
    assert path.read_text() == "not a folder"


def test_missing_dataset_root_fails_fast(tmp_path):
    done = run_module(f"--datadir={tmp_path}/absent", f"--model_dir={tmp_path}/run", timeout=120)
    assert done.returncode != 0 and "dataset root does not exist" in done.stderr


def test_mixed_float16_trains_with_loss_scaling(root, tmp_path):
    configs = tiny_configs(root, train_steps=1, steps_per_epoch=1, num_image_tiles=0)
    runtime = RuntimeConfig(strategy="default", precision="mixed_float16")
    result = train_lib.train_and_evaluate(*configs[:4], runtime, str(tmp_path / "run"))
    assert result.step == 1 and np.isfinite(result.validation["loss"])
    optimizer = optimization.create_optimizer(TrainConfig(), 1e-3, "mixed_float16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def test_class_weights_come_from_the_training_labels(root, tmp_path, monkeypatch):
    seen = []
    make = train_steps.make_train_function

    def recording(*args, **kwargs):
        seen.append(kwargs["class_weights"])
        return make(*args, **kwargs)

    monkeypatch.setattr(train_steps, "make_train_function", recording)
    configs = tiny_configs(root, train_steps=1, steps_per_epoch=1, num_image_tiles=0)
    train_lib.train_and_evaluate(*configs, str(tmp_path / "plain"))
    weighted = dataclasses.replace(configs[3], class_weight_power=0.5)
    result = train_lib.train_and_evaluate(
        *configs[:3], weighted, configs[4], str(tmp_path / "weighted")
    )
    counts = input_pipeline.count_labels(configs[1])
    assert seen[0] is None
    np.testing.assert_allclose(seen[1], metrics.class_weights(counts, 0.5))
    assert len(set(seen[1])) > 2 and np.isfinite(result.validation["loss"])


def test_band_statistics_are_measured_on_the_training_tiles_and_kept_on_resume(
    root, tmp_path, monkeypatch
):
    configs = tiny_configs(root, train_steps=1, steps_per_epoch=1, num_image_tiles=0)
    train = dataclasses.replace(configs[3], standardize_bands=True)
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(*configs[:3], train, configs[4], model_dir)
    model = model_dir_lib.read_run_config(model_dir).model
    # The 10 m bands enter as stored (x 1e-4): their statistics straight from the records.
    split = input_pipeline.list_split_files(configs[1])
    x10 = (
        np.concatenate(
            [
                tile.x10[tile.doy > 0]
                for tile in (records.read_tile(path)[0] for path in split.files)
            ]
        ).reshape(-1, 4)
        * 1e-4
    )
    np.testing.assert_allclose(model.band_mean[:4], x10.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(model.band_std[:4], x10.std(axis=0), atol=1e-5)
    assert len(model.band_mean) == 13 and min(model.band_std) > 0
    restored = model_restore.restore_for_inference(model_dir)[0]
    assert restored.get_layer("band_standardization").mean == model.band_mean
    assert_export_serves_the_same(restored, str(tmp_path / "export"))

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run measures its band statistics again")

    monkeypatch.setattr(input_pipeline, "band_statistics", refuse)
    longer = dataclasses.replace(train, train_steps=2, steps_per_epoch=2)
    result = train_lib.train_and_evaluate(*configs[:3], longer, configs[4], model_dir)
    assert result.step == 2 and model_dir_lib.read_run_config(model_dir).model == model
    with pytest.raises(ValueError, match="band_mean"):  # a run without them is not resumed
        train_lib.train_and_evaluate(*configs, model_dir)


def test_a_training_start_reads_the_dataset_root_once(root, tmp_path, monkeypatch):
    reads = []
    read_dataset_ini = dataset_root.read_dataset_ini

    def counting(path):
        reads.append(path)
        return read_dataset_ini(path)

    monkeypatch.setattr(dataset_root, "read_dataset_ini", counting)
    configs = tiny_configs(root, train_steps=1, steps_per_epoch=1, num_image_tiles=1)
    weighted = dataclasses.replace(configs[3], class_weight_power=0.5)  # counts labels too
    train_lib.train_and_evaluate(*configs[:3], weighted, configs[4], str(tmp_path / "a"))
    assert reads == [root]
    # An entry point that resolved the splits passes them on: no further reads.
    info = dataset_root.read_root(root)
    splits = tuple(input_pipeline.list_split_files(data, info) for data in configs[1:3])
    train_lib.train_and_evaluate(*configs, str(tmp_path / "b"), splits=splits)
    assert reads == [root, root]


def test_tile_panel_picks_the_clearest_and_the_cloudiest_date():
    from mtlcc_tf import summaries

    inputs = np.zeros((3, 8, 8, 15), np.float32)  # [time, height, width, channels]
    inputs[1, ..., :3] = 0.3  # bright: cloudy by brightness
    cloud_mask = np.zeros((3, 8, 8), np.uint8)
    cloud_mask[2] = 1
    assert summaries.clear_and_cloudy_steps(inputs, 3, cloud_mask) == (0, 2)
    assert summaries.clear_and_cloudy_steps(inputs, 3, None) == (0, 1)
    assert summaries.clear_and_cloudy_steps(inputs, 1, None) == (0, 0)  # padding ignored
    probabilities = np.full((8, 8, 4), 0.25, np.float32)
    panel = summaries.tile_panel(inputs, 3, np.full((8, 8), -1), probabilities, 4, cloud_mask)
    assert panel.dtype == np.uint8 and panel.shape == (96, 5 * 96 + 4 * 2, 3)


def test_profile_records_the_steps_after_the_warm_up(root, tmp_path):
    configs = tiny_configs(root, train_steps=5, steps_per_epoch=5, num_image_tiles=0)
    runtime = RuntimeConfig(strategy="default", precision="float32", profile_steps=1)
    model_dir = str(tmp_path / "run")
    train_lib.train_and_evaluate(*configs[:4], runtime, model_dir)
    traces = glob.glob(os.path.join(model_dir, "profile", "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    with pytest.raises(ValueError, match="profile_steps"):
        RuntimeConfig(profile_steps=-1).validate()
