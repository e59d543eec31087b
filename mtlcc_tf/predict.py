"""Predicts a class map of a whole scene folder with a SavedModel or a trained model directory.

python -m mtlcc_tf.predict --model=runs/convgru/saved_model --input=scenes/T32UQU \
    --output=maps/T32UQU.tif [--tile_size=72 --overlap=12 --batchsize=4 --checkpoint=best]

Writes MAP.tif (the dataset's label ids, with a colour table and class names), MAP.qml (its
QGIS style) and MAP_confidence.tif (probability of the predicted class) on the scene's 10 m grid;
no-data pixels get the files' NoData values. See predict_lib for the windows and how their
overlaps are blended.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from data_pipeline import dataset_root
from mtlcc_tf import hardware, predict_lib

_MODEL = flags.DEFINE_string(
    "model", None, "SavedModel folder (mtlcc_tf.export) or model directory (mtlcc_tf.train)."
)
_INPUT = flags.DEFINE_string(
    "input",
    None,
    "Scene folder (<YYYYMMDD>_10m/_20m/_60m.tif per date, or <YYYYMMDD>_B04.tif per band), a "
    "Level-1C S2?_MSIL1C_*.SAFE folder, or a folder of them.",
)
_OUTPUT = flags.DEFINE_string("output", None, "Class-id GeoTIFF to write.")
_CONFIDENCE_OUTPUT = flags.DEFINE_string(
    "confidence_output", None, "Confidence GeoTIFF; default <output stem>_confidence.tif."
)
_TILE_SIZE = flags.DEFINE_integer(
    "tile_size",
    72,
    "Window size in 10 m pixels (multiple of 6). Larger windows are faster (less overlap to "
    "compute twice) and need more memory; 72 px predicted as accurately as 48 px, 1.9x faster.",
)
_OVERLAP = flags.DEFINE_integer(
    "overlap", 12, "Pixels shared by neighbouring windows (rounded up to a 6 px stride)."
)
_BATCHSIZE = flags.DEFINE_integer("batchsize", 4, "Windows per model call.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "For a model directory: 'best', 'last' or a checkpoint path."
)
_YEAR = flags.DEFINE_integer("year", None, "Year of the dates to use (scenes of several years).")
_PRECISION = flags.DEFINE_enum(
    "precision",
    "auto",
    ["auto", "float32", "mixed_bfloat16"],
    "For a model directory: the precision to compute in (auto: what this machine runs fastest, "
    "as for training). A SavedModel computes in the precision chosen at export.",
)
_RESAMPLE = flags.DEFINE_bool(
    "resample",
    False,
    "Warp files that are not on the Sentinel-2 grid (10/20/60 m pixels) onto it, as "
    "data_pipeline.ingest --resample does; without it such a scene is refused.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = predict_lib.PredictConfig(
        input=_INPUT.value,
        output=_OUTPUT.value,
        confidence_output=_CONFIDENCE_OUTPUT.value,
        tile_size=_TILE_SIZE.value,
        overlap=_OVERLAP.value,
        batch_size=_BATCHSIZE.value,
        year=_YEAR.value,
        resample=_RESAMPLE.value,
    )
    try:
        config.validate()
        is_saved_model = os.path.isfile(os.path.join(_MODEL.value, "saved_model.pb"))
        precision = None if is_saved_model else hardware.resolve_serving_precision(_PRECISION.value)
        predictor = predict_lib.load_predictor(_MODEL.value, _CHECKPOINT.value, precision)
        logging.info("predicting with %s", predictor.source)
        summary = predict_lib.predict_scene(config, predictor)
    except (FileNotFoundError, ValueError, dataset_root.DatasetError) as error:
        sys.exit(f"predict: {error}")
    print(json.dumps(summary))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model", "input", "output"])
    app.run(main)
