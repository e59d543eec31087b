"""Ingests GeoTIFFs (PyTorch-port tile folders or a whole scene) or Level-1C .SAFE products.

python -m data_pipeline.ingest --input=mtlcc_pytorch --out_dir=data/ingested
python -m data_pipeline.ingest --input=scene --out_dir=data/scene --pix10=24 \
    --labels=parcels.gpkg --label_attribute=class_id --classes=classes.txt
python -m data_pipeline.ingest --input=safe_products --out_dir=data/T32UQU \
    --labels=parcels.gpkg --classes=classes.txt
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from data_pipeline import dataset_root, ingest_lib, records, splits

_INPUT = flags.DEFINE_string(
    "input",
    None,
    "Folder in the PyTorch port's layout (data/<tileid>/<YYYYMMDD>_10m.tif, _20m, _60m, y.tif, "
    "classes.txt, tileids/), a scene folder (<YYYYMMDD>_10m.tif, _20m.tif, _60m.tif per date, or "
    "<YYYYMMDD>_B04.tif per band), a Level-1C S2?_MSIL1C_*.SAFE folder or a folder of them.",
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Dataset root to write (empty or absent).")
_PIX10 = flags.DEFINE_integer("pix10", 24, "Scene only: tile width in 10 m pixels (24, 48).")
_SCHEMA = flags.DEFINE_enum(
    "schema", records.COMPACT, list(records.SCHEMA_VERSIONS), "Record schema."
)
_LABELS = flags.DEFINE_string(
    "labels", None, "Scene only: labels as a raster on the 10 m grid, or a vector file."
)
_LABEL_ATTRIBUTE = flags.DEFINE_string(
    "label_attribute", "class_id", "Vector labels: the field holding the class id."
)
_CLASSES = flags.DEFINE_string(
    "classes", None, "Class table (lines 'id|name'); default <input>/classes.txt."
)
_NUM_FOLDS = flags.DEFINE_integer("num_folds", splits.DEFAULT_NUM_FOLDS, "Scene: folds.")
_SEED = flags.DEFINE_integer("seed", 0, "Scene only: seed of the spatial block split.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the dataset in a non-empty --out_dir.")
_RESAMPLE = flags.DEFINE_bool(
    "resample",
    False,
    "Scene only: warp files that are not on the Sentinel-2 grid (10/20/60 m pixels, one origin "
    "and CRS) onto it: bilinear (average when coarsening) for reflectance, nearest for labels. "
    "Without it such a scene is refused.",
)
flags.mark_flags_as_required(["input", "out_dir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = ingest_lib.IngestConfig(
        input=_INPUT.value,
        out_dir=_OUT_DIR.value,
        pix10=_PIX10.value,
        schema=_SCHEMA.value,
        labels=_LABELS.value,
        label_attribute=_LABEL_ATTRIBUTE.value,
        classes=_CLASSES.value,
        num_folds=_NUM_FOLDS.value,
        seed=_SEED.value,
        overwrite=_OVERWRITE.value,
        resample=_RESAMPLE.value,
    )
    try:
        summary = ingest_lib.ingest(config)
    except (FileExistsError, ValueError, dataset_root.DatasetError) as error:
        sys.exit(f"ingest: {error}")
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    app.run(main)
