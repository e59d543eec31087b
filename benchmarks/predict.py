"""Whole-scene prediction throughput: pixels per second and peak memory on a simulated scene.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/predict.py [--size=240 --num_dates=30]

Simulates a scene folder of size x size 10 m pixels with num_dates dates of one year, exports a
small randomly initialised ConvGRU (the speed does not depend on the weights) as a SavedModel and
predicts the scene with `predict_lib.predict_scene`. Prints the figures, then as its last line one
JSON object with all of them. Peak memory is the process's ru_maxrss (TensorFlow included).
"""

import json
import os
import platform
import resource
import tempfile
import time

import keras
from absl import app, flags

from data_pipeline.simulation import geotiff, simulator, writer
from mtlcc_tf import configs, export_lib, models, predict_lib

_SIZE = flags.DEFINE_integer("size", 240, "Scene width and height in 10 m pixels (multiple of 24).")
_NUM_DATES = flags.DEFINE_integer("num_dates", 30, "Dates of the scene.")
_FILTERS = flags.DEFINE_integer("filters", 8, "ConvGRU filters per direction.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 48, "Window size in 10 m pixels.")
_OVERLAP = flags.DEFINE_integer("overlap", 16, "Window overlap in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Windows per model call.")


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as folder:
        scene = os.path.join(folder, "scene")
        num_tiles = _SIZE.value // 24
        simulation = simulator.SimulationConfig(
            num_tiles_x=num_tiles, num_tiles_y=num_tiles, pix10=24, years=(2016,),
            nobs=_NUM_DATES.value, num_observations=_NUM_DATES.value,
        )  # fmt: skip
        start = time.perf_counter()
        geotiff.write_scene_folder(scene, simulation)
        simulate_seconds = time.perf_counter() - start
        classes = writer.class_table()
        keras.utils.set_random_seed(0)
        model = models.build_model(
            configs.ModelConfig(
                num_classes=classes.num_classes, convcell="gru", convrnn_filters=_FILTERS.value
            )
        )
        saved_model = export_lib.export(model, classes, os.path.join(folder, "saved_model"))
        predictor = predict_lib.load_predictor(saved_model)
        loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        config = predict_lib.PredictConfig(
            input=scene, output=os.path.join(folder, "map.tif"), tile_size=_TILE_SIZE.value,
            overlap=_OVERLAP.value, batch_size=_BATCH_SIZE.value,
        )  # fmt: skip
        summary = predict_lib.predict_scene(config, predictor)
        map_bytes = os.path.getsize(config.output) + os.path.getsize(config.confidence_path)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    figures = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "size": _SIZE.value,
        "num_dates": summary["num_dates"],
        "filters": _FILTERS.value,
        "tile_size": _TILE_SIZE.value,
        "stride": summary["stride"],
        "batch_size": _BATCH_SIZE.value,
        "windows": summary["windows"],
        "predict_seconds": summary["seconds"],
        "pixels_per_second": summary["pixels_per_second"],
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_before_predict_mib": round(loaded_mib, 1),
        "simulate_seconds": round(simulate_seconds, 1),
        "output_bytes": map_bytes,
    }
    print(
        f"{_SIZE.value} x {_SIZE.value} px, {summary['num_dates']} dates, "
        f"{summary['windows']} windows: {summary['seconds']:.1f} s, "
        f"{summary['pixels_per_second']:.0f} px/s, peak RSS {peak_mib:.0f} MiB "
        f"({loaded_mib:.0f} MiB before predicting)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
