"""Writes a tile record's time series as GeoTIFFs in the PyTorch port's layout (for QGIS).

python -m data_pipeline.tfrecord2tif --record=data/simulated/data16/3.tfrecord.gz --out_dir=/tmp/3
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from data_pipeline import dataset_root, tile_folders

_RECORD = flags.DEFINE_string("record", None, "Record file, e.g. ROOT/data16/3.tfrecord.gz.")
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Folder for <YYYYMMDD>_10m.tif, _20m.tif, _60m.tif per date and y.tif."
)
_ROOT = flags.DEFINE_string(
    "root", None, "Dataset root with geotransforms.csv; default: two levels above --record."
)
flags.mark_flags_as_required(["record", "out_dir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    root = _ROOT.value or os.path.dirname(os.path.dirname(os.path.abspath(_RECORD.value)))
    try:
        paths = tile_folders.record_to_geotiffs(_RECORD.value, _OUT_DIR.value, root)
    except (ValueError, dataset_root.DatasetError) as error:
        sys.exit(f"tfrecord2tif: {error}")
    print(f"wrote {len(paths)} GeoTIFFs to {_OUT_DIR.value}")
    return 0


if __name__ == "__main__":
    app.run(main)
