"""Whole-scene prediction throughput: pixels per second and peak memory on a simulated scene.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/predict.py [--size=240 --num_dates=30]
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/predict.py --repeat_tile \
        --width=10980 --height=108

Simulates a scene folder of width x height 10 m pixels (default size x size) with num_dates
dates of one year (or, with --repeat_tile, repeats one simulated tile: the simulator's own memory
grows with the scene, to a few GiB for a 10980 x 108 px strip of 30 dates), exports a small
randomly initialised ConvGRU (the speed does not depend on the weights) as a SavedModel and
predicts the scene with `predict_lib.predict_scene`. Prints the figures, then as its last line
one JSON object with all of them.

Peak memory: the process's peak resident set is reset (`/proc/self/clear_refs`) once the scene is
simulated and the model loaded, so `peak_rss_mib` is the peak while predicting (TensorFlow and
the model included, the simulator's arrays not); `peak_rss_before_predict_mib` is the peak up to
then. Full-width strips (--width=10980) of a few window rows against narrower or taller ones show
what the memory depends on: one row of windows across the scene's width.
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
from mtlcc_tf import export_lib, model_config, models, predict_lib

_SIZE = flags.DEFINE_integer("size", 240, "Scene width and height in 10 m pixels (multiple of 6).")
_WIDTH = flags.DEFINE_integer("width", None, "Scene width in 10 m pixels; default --size.")
_HEIGHT = flags.DEFINE_integer("height", None, "Scene height in 10 m pixels; default --size.")
_NUM_DATES = flags.DEFINE_integer("num_dates", 30, "Dates of the scene.")
_REPEAT_TILE = flags.DEFINE_bool(
    "repeat_tile", False, "Repeat one simulated 240 px tile: a cheap scene of any size."
)
_FILTERS = flags.DEFINE_integer("filters", 8, "ConvGRU filters per direction.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 48, "Window size in 10 m pixels.")
_OVERLAP = flags.DEFINE_integer("overlap", 16, "Window overlap in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batchsize", 4, "Windows per model call.")


def reset_peak_rss() -> bool:
    """Resets the process's peak resident set (VmHWM) to the current one; False if not
    permitted (Linux >= 4.0 only)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_mib(field: str) -> float:
    """`VmRSS` (resident now) or `VmHWM` (peak since start or reset) of /proc/self/status."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def main(argv):
    del argv
    width, height = _WIDTH.value or _SIZE.value, _HEIGHT.value or _SIZE.value
    # The simulator's tile: the largest that divides both sides (a multiple of 6).
    pix10 = next(
        (size for size in (48, 36, 24, 12, 6) if not width % size and not height % size), 0
    )
    if not pix10:
        raise app.UsageError(f"width {width} and height {height} must be multiples of 6")
    with tempfile.TemporaryDirectory() as folder:
        scene = os.path.join(folder, "scene")
        simulation = simulator.SimulationConfig(
            num_tiles_x=width // pix10, num_tiles_y=height // pix10, pix10=pix10, years=(2016,),
            nobs=_NUM_DATES.value, num_observations=_NUM_DATES.value,
        )  # fmt: skip
        start = time.perf_counter()
        if _REPEAT_TILE.value:
            geotiff.write_repeated_scene(scene, width, height, _NUM_DATES.value)
        else:
            geotiff.write_scene_folder(scene, simulation)
        simulate_seconds = time.perf_counter() - start
        classes = writer.class_table()
        keras.utils.set_random_seed(0)
        model = models.build_model(
            model_config.ModelConfig(
                num_classes=classes.num_classes, convcell="gru", convrnn_filters=_FILTERS.value
            )
        )
        saved_model = export_lib.export(model, classes, os.path.join(folder, "saved_model"))
        predictor = predict_lib.load_predictor(saved_model)
        loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        peak_reset = reset_peak_rss()
        start_mib = memory_mib("VmRSS")
        config = predict_lib.PredictConfig(
            input=scene, output=os.path.join(folder, "map.tif"), tile_size=_TILE_SIZE.value,
            overlap=_OVERLAP.value, batch_size=_BATCH_SIZE.value,
        )  # fmt: skip
        summary = predict_lib.predict_scene(config, predictor)
        map_bytes = os.path.getsize(config.output) + os.path.getsize(config.confidence_path)
        peak_mib = memory_mib("VmHWM")  # ru_maxrss also keeps the pre-exec peak: not reset
    figures = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "width": width,
        "height": height,
        "num_dates": summary["num_dates"],
        "repeat_tile": _REPEAT_TILE.value,
        "filters": _FILTERS.value,
        "tile_size": _TILE_SIZE.value,
        "stride": summary["stride"],
        "batch_size": _BATCH_SIZE.value,
        "windows": summary["windows"],
        "predict_seconds": summary["seconds"],
        "pixels_per_second": summary["pixels_per_second"],
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_before_predict_mib": round(loaded_mib, 1),
        "rss_at_predict_start_mib": round(start_mib, 1),
        "peak_rss_reset_before_predict": peak_reset,
        "simulate_seconds": round(simulate_seconds, 1),
        "output_bytes": map_bytes,
    }
    print(
        f"{width} x {height} px, {summary['num_dates']} dates, "
        f"{summary['windows']} windows: {summary['seconds']:.1f} s, "
        f"{summary['pixels_per_second']:.0f} px/s, peak RSS while predicting {peak_mib:.0f} MiB "
        f"({start_mib:.0f} MiB at its start, peak {loaded_mib:.0f} MiB before)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
