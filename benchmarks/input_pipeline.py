"""Input pipeline throughput vs. one training step, simulator tiles/s, bytes per tile per schema.

    .venv/bin/python benchmarks/input_pipeline.py [--pix10=48 --nobs=46 --batchsize=4]

Prints human-readable lines, then as its last line one JSON object with every figure.
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from data_pipeline import dataset_root, input_pipeline, records  # noqa: E402
from data_pipeline.data_config import DataConfig  # noqa: E402
from data_pipeline.simulation import simulator  # noqa: E402
from mtlcc_tf import hardware  # noqa: E402

_PIX10 = flags.DEFINE_integer("pix10", 48, "Tile size in 10 m pixels.")
_NOBS = flags.DEFINE_integer("nobs", 46, "Time steps per record.")
_BATCH = flags.DEFINE_integer("batchsize", 4, "Batch size of the pipeline and the train step.")
_NUM_TILES = flags.DEFINE_integer("num_tiles", 36, "Tiles simulated per year for the dataset.")
_BATCHES = flags.DEFINE_integer("batches", 60, "Batches timed from the input pipeline.")
_FILTERS = flags.DEFINE_integer("filters", 64, "ConvLSTM filters of the timed train step.")
_STEPS = flags.DEFINE_integer("train_steps", 5, "Timed training steps.")


def time_pipeline(root: str, batch_size: int, num_batches: int) -> float:
    """Samples per second of the full training pipeline (read, parse, subsample, augment)."""
    config = DataConfig(root=root, batch_size=batch_size, training=True, augment=True)
    iterator = iter(input_pipeline.build_dataset(config))
    for _ in range(3):  # warm-up: tracing and filling the prefetch buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
    batch["inputs"].numpy()
    return num_batches * batch_size / (time.perf_counter() - start)


def time_train_step(batch: dict, num_classes: int, filters: int, steps: int) -> float | None:
    """Samples per second of one bidirectional ConvLSTM training step on the same shape."""
    try:
        from mtlcc_tf import metrics, model_config, models
    except ImportError:
        return None
    model = models.build_model(
        model_config.ModelConfig(num_classes=num_classes, convcell="lstm", convrnn_filters=filters)
    )
    optimizer = tf.keras.optimizers.Adam(1e-3)
    inputs = {key: batch[key] for key in input_pipeline.MODEL_KEYS}

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, count = metrics.masked_cross_entropy(
                batch["labels"], model(inputs, training=True)
            )
            loss = loss / tf.maximum(count, 1.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    step()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    return steps * int(batch["inputs"].shape[0]) / (time.perf_counter() - start)


def schema_sizes(root: str) -> dict:
    """Bytes per tile of both schemas for the same content (GZIP and uncompressed)."""
    path = next(
        os.path.join(root, "data16", name)
        for name in sorted(os.listdir(os.path.join(root, "data16")))
    )
    tile, _ = records.read_tile(path)
    sizes = {}
    with tempfile.TemporaryDirectory() as scratch:
        for schema in (records.ORIGINAL, records.COMPACT):
            for compression in ("GZIP", None):
                suffix = "tfrecord.gz" if compression else "tfrecord"
                target = os.path.join(scratch, f"{schema}.{suffix}")
                sizes[f"{schema}_{'gzip' if compression else 'raw'}"] = records.write_tile(
                    target, tile, schema, compression
                )
    return sizes


def main(argv):
    del argv
    pix10, nobs, batch_size = _PIX10.value, _NOBS.value, _BATCH.value
    figures = {
        "pix10": pix10,
        "nobs": nobs,
        "batch_size": batch_size,
        "cpu": hardware.cpu_info().model,
    }
    figures["cpu_count"] = os.cpu_count()
    # The simulator is timed on one core, as the issue asks.
    figures["simulator_tiles_per_second_24px_46obs"] = round(
        simulator.measure_tiles_per_second(pix10=24, num_observations=46), 2
    )
    print(f"simulator: {figures['simulator_tiles_per_second_24px_46obs']} tiles/s (24 px, 46 obs)")
    with tempfile.TemporaryDirectory() as root:
        side = int(np.ceil(np.sqrt(_NUM_TILES.value)))
        start = time.perf_counter()
        simulator.simulate_dataset(
            root, num_tiles_x=side, num_tiles_y=side, pix10=pix10, nobs=nobs, seed=0
        )
        figures["simulate_seconds"] = round(time.perf_counter() - start, 1)
        num_classes = dataset_root.read_classes(root).num_classes
        figures.update({f"bytes_per_tile_{k}": v for k, v in schema_sizes(root).items()})
        for key in ("original_gzip", "compact_gzip", "original_raw", "compact_raw"):
            print(f"bytes per tile, {key}: {figures[f'bytes_per_tile_{key}']}")
        figures["pipeline_samples_per_second"] = round(
            time_pipeline(root, batch_size, _BATCHES.value), 1
        )
        print(f"input pipeline: {figures['pipeline_samples_per_second']} samples/s")
        config = DataConfig(root=root, batch_size=batch_size, training=True)
        batch = next(iter(input_pipeline.build_dataset(config)))
        train = time_train_step(batch, num_classes, _FILTERS.value, _STEPS.value)
    if train is not None:
        figures["train_step_samples_per_second"] = round(train, 2)
        figures["train_step_model"] = f"bidirectional ConvLSTM, {_FILTERS.value} filters, fp32"
        figures["pipeline_over_train_step"] = round(
            figures["pipeline_samples_per_second"] / train, 1
        )
        figures["target_met_10x"] = figures["pipeline_over_train_step"] >= 10
        print(
            f"train step: {train:.2f} samples/s -> pipeline delivers "
            f"{figures['pipeline_over_train_step']}x what training consumes (target >= 10x)"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
