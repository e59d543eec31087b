"""Cloud cells in the hidden states: which state channels detect clouds, in trained models and not.

python -m mtlcc_tf.cloud_cells --flagfile=experiments/cloud_cells.flags

For every model directory of every `--model=NAME=GLOB` row (and, with `--untrained=NAME`, the
same architectures randomly initialised), ranks every channel of every per-step state, and its
change between steps, by ROC-AUC against the per-pixel cloud mask (`cloud_cells_lib`), beside the
input bands as detectors. Writes per run the ranking (cached: a rerun resumes) and a TensorBoard run
(`<out_dir>/tensorboard/<row>/<run>`: best scores, best-cells picture), per row the best
cells over time for the first image tile, every state of the first row's first run as per-step
frames and an animated GIF, and a report comparing the rows.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import dataset_root, files, input_pipeline, records
from data_pipeline.data_config import DataConfig
from mtlcc_tf import (
    cloud_cells_images,
    cloud_cells_lib,
    cloud_cells_report,
    cloud_coverage_lib,
    hardware,
    model_dir,
    model_restore,
    models,
    summaries,
)

_DATADIR = flags.DEFINE_string("datadir", None, "Dataset root with cloud masks.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Rankings per run (auc/), frames, pictures.")
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Also write results.md, results.json and the pictures here."
)
_MODELS = flags.DEFINE_multi_string(
    "model", [], "NAME=GLOB: a row of trained model directories (convcell lstm or gru)."
)
_UNTRAINED = flags.DEFINE_multi_string(
    "untrained", [], "Row NAME: also score its architectures randomly initialised (NAME_untrained)."
)
_PARTITION = flags.DEFINE_enum("partition", "eval", dataset_root.PARTITIONS, "Tiles to analyse.")
_FOLD = flags.DEFINE_integer("fold", 0, "Fold of the train/test partitions.", lower_bound=0)
_SAMPLE_FRACTION = flags.DEFINE_float(
    "sample_fraction", 0.25, "Share of pixel-observations the AUCs are computed on.",
    lower_bound=1e-6, upper_bound=1.0,
)  # fmt: skip
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of the sample (the same pixels for every run) and of untrained weights."
)
_TOP = flags.DEFINE_integer("top", 10, "Best cells listed per run.", lower_bound=1)
_NUM_PICTURED = flags.DEFINE_integer("num_pictured", 4, "Best cells drawn per row.", lower_bound=1)
_IMAGE_TILE = flags.DEFINE_integer(
    "image_tile", 0, "Which tile of the partition (in file order) the pictures show.", lower_bound=0
)
_BATCH_SIZE = 4


def _data_config() -> DataConfig:
    return DataConfig(
        root=_DATADIR.value, partition=_PARTITION.value, fold=_FOLD.value,
        batch_size=_BATCH_SIZE, training=False, augment=False,
    ).validate()  # fmt: skip


def _load(row: cloud_coverage_lib.Row, run: str, untrained: bool):
    if not untrained:
        model, run_config, _ = model_restore.restore_for_inference(run, "best")
        return model, run_config
    run_config = model_dir.read_run_config(run)
    import keras

    keras.utils.set_random_seed(1000 * _SEED.value + row.runs.index(run))
    model = models.build_model(run_config.model)
    model(model_restore.dummy_inputs(run_config.model))
    return model, run_config


def _image_batch(data_config: DataConfig) -> dict[str, np.ndarray]:
    """The `--image_tile`-th tile of the partition as a numpy batch of one."""
    config = DataConfig(**{**vars(data_config), "batch_size": 1})
    for index, batch in enumerate(input_pipeline.build_dataset(config)):
        if index == _IMAGE_TILE.value:
            return {key: value.numpy() for key, value in batch.items()}
    raise ValueError(f"--image_tile={_IMAGE_TILE.value}: the partition has {index + 1} tiles")


def _analyse(row, run, untrained, data_config, image, out_dir, first) -> dict[str, Any]:
    name = f"{row.name}_untrained" if untrained else row.name
    run_name = row.run_name(run)
    path = os.path.join(out_dir, "auc", name, f"{run_name}.json")
    if os.path.isfile(path):
        logging.info("%s %s: ranked before, read %s", name, run_name, path)
        return files.read_json(path)
    logging.info("%s %s: ranking state channels", name, run_name)
    model, _ = _load(row, run, untrained)
    analysis = models.build_analysis_model(model)
    samples = cloud_cells_lib.collect(
        analysis, input_pipeline.build_dataset(data_config), _SAMPLE_FRACTION.value, _SEED.value
    )
    ranking = cloud_cells_lib.rank(samples, _TOP.value)
    ranking.update(row=name, run=run_name, model_dir=run, untrained=untrained)
    states = {
        key: np.asarray(value)[0]
        for key, value in analysis(
            {"inputs": image["inputs"], "sequence_length": image["sequence_length"]},
            training=False,
        ).items()
    }
    length = int(image["sequence_length"][0])
    tile = image["tileid"][0].decode()
    pictures = os.path.join(out_dir, "pictures", name)
    cloud_cells_images.plot_best_cells(
        os.path.join(pictures, f"{run_name}_best_cells.png"), image["inputs"][0],
        image["cloud_mask"][0], states, length, ranking["top"][: _NUM_PICTURED.value],
        f"{name} {run_name}, tile {tile}: best cloud cells (ROC-AUC vs the cloud mask)",
    )  # fmt: skip
    if first:
        frames = cloud_cells_images.state_frames(
            image["inputs"][0], image["cloud_mask"][0], states, length
        )
        for step, frame in enumerate(frames):
            with files.atomic_path(os.path.join(pictures, run_name, f"t{step:02d}.png")) as tmp:
                tf.io.write_file(tmp, tf.io.encode_png(frame))
        cloud_cells_images.write_gif(os.path.join(pictures, f"{run_name}_states.gif"), frames)
    _write_tensorboard(os.path.join(out_dir, "tensorboard", name, run_name), ranking, pictures)
    files.write_json(path, ranking)
    return ranking


def _write_tensorboard(directory: str, ranking: dict[str, Any], pictures: str) -> None:
    """The run's best scores and its best-cells picture, one TensorBoard run per model."""
    summary = cloud_cells_report.summarize([ranking])["rows"][0]["runs"][0]
    picture = tf.io.decode_png(tf.io.read_file(
        os.path.join(pictures, f"{ranking['run']}_best_cells.png")), channels=3)  # fmt: skip
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default():
        for key in ("best_activation", "best_change", "strong_cells"):
            summaries.scalar(f"cloud_cells/{key}", summary[key], 0)
        summaries.image("cloud_cells/best_cells", picture.numpy(), 0, "best cloud cells over time")
    writer.close()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags need --name=value")
    start = time.monotonic()
    try:
        rows = [cloud_coverage_lib.parse_model_row(text) for text in _MODELS.value]
        if not rows:
            raise ValueError("no rows: give --model=NAME=GLOB")
        names = [row.name for row in rows]
        unknown = sorted(set(_UNTRAINED.value) - set(names))
        if unknown:
            raise ValueError(f"--untrained={unknown}: not among the --model rows {names}")
        data_config = _data_config()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    jobs = [(row, False) for row in rows] + [
        (row, True) for row in rows if row.name in _UNTRAINED.value
    ]
    rankings = []
    try:
        image = _image_batch(data_config)
        for index, (row, untrained) in enumerate(jobs):
            for run in row.runs:
                first = index == 0 and run == row.runs[0]
                rankings.append(
                    _analyse(row, run, untrained, data_config, image, _OUT_DIR.value, first)
                )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"cloud_cells: {error}")
    except tf.errors.OpError as error:
        sys.exit(f"cloud_cells: {records.op_error_message(error)}")
    cpu = hardware.cpu_info()
    header = [
        f"- command: `{shlex.join(['python', '-m', 'mtlcc_tf.cloud_cells', *sys.argv[1:]])}`",
        f"- hardware: {cpu.model} ({cpu.kind}), {os.cpu_count()} CPUs;"
        f" {time.monotonic() - start:.0f} s (runs ranked before this one not counted)",
        f"- tiles: partition '{_PARTITION.value}' (fold {_FOLD.value}) of `{_DATADIR.value}`;"
        f" {_SAMPLE_FRACTION.value:.0%} of the pixel-observations sampled (seed {_SEED.value});"
        f" pictures: tile {image['tileid'][0].decode()}",
    ]
    for directory in filter(None, (_OUT_DIR.value, _RESULTS_DIR.value)):
        paths = cloud_cells_report.write_results(rankings, directory, header, _OUT_DIR.value)
        for path in paths:
            logging.info("wrote %s", path)
    print(cloud_cells_report.markdown(cloud_cells_report.summarize(rankings), header))


if __name__ == "__main__":
    flags.mark_flags_as_required(["datadir", "out_dir"])
    app.run(main)
