"""Whole-scene prediction: speed, peak memory and map agreement of window sizes and overlaps.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/predict.py --size=240 --num_dates=30 \
        --precision=mixed_bfloat16 --windows=48:16,72:12,96:12,240:0
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/predict.py --size=480 --num_dates=30 \
        --model=data/experiments/accuracy/models/convlstm/seed_0 --windows=48:16,72:12,96:12
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/predict.py --repeat_tile \
        --width=10980 --height=192 --windows=72:12

Simulates a scene folder of width x height 10 m pixels (default size x size) with num_dates
dates of one year (or, with --repeat_tile, repeats one simulated tile: the simulator's own memory
grows with the scene, to a few GiB for a 10980 x 108 px strip of 30 dates) and predicts it with
`predict_lib.predict_scene`, once per `--windows` entry (window size:overlap). The model is a
randomly initialised one of --cell and --filters (default: the realistic 64-filter ConvLSTM; the
speed does not depend on the weights), exported in --precision, or a trained model (--model):
then the maps are also scored against the scene's labels (`overall_accuracy`). Maps of other
windows are compared with the 48:16 map, when that comes first (`class_agreement`, the
confidence's differences).

Each run: seconds, px/s, seconds spent waiting for the input (the next row of windows is read
while the model runs), the peak resident set while predicting (reset through
`/proc/self/clear_refs` before each run; TensorFlow and the model included), and the projected
hours for a 10980 x 10980 px scene: its number of windows times this run's seconds per window.
Prints a line per run, then as its last line one JSON object with all of them.
"""

import json
import os
import resource
import tempfile
import time

import keras
import numpy as np
from absl import app, flags

from data_pipeline import rasters
from data_pipeline.simulation import geotiff, simulator, writer
from mtlcc_tf import export_lib, hardware, model_config, models, predict_lib

_SIZE = flags.DEFINE_integer("size", 240, "Scene width and height in 10 m pixels (multiple of 6).")
_WIDTH = flags.DEFINE_integer("width", None, "Scene width in 10 m pixels; default --size.")
_HEIGHT = flags.DEFINE_integer("height", None, "Scene height in 10 m pixels; default --size.")
_NUM_DATES = flags.DEFINE_integer("num_dates", 30, "Dates of the scene.")
_REPEAT_TILE = flags.DEFINE_bool(
    "repeat_tile", False, "Repeat one simulated 240 px tile: a cheap scene of any size."
)
_CELL = flags.DEFINE_enum("cell", "lstm", ["lstm", "gru"], "Recurrent cell of the model.")
_FILTERS = flags.DEFINE_integer("filters", 64, "Recurrent filters per direction.")
_PRECISION = flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_bfloat16"], "Precision the SavedModel serves in."
)
_MODEL = flags.DEFINE_string(
    "model",
    None,
    "A trained model directory or SavedModel to predict with instead of a randomly initialised "
    "one (its decisions make --reference's agreement meaningful; a random model's near-uniform "
    "probabilities flip class at the slightest change).",
)
_WINDOWS = flags.DEFINE_string(
    "windows",
    "48:16",
    "Window size:overlap pairs to predict the scene with, one after the other; where 48:16 (the "
    "default) comes first, the maps of the others are compared with its map.",
)
REFERENCE_WINDOW = (48, 16)
_BATCH_SIZE = flags.DEFINE_integer("batchsize", 4, "Windows per model call.")
_FUSED_KERNELS = flags.DEFINE_bool(
    "fused_kernels",
    False,
    "Export the random model with mtlcc_tf's fused CPU kernels (mtlcc_tf.export "
    "--fused_kernels); off: TensorFlow's own ops, as a portable export.",
)


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


def random_model(classes, folder: str) -> predict_lib.Predictor:
    """A randomly initialised model of --cell and --filters, exported in --precision."""
    keras.utils.set_random_seed(0)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(_PRECISION.value)
    model = models.build_model(
        model_config.ModelConfig(
            num_classes=classes.num_classes, convcell=_CELL.value, convrnn_filters=_FILTERS.value
        )
    )
    keras.mixed_precision.set_global_policy(previous)
    saved_model = export_lib.export(
        model, classes, os.path.join(folder, "saved_model"), fused_kernels=_FUSED_KERNELS.value
    )
    return predict_lib.load_predictor(saved_model)


def overall_accuracy(map_path: str, labels_path: str) -> float:
    """Share of the labelled pixels (label id > 0) whose class the map gets right."""
    predicted = rasters.read_bands(map_path, 1)[..., 0]
    labels = rasters.read_bands(labels_path, 1)[..., 0]
    known = labels > 0
    return round(float(np.mean(predicted[known] == labels[known])), 6)


def map_agreement(config, reference) -> dict:
    """Share of pixels with the same class in both maps, and the confidence's largest and mean
    absolute difference."""
    classes, confidence = (
        rasters.read_bands(path, 1)[..., 0].astype(np.float64)
        for path in (config.output, config.confidence_path)
    )
    reference_classes, reference_confidence = (
        rasters.read_bands(path, 1)[..., 0].astype(np.float64)
        for path in (reference.output, reference.confidence_path)
    )
    difference = np.abs(confidence - reference_confidence)
    return {
        "class_agreement": round(float(np.mean(classes == reference_classes)), 6),
        "confidence_max_abs_difference": round(float(difference.max()), 6),
        "confidence_mean_abs_difference": round(float(difference.mean()), 6),
    }


def warm_up(predictor, config, width: int, num_dates: int) -> None:
    """One model call per batch shape the scene will use, so first-call costs are not timed."""
    xs = predict_lib.window_offsets(width, config.tile_size, config.stride)
    for batch in {min(config.batch_size, len(xs)), len(xs) % config.batch_size} - {0}:
        raw = {
            key: np.zeros((batch, num_dates, config.tile_size // factor,
                           config.tile_size // factor, bands), np.float32)
            for key, factor, bands in (("x10", 1, 4), ("x20", 2, 6), ("x60", 6, 3))
        }  # fmt: skip
        raw["doy"] = np.tile(np.arange(1, num_dates + 1, dtype=np.int32) * 5, (batch, 1))
        raw["year"] = np.full((batch, num_dates), 2016, np.int32)
        predictor.probabilities(raw)


def parse_windows(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item]
    except ValueError as error:
        raise app.UsageError(f"--windows={text}: expected size:overlap,... ({error})") from error
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise app.UsageError(f"--windows={text}: expected size:overlap,...")
    return pairs


def main(argv):
    del argv
    width, height = _WIDTH.value or _SIZE.value, _HEIGHT.value or _SIZE.value
    windows = parse_windows(_WINDOWS.value)
    # The simulator's tile: the largest that divides both sides (a multiple of 6).
    pix10 = next(
        (size for size in (48, 36, 24, 12, 6) if not width % size and not height % size), 0
    )
    if not pix10:
        raise app.UsageError(f"width {width} and height {height} must be multiples of 6")
    runs = []
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
        if _MODEL.value:
            predictor = predict_lib.load_predictor(_MODEL.value, precision=_PRECISION.value)
        else:
            predictor = random_model(classes, folder)
        loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        configs = {}
        for tile_size, overlap in windows:
            config = predict_lib.PredictConfig(
                input=scene, output=os.path.join(folder, f"map_{tile_size}_{overlap}.tif"),
                tile_size=tile_size, overlap=overlap, batch_size=_BATCH_SIZE.value,
            ).validate()  # fmt: skip
            warm_up(predictor, config, width, _NUM_DATES.value)
            peak_reset = reset_peak_rss()
            start_mib = memory_mib("VmRSS")
            summary = predict_lib.predict_scene(config, predictor)
            peak_mib = memory_mib("VmHWM")  # ru_maxrss also keeps the pre-exec peak: not reset
            full = len(predict_lib.window_offsets(10980, tile_size, config.stride)) ** 2
            run = {
                "tile_size": tile_size,
                "overlap": overlap,
                "stride": summary["stride"],
                "windows": summary["windows"],
                "predict_seconds": summary["seconds"],
                "seconds_waiting_for_input": summary["seconds_waiting_for_input"],
                "pixels_per_second": summary["pixels_per_second"],
                "peak_rss_mib": round(peak_mib, 1),
                "rss_at_predict_start_mib": round(start_mib, 1),
                "peak_rss_reset_before_predict": peak_reset,
                # A 10980 x 10980 px scene's windows at this run's seconds per window (as many
                # dates as this scene; the time per window hardly depends on the scene's width).
                "projected_full_scene_hours": round(
                    full * summary["seconds"] / summary["windows"] / 3600, 2
                ),
                "output_bytes": os.path.getsize(config.output)
                + os.path.getsize(config.confidence_path),
            }
            configs[tile_size, overlap] = config
            labels = os.path.join(scene, rasters.LABELS_FILE)
            if _MODEL.value and os.path.isfile(labels):  # a trained model: its accuracy
                run["overall_accuracy"] = overall_accuracy(config.output, labels)
            if REFERENCE_WINDOW in configs and (tile_size, overlap) != REFERENCE_WINDOW:
                run.update(map_agreement(config, configs[REFERENCE_WINDOW]))
            runs.append(run)
            print(
                f"{width} x {height} px, {summary['num_dates']} dates, {tile_size} px windows "
                f"overlapping {overlap} px ({summary['windows']}): {summary['seconds']:.1f} s, "
                f"{summary['pixels_per_second']:.0f} px/s, peak RSS {peak_mib:.0f} MiB, "
                f"full scene {run['projected_full_scene_hours']} h"
                + (f", {run['class_agreement']:.4f} of the classes of 48:16" if "class_agreement"
                   in run else "")
                + (f", OA {run['overall_accuracy']:.4f}" if "overall_accuracy" in run else ""),
                flush=True,
            )  # fmt: skip
    figures = {
        "cpu": hardware.cpu_info().model,
        "cpu_flags": hardware.cpu_info().speed_flags(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "width": width,
        "height": height,
        "num_dates": _NUM_DATES.value,
        "repeat_tile": _REPEAT_TILE.value,
        "model": _MODEL.value or f"random {_CELL.value} {_FILTERS.value} filters",
        "precision": _PRECISION.value,
        "fused_kernels": _FUSED_KERNELS.value if not _MODEL.value else None,
        "batch_size": _BATCH_SIZE.value,
        "peak_rss_before_predict_mib": round(loaded_mib, 1),
        "simulate_seconds": round(simulate_seconds, 1),
        "runs": runs,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
