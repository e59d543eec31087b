"""Simulates a dataset root (Sentinel-2 L1C time series of crop parcels, with clouds) to train on.

python -m data_pipeline.synthesize --out_dir=data/simulated            # the quickstart's dataset
python -m data_pipeline.synthesize --out_dir=/tmp/sim48 --pix10=48 --num_tiles=64 --cloud_rate=0.5
"""

from __future__ import annotations

import json
import math
import sys

from absl import app, flags

from data_pipeline import records, splits
from data_pipeline.simulation import writer

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Dataset root to write (empty or absent).")
_NUM_TILES = flags.DEFINE_integer(
    "num_tiles", None, "Tiles per year on a near-square grid; overrides --tiles_x/--tiles_y."
)
_TILES_X = flags.DEFINE_integer("tiles_x", 16, "Tiles per row (west-east).")
_TILES_Y = flags.DEFINE_integer("tiles_y", 12, "Tiles per column (north-south).")
_PIX10 = flags.DEFINE_integer("pix10", 24, "Tile width in 10 m pixels (24 or 48).")
_YEARS = flags.DEFINE_list("years", ["2016", "2017"], "Years; one dataset.ini section each.")
_NOBS = flags.DEFINE_integer("nobs", 46, "Time steps per record; years are zero-padded to it.")
_CLOUD_RATE = flags.DEFINE_float(
    "cloud_rate",
    1.0,
    "Scales the seasonal cloud cover (1: ~60 % of pixel-observations cloud, more in winter, "
    "5-10 % shadow, ~30 % of tile-observations clear, as over central Europe; 0: clear skies).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the dataset is deterministic for it.")
_SCHEMA = flags.DEFINE_enum(
    "schema", records.COMPACT, list(records.SCHEMA_VERSIONS),
    "Record schema: compact (uint16, cloud masks) or original (int64, as the 2018 code wrote).",
)  # fmt: skip
_NUM_FOLDS = flags.DEFINE_integer("num_folds", splits.DEFAULT_NUM_FOLDS, "Train/test folds.")
_BLOCK_SIZE = flags.DEFINE_integer(
    "block_size",
    None,
    "Split blocks are this many tiles square; default: the largest up to "
    f"{splits.MAX_BLOCK_SIZE} that gives every fold and eval some tiles.",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the dataset in a non-empty --out_dir.")
flags.mark_flag_as_required("out_dir")


def grid(num_tiles: int) -> tuple[int, int]:
    """(tiles_x, tiles_y) of a near-square grid of at least `num_tiles` tiles, wider than high."""
    tiles_x = math.ceil(math.sqrt(num_tiles))
    return tiles_x, math.ceil(num_tiles / tiles_x)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    tiles_x, tiles_y = _TILES_X.value, _TILES_Y.value
    if _NUM_TILES.value is not None:
        tiles_x, tiles_y = grid(_NUM_TILES.value)
    try:
        summary = writer.simulate_dataset(
            _OUT_DIR.value,
            num_tiles_x=tiles_x,
            num_tiles_y=tiles_y,
            pix10=_PIX10.value,
            years=[int(year) for year in _YEARS.value],
            nobs=_NOBS.value,
            cloud_rate=_CLOUD_RATE.value,
            seed=_SEED.value,
            schema=_SCHEMA.value,
            num_folds=_NUM_FOLDS.value,
            block_size=_BLOCK_SIZE.value,
            overwrite=_OVERWRITE.value,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (FileExistsError, ValueError) as error:
        sys.exit(f"synthesize: {error}")
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    app.run(main)
