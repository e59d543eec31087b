"""Whole-scene prediction: sliding windows over a scene folder, blended into class-id GeoTIFFs.

A scene folder (`<YYYYMMDD>_10m/_20m/_60m.tif` per date, one file per band, or Level-1C `.SAFE`
products; see `data_pipeline.scenes.find_dates`) of any size is cut into square windows of
`tile_size` 10 m pixels that overlap by `overlap` pixels. The last window of a row or column is
shifted inwards so that it ends at the scene's border (rounded up to whole 60 m pixels); a scene
smaller than a window, or a border that is not a whole 60 m pixel, is padded by repeating the
edge pixels and the padding is cropped from the map.

Blending: each window's softmax probabilities are weighted by a 2-D Hann window,
`w(y, x) = h(y) * h(x)` with `h(i) = max(WEIGHT_FLOOR, sin²(π (i + 0.5) / tile_size))`, summed
per pixel and divided by the summed weights. Window edges, where the convolutions see padding
rather than context, count least; the floor keeps pixels that only one window covers (the
scene's border) defined. A pixel covered by one window gets exactly that window's
probabilities, so with `overlap=0` on a scene cut like `ingest` cuts it the map equals the
per-tile predictions.

Memory: the scene is read one row of windows (a strip of `tile_size` rows, all dates) at a time,
and finished rows are written to the GeoTIFFs as soon as no later window touches them; GDAL's
block cache holds at most the blocks of every file that a row of windows touches
(`rasters.block_cache`). So memory is O(scene width x (tile_size + block height) x (classes +
dates x bands)), not the scene.

No-data: a pixel without data on every date of the year (all 10 m bands 0, the files' NoData
value, or NaN; see `rasters.read_bands`) gets class 0 and confidence -1, both the files' NoData
values, whatever the model says there. NaN or infinite reflectances read as no-data, so they never
reach the model (whose serving signature refuses them).

Files for GIS: the class map gets a colour table and class names (in its `.aux.xml`), a QGIS style
beside it (`<map>.qml`, loaded by QGIS with the map) and internal overviews (nearest neighbour for
the classes, average for the confidence) down to about 64 px, so a whole scene opens fast.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from concurrent import futures

import numpy as np
import tensorflow as tf
from absl import logging

from data_pipeline import dataset_root, files, rasters, records, scenes, transforms
from data_pipeline.rasters import RasterError
from mtlcc_tf import export_lib, images, map_files, model_dir, model_restore

WEIGHT_FLOOR = 0.05


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """What to predict and how.

    Attributes:
      input: the scene folder, a Level-1C `.SAFE` folder or a folder of them.
      output: the class-id GeoTIFF to write.
      confidence_output: the confidence GeoTIFF; default `<output stem>_confidence.tif`.
      tile_size: window size in 10 m pixels, a multiple of 6.
      overlap: pixels shared by neighbouring windows; rounded up so that the stride is a whole
        number of 60 m pixels (16 -> 18 for tile_size 48). The defaults, 72 and 12, were
        measured against 48 and 16 (benchmarks/README.md, `predict.py`): the same accuracy on
        the simulated scene, 1.9x faster.
      batch_size: windows per model call.
      year: the year whose dates to use; None for a scene of one year.
      resample: warp files that are not on the Sentinel-2 grid onto it (`data_pipeline.grids`).
    """

    input: str
    output: str
    confidence_output: str | None = None
    tile_size: int = 72
    overlap: int = 12
    batch_size: int = 4
    year: int | None = None
    resample: bool = False

    def validate(self) -> PredictConfig:
        if self.tile_size < 6 or self.tile_size % 6:
            raise ValueError(f"tile_size={self.tile_size} must be a positive multiple of 6")
        if not 0 <= self.overlap < self.tile_size - 5:
            raise ValueError(f"overlap={self.overlap} must be in [0, tile_size - 6]")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        return self

    @property
    def stride(self) -> int:
        """Window step: tile_size - overlap, rounded down to whole 60 m pixels."""
        return (self.tile_size - self.overlap) // 6 * 6

    @property
    def confidence_path(self) -> str:
        return self.confidence_output or f"{os.path.splitext(self.output)[0]}_confidence.tif"

    @property
    def style_path(self) -> str:
        """The class map's QGIS style, which QGIS loads with it: `<output stem>.qml`."""
        return f"{os.path.splitext(self.output)[0]}.qml"


def window_offsets(length: int, tile_size: int, stride: int) -> list[int]:
    """Offsets of the windows along one axis; the last ends at `length` rounded up to 6 px."""
    if length <= tile_size:
        return [0]
    last = -(-(length - tile_size) // 6) * 6
    return list(range(0, last, stride)) + [last]


def blend_weights(tile_size: int) -> np.ndarray:
    """float32 [tile_size, tile_size]: the 2-D Hann window with a floor (module docstring)."""
    hann = np.sin(np.pi * (np.arange(tile_size) + 0.5) / tile_size) ** 2
    hann = np.maximum(WEIGHT_FLOOR, hann)
    return np.outer(hann, hann).astype(np.float32)


def select_dates(dates: dict, year: int | None, folder: str) -> dict:
    """The dates of one year; a scene of several years needs `year`."""
    years = sorted({scenes.parse_date(date)[0] for date in dates})
    if year is None and len(years) > 1:
        raise ValueError(f"{folder}: the scene holds dates of the years {years}; pick one (year)")
    year = years[0] if year is None else year
    chosen = {date: files for date, files in dates.items() if date.startswith(f"{year:04d}")}
    if not chosen:
        raise ValueError(f"{folder}: no dates of {year}; the scene has the years {years}")
    return chosen


def _read_strip(sources_by_date: list, num_bands: int, y0: int, height: int, width: int):
    """[dates, height, width, bands] from each date's sources, rows y0.. and columns 0..,
    repeating the last row/column where the window reaches beyond the raster."""
    dataset = sources_by_date[0][0][1]
    rows = np.clip(np.arange(y0, y0 + height), 0, dataset.RasterYSize - 1)
    columns = np.clip(np.arange(width), 0, dataset.RasterXSize - 1)
    top, num_rows = int(rows[0]), int(rows[-1] - rows[0] + 1)
    window = (0, top, int(columns[-1] + 1), num_rows)
    strips = [scenes.read_sources(sources, num_bands, window) for sources in sources_by_date]
    return np.stack(strips)[:, rows - top][:, :, columns]


class _Accumulator:
    """Weighted probability sums of the rows [top, top + tile_size) of the padded scene."""

    def __init__(self, tile_size: int, width: int, num_classes: int):
        self.weights = blend_weights(tile_size)
        self.sums = np.zeros((tile_size, width, num_classes), np.float32)
        self.total = np.zeros((tile_size, width), np.float32)

    def add(self, x: int, probabilities: np.ndarray) -> None:
        size = self.weights.shape[0]
        self.sums[:, x : x + size] += probabilities * self.weights[..., None]
        self.total[:, x : x + size] += self.weights

    def pop(self, num_rows: int) -> np.ndarray:
        """The blended probabilities of the first `num_rows` rows; shifts the rest up."""
        done = self.sums[:num_rows] / self.total[:num_rows, :, None]
        self.sums = np.concatenate([self.sums[num_rows:], np.zeros_like(self.sums[:num_rows])])
        self.total = np.concatenate([self.total[num_rows:], np.zeros_like(self.total[:num_rows])])
        return done


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A model that maps raw record tensors of a batch of windows to class probabilities.

    Attributes:
      probabilities: {"x10", "x20", "x60" float32 reflectance x 1e4, "doy", "year" int32} ->
        float32 [batch, H, W, num_classes] (the `serving_default` inputs, see export_lib).
      class_table: the classes, index i of the probabilities <-> class_table.known_ids[i].
      source: what was loaded, for messages.
      tile_size: the static input size the model needs, or None for any.
      train_years: the years it was trained on; () if unknown.
    """

    probabilities: Callable[[dict[str, np.ndarray]], np.ndarray]
    class_table: dataset_root.ClassTable
    source: str
    tile_size: int | None = None
    train_years: tuple[int, ...] = ()


def _raw_signature() -> list[tf.TensorSpec]:
    return [
        *(tf.TensorSpec([None, None, None, None, bands], tf.float32, name=key)
          for key, bands in export_lib.BANDS.items()),
        tf.TensorSpec([None, None], tf.int32, name="doy"),
        tf.TensorSpec([None, None], tf.int32, name="year"),
    ]  # fmt: skip


def load_predictor(path: str, which: str = "best", precision: str | None = None) -> Predictor:
    """Loads a SavedModel written by `mtlcc_tf.export` (a folder with `saved_model.pb`) or a
    model directory written by `mtlcc_tf.train` (restored from checkpoint `which`).

    `precision`: for a model directory, the Keras policy to compute in ("float32",
    "mixed_bfloat16"; None: float32). A SavedModel computes in the precision chosen at export.

    Both run the same preprocessing, `transforms.batch_model_inputs`: the SavedModel has it in its
    graph, and the model directory's Keras model is wrapped in it here.

    Raises:
      FileNotFoundError, ValueError: naming what is missing or malformed.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such SavedModel or model directory")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        loaded = export_lib.load(path)
        if export_lib.SERVING_KEY not in loaded.signatures:
            raise ValueError(f"{path}: SavedModel has no {export_lib.SERVING_KEY!r} signature")
        serve = loaded.signatures[export_lib.SERVING_KEY]
        table = dataset_root.read_class_file(os.path.join(path, "assets", "classes.txt"))

        # `loaded` is bound as a default: signatures alone do not keep its variables alive.
        def saved_model_probabilities(raw: dict[str, np.ndarray], _loaded=loaded) -> np.ndarray:
            return serve(**{key: tf.constant(value) for key, value in raw.items()})[
                "probabilities"
            ].numpy()

        years = ()
        if export_lib.METADATA_KEY in loaded.signatures:  # exports before 2026-12 lack it
            metadata = loaded.signatures[export_lib.METADATA_KEY]()
            years = tuple(int(year) for year in metadata["train_years"].numpy())
            exported = metadata["precision"].numpy().decode()
            if precision and precision != exported:
                logging.warning(
                    "%s computes in %s, chosen at export; %s needs another export "
                    "(mtlcc_tf.export --precision=%s)", path, exported, precision, precision,
                )  # fmt: skip
        return Predictor(saved_model_probabilities, table, path, train_years=years)
    model, run_config, checkpoint = model_restore.restore_for_inference(path, which, precision)

    @tf.function(input_signature=_raw_signature())
    def serve_model(x10, x20, x60, doy, year):
        logits = model(transforms.batch_model_inputs(x10, x20, x60, doy, year), training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    def model_probabilities(raw: dict[str, np.ndarray]) -> np.ndarray:
        return serve_model(**{key: tf.constant(value) for key, value in raw.items()}).numpy()

    years = model_dir.read_runtime_record(path).get("train_years", [])
    return Predictor(
        model_probabilities, run_config.classes, checkpoint, run_config.model.tile_size,
        tuple(years),
    )  # fmt: skip


def predict_scene(config: PredictConfig, predictor: Predictor) -> dict:
    """Predicts the scene folder `config.input` and writes the class-id and confidence GeoTIFFs.

    Both are written under temporary names and renamed into place once complete.

    Returns:
      A summary: size, dates, windows, seconds, pixels per second and the files written.

    Raises:
      RasterError: naming the file, for a missing folder, missing or unreadable rasters or
        rasters whose grids differ from the first date's 10 m grid.
      ValueError: a model that needs another tile size, or a scene of several years without one
        chosen.
    """
    config.validate()
    if not os.path.isdir(config.input):
        raise RasterError(f"{config.input}: scene folder does not exist")
    if predictor.tile_size is not None and predictor.tile_size != config.tile_size:
        raise ValueError(
            f"{predictor.source}: the model takes {predictor.tile_size} px inputs only; "
            f"pass tile_size={predictor.tile_size}"
        )
    dates = select_dates(scenes.find_dates(config.input), config.year, config.input)
    year = scenes.parse_date(next(iter(dates)))[0]
    if predictor.train_years and year not in predictor.train_years:
        logging.warning(
            "%s: the scene's dates are of %d, the model was trained on %s: crops keep other "
            "calendars in other years, so expect a lower accuracy than the model's evaluation",
            config.input, year, ", ".join(map(str, predictor.train_years)),
        )  # fmt: skip
    reference, opened = scenes.open_scene(dates, config.resample)
    doy_year = np.array([scenes.parse_date(date)[::-1] for date in dates], np.int32)
    size, stride = config.tile_size, config.stride
    xs = window_offsets(reference.width, size, stride)
    ys = window_offsets(reference.height, size, stride)
    padded_width = xs[-1] + size
    logging.info(
        "%s: %d x %d px, %d dates; %d x %d windows of %d px, stride %d, batch %d",
        config.input, reference.width, reference.height, len(dates), len(xs), len(ys), size,
        stride, config.batch_size,
    )  # fmt: skip
    writer = map_files.MapWriter(
        config.output, config.confidence_path, reference, predictor.class_table
    )
    accumulator = _Accumulator(size, padded_width, predictor.class_table.num_classes)
    start, no_data_pixels, seconds_waiting = time.perf_counter(), 0, 0.0
    datasets = [dataset for sources in opened.values() for _, dataset in sources]

    def read_row(y0: int) -> dict:
        """key -> (factor, [dates, size / factor, padded_width / factor, bands]) at row y0."""
        strips = {}
        for suffix, (key, names) in rasters.RESOLUTIONS.items():
            factor = scenes.FACTORS[suffix]
            sources = [opened[date, suffix] for date in dates]
            strips[key] = (factor, _read_strip(
                sources, len(names), y0 // factor, size // factor, padded_width // factor
            ))  # fmt: skip
        return strips

    # One thread reads (and decompresses) the next row of windows while the model runs on this
    # one; only it touches the input datasets (GDAL datasets are not shared between threads).
    with (
        writer,
        rasters.block_cache([*datasets, writer.classes, writer.confidence], size),
        futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="read_row") as reader,
    ):
        next_row = reader.submit(read_row, ys[0])
        for row, y0 in enumerate(ys):
            waited = time.perf_counter()
            strips = next_row.result()
            seconds_waiting += time.perf_counter() - waited
            if row + 1 < len(ys):
                next_row = reader.submit(read_row, ys[row + 1])
            for first in range(0, len(xs), config.batch_size):
                batch_xs = xs[first : first + config.batch_size]
                raw = {
                    key: np.stack(
                        [strip[:, :, x // factor : (x + size) // factor] for x in batch_xs]
                    ).astype(np.float32)
                    for key, (factor, strip) in strips.items()
                }  # [batch, dates, size / factor, size / factor, bands]
                raw["doy"] = np.tile(doy_year[:, 0], (len(batch_xs), 1))
                raw["year"] = np.tile(doy_year[:, 1], (len(batch_xs), 1))
                probabilities = predictor.probabilities(raw)  # [batch, size, size, classes]
                for x, window in zip(batch_xs, probabilities, strict=True):
                    accumulator.add(x, window)
            # Rows above the next window row get no more contributions: blend and write them.
            next_y0 = ys[row + 1] if row + 1 < len(ys) else y0 + size
            blended = accumulator.pop(next_y0 - y0)
            finished = min(next_y0, reference.height)
            x10 = strips["x10"][1][:, : finished - y0, : reference.width]
            no_data = records.no_data(x10)
            no_data_pixels += int(no_data.sum())
            writer.write_rows(y0, blended[: finished - y0, : reference.width], no_data)
            _log_progress(row + 1, len(ys), finished * reference.width, start)
    seconds = time.perf_counter() - start
    files.write_text(config.style_path, images.qgis_style(predictor.class_table))
    return {
        "input": config.input,
        "output": config.output,
        "confidence_output": config.confidence_path,
        "qgis_style": config.style_path,
        "crs": rasters.crs_name(reference.wkt),
        "no_data_pixels": no_data_pixels,
        "width": reference.width,
        "height": reference.height,
        "num_dates": len(dates),
        "windows": len(xs) * len(ys),
        "tile_size": size,
        "stride": stride,
        "seconds": round(seconds, 3),
        "seconds_waiting_for_input": round(seconds_waiting, 3),
        "pixels_per_second": round(reference.width * reference.height / max(seconds, 1e-9), 1),
    }


def _log_progress(rows_done: int, num_rows: int, pixels_done: int, start: float) -> None:
    elapsed = max(time.perf_counter() - start, 1e-9)
    eta = elapsed / rows_done * (num_rows - rows_done)
    logging.info(
        "window rows %d/%d, %.0f px/s, ETA %.0f s",
        rows_done, num_rows, pixels_done / elapsed, eta,
    )  # fmt: skip
