"""The model directory: run config (config.json), checkpoint locations, run records.

Layout of a model directory written by `mtlcc_tf.train`:

    config.json           model, data and class configuration of the run (`write_run_config`)
    flags.txt             resolved flags; `--flagfile=<model_dir>/flags.txt` repeats the run
    checkpoints/          last checkpoints (model, optimizer, step, input position)
    best/                 the checkpoint with the best validation kappa, and its metrics.json
    validated.json        the last step whose validation finished
    train_time.json       seconds of training up to the last checkpoint, over every attempt
    train/, validation/   TensorBoard summaries
    workers/worker_<k>/   checkpoints of non-chief workers of a multi-worker run
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any

from data_pipeline import dataset_root, files
from data_pipeline.data_config import DataConfig
from mtlcc_tf.model_config import ModelConfig

FORMAT = 1
CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
BEST_METRICS_FILE = "metrics.json"
VALIDATED_FILE = "validated.json"  # the last step whose validation finished
TRAIN_TIME_FILE = "train_time.json"  # seconds of training up to the last checkpoint


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What `config.json` holds: enough to rebuild the model and read its data."""

    model: ModelConfig
    data: DataConfig
    classes: dataset_root.ClassTable


def _json_ready(config: Any) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
    }


def run_config_dict(
    model_config: ModelConfig,
    data_config: DataConfig,
    class_table: dataset_root.ClassTable,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object that `write_run_config` writes."""
    content = {
        "model": _json_ready(model_config),
        "data": _json_ready(data_config),
        "classes": {"ids": list(class_table.ids), "names": list(class_table.names)},
        "format": FORMAT,
    }
    if runtime is not None:
        content["runtime"] = runtime
    return content


def write_run_config(
    model_dir: str,
    model_config: ModelConfig,
    data_config: DataConfig,
    class_table: dataset_root.ClassTable,
    runtime: dict[str, Any] | None = None,
) -> None:
    """Writes `model_dir/config.json` (atomically: readers never see half a file).

    `runtime` (the resolved precision, the CPU, whether the fused kernels ran) is kept for the
    record under "runtime"; rebuilding the model does not need it.
    """
    content = run_config_dict(model_config, data_config, class_table, runtime)
    files.write_json(os.path.join(model_dir, CONFIG_FILE), content)


def _is_tuple_type(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple_type(argument) for argument in typing.get_args(annotation))
    return annotation is tuple or origin is tuple


def _from_dict(cls: type, values: dict[str, Any], path: str, section: str) -> Any:
    """Builds dataclass `cls` from JSON values; lists become tuples where the field is one."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{path}: [{section}] has unknown fields {unknown} (newer version?)")
    converted = {
        key: tuple(value) if isinstance(value, list) and _is_tuple_type(hints[key]) else value
        for key, value in values.items()
    }
    try:
        return cls(**converted)
    except TypeError as error:
        raise ValueError(f"{path}: [{section}]: {error}") from error


def has_run_config(model_dir: str) -> bool:
    """Whether `model_dir` holds a config.json (a run was started there)."""
    return files.exists(os.path.join(model_dir, CONFIG_FILE))


def read_run_config(model_dir: str) -> RunConfig:
    """Reads `model_dir/config.json`.

    Raises:
        FileNotFoundError: if the file is missing (names the file).
        ValueError: if it is malformed (names the file and the problem).
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not files.exists(path):
        raise FileNotFoundError(
            f"{path}: missing; is {model_dir!r} a model directory written by mtlcc_tf.train?"
        )
    try:
        content = json.loads(files.read_text(path))
        if content.get("format") != FORMAT:
            raise ValueError(f"format {content.get('format')!r}, expected {FORMAT}")
        model = _from_dict(ModelConfig, content["model"], path, "model")
        data = _from_dict(DataConfig, content["data"], path, "data")
        classes = dataset_root.ClassTable(
            tuple(int(i) for i in content["classes"]["ids"]), tuple(content["classes"]["names"])
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: malformed run config: {error!r}") from error
    return RunConfig(model=model, data=data, classes=classes)


def with_run_band_statistics(model_dir: str, model_config: ModelConfig) -> ModelConfig:
    """`model_config` with the band statistics of the run in `model_dir`, where it has none of
    its own and that run has some (a resume of `--standardize_bands` keeps its statistics)."""
    if model_config.band_mean or not has_run_config(model_dir):
        return model_config
    previous = read_run_config(model_dir).model
    if not previous.band_mean:
        return model_config
    return dataclasses.replace(
        model_config, band_mean=previous.band_mean, band_std=previous.band_std
    )


def check_resumable(
    model_dir: str, model_config: ModelConfig, class_table: dataset_root.ClassTable
) -> None:
    """Refuses to resume a model directory whose run had another model or other classes.

    Raises:
        ValueError: naming the fields that differ (old, new).
    """
    if not has_run_config(model_dir):
        return
    previous = read_run_config(model_dir)
    for what, old, new in (
        ("model", previous.model, model_config),
        ("classes", previous.classes, class_table),
    ):
        if old != new:
            changed = {
                key: (value, getattr(new, key))
                for key, value in dataclasses.asdict(old).items()
                if value != getattr(new, key)
            }
            raise ValueError(
                f"{model_dir} holds a run with another {what} configuration (old, new): "
                f"{changed}; use a new --model_dir or the original settings"
            )


def read_runtime_record(model_dir: str) -> dict[str, Any]:
    """The "runtime" entry of config.json (what was resolved and recorded); {} if none."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not files.exists(path):
        return {}
    try:
        return dict(json.loads(files.read_text(path)).get("runtime") or {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: malformed run config: {error!r}") from error


def resume_changes(model_dir: str, data_config: DataConfig, num_train_files: int) -> list[str]:
    """What differs in the training data settings of a run being resumed: 'field: old -> new'.

    Compares `data_config` with the DataConfig in config.json, and the number of training
    files with the one recorded there (runtime.train_files). Empty for a new model directory.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not files.exists(path):
        return []
    previous = read_run_config(model_dir).data
    changes = [
        f"{key}: {value!r} -> {getattr(data_config, key)!r}"
        for key, value in dataclasses.asdict(previous).items()
        if value != getattr(data_config, key)
    ]
    files_before = read_runtime_record(model_dir).get("train_files")
    if files_before is not None and files_before != num_train_files:
        changes.append(f"training files: {files_before} -> {num_train_files}")
    return changes


def remove_partial_checkpoints(model_dir: str) -> list[str]:
    """Deletes the `<name>_temp` folders an interrupted checkpoint write leaves; returns them.

    Only call it when no process of the run is writing (at start-up).
    """
    patterns = [
        os.path.join(model_dir, folder, "*_temp")
        for folder in (CHECKPOINTS, BEST, os.path.join("workers", "*", CHECKPOINTS))
    ]
    import tensorflow as tf  # noqa: PLC0415 - reading run configs needs no TensorFlow

    removed = []
    for pattern in patterns:
        for path in sorted(tf.io.gfile.glob(pattern)):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
                removed.append(path)
    return removed


def checkpoint_dir(model_dir: str, which: str = "last") -> str:
    """`model_dir/checkpoints` ("last") or `model_dir/best` ("best")."""
    if which not in ("best", "last"):
        raise ValueError(f"which={which!r}: expected 'best' or 'last'")
    return os.path.join(model_dir, BEST if which == "best" else CHECKPOINTS)


def worker_checkpoint_dir(model_dir: str, index: int) -> str:
    """Where non-chief worker `index` keeps its own checkpoints (its input position differs)."""
    return os.path.join(model_dir, "workers", f"worker_{index}", CHECKPOINTS)


def checkpoint_path(model_dir: str, which: str = "best") -> str:
    """The path of the checkpoint to restore.

    Args:
        model_dir: written by `mtlcc_tf.train`.
        which: "best" (falls back to "last" before the first evaluation), "last", or the path
            (prefix) of a specific checkpoint.

    Raises:
        FileNotFoundError: if there is no checkpoint (names the folders looked in).
    """
    import tensorflow as tf  # noqa: PLC0415 - reading run configs needs no TensorFlow

    if which not in ("best", "last"):
        if files.exists(f"{which}.index"):
            return which
        raise FileNotFoundError(f"{which}: no such checkpoint (expected {which}.index)")
    candidates = ["best", "last"] if which == "best" else ["last"]
    for candidate in candidates:
        path = tf.train.latest_checkpoint(checkpoint_dir(model_dir, candidate))
        if path:
            return path
    looked = [checkpoint_dir(model_dir, candidate) for candidate in candidates]
    raise FileNotFoundError(f"no checkpoint in {looked}; has training saved one yet?")


def read_best_metrics(model_dir: str) -> dict[str, Any] | None:
    """`model_dir/best/metrics.json` (step and validation metrics), or None before one."""
    path = os.path.join(checkpoint_dir(model_dir, "best"), BEST_METRICS_FILE)
    if not files.exists(path):
        return None
    return json.loads(files.read_text(path))


def write_best_metrics(model_dir: str, metrics: dict[str, Any]) -> None:
    files.write_json(os.path.join(checkpoint_dir(model_dir, "best"), BEST_METRICS_FILE), metrics)


def read_validated_step(model_dir: str) -> int | None:
    """The last step whose validation finished (`validated.json`); None in older model dirs."""
    path = os.path.join(model_dir, VALIDATED_FILE)
    if not files.exists(path):
        return None
    return int(json.loads(files.read_text(path))["step"])


def write_validated_step(model_dir: str, step: int) -> None:
    files.write_json(os.path.join(model_dir, VALIDATED_FILE), {"step": step})


def read_train_time(model_dir: str) -> dict[str, Any] | None:
    """`train_time.json`: {"step", "seconds", "attempts", "complete"}, or None before one.

    "seconds" are the training processes' seconds (from the start of training to a checkpoint
    save) summed over the `attempts` that led to the checkpoint of "step"; a run resumed from a
    checkpoint that the file did not cover (an older model directory, a kill between a
    checkpoint and its record) has "complete" false: its seconds are approximate.
    """
    path = os.path.join(model_dir, TRAIN_TIME_FILE)
    if not files.exists(path):
        return None
    record = json.loads(files.read_text(path))
    if not isinstance(record, dict) or not {"step", "seconds", "attempts"} <= set(record):
        raise ValueError(f"{path}: not a training time record (step, seconds, attempts)")
    return record


def write_train_time(model_dir: str, record: dict[str, Any]) -> None:
    files.write_json(os.path.join(model_dir, TRAIN_TIME_FILE), record)
