"""Writes a simulated dataset root in the original layout: records, splits, classes, geo."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from data_pipeline import dataset_root, records, splits
from data_pipeline.simulation import crops
from data_pipeline.simulation.simulator import SimulationConfig, simulate_scene, simulate_tiles

# Upper-left corner of tile 0: UTM zone 32N, just north of Munich (Freising).
ORIGIN_EASTING = 690000.0
ORIGIN_NORTHING = 5370000.0
SRID = 32632
PIXEL_SIZE = 10.0


def class_table() -> dataset_root.ClassTable:
    """The original 17 classes in id order, after `0|unknown`."""
    return dataset_root.ClassTable(
        ids=(crops.UNKNOWN_ID, *crops.CLASS_IDS), names=("unknown", *crops.CLASS_NAMES)
    )


def geotransforms(
    num_tiles_y: int, num_tiles_x: int, pix10: int
) -> dict[str, dataset_root.Geotransform]:
    """North-up 10 m geotransforms of the tile grid, row-major tile ids."""
    size = pix10 * PIXEL_SIZE
    return {
        str(row * num_tiles_x + column): dataset_root.Geotransform(
            xmin=ORIGIN_EASTING + column * size,
            xres=PIXEL_SIZE,
            ymax=ORIGIN_NORTHING - row * size,
            yres=PIXEL_SIZE,
            srid=SRID,
        )
        for row in range(num_tiles_y)
        for column in range(num_tiles_x)
    }


def simulate_dataset(
    root: str,
    *,
    num_tiles_x: int = 16,
    num_tiles_y: int = 12,
    pix10: int = 24,
    years: Sequence[int] = (2016, 2017),
    nobs: int = 46,
    cloud_rate: float = 1.0,
    seed: int = 0,
    schema: str = records.COMPACT,
    num_folds: int = splits.DEFAULT_NUM_FOLDS,
    block_size: int | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Simulates a dataset root that the package (and the original code) reads like the real one.

    Every file is written under a temporary name and renamed, and dataset.ini comes last, so a
    crash leaves no half-written file and no root that looks complete.

    Args:
      root: output folder; must be empty or absent unless `overwrite`.
      num_tiles_x: tiles per row.
      num_tiles_y: tiles per column.
      pix10: tile width in 10 m pixels (24 or 48; a multiple of 6).
      years: one dataset.ini section and record folder per year.
      nobs: time steps per record (zero-padded).
      cloud_rate: scales the seasonal cloud cover; 0 gives clear skies.
      seed: random seed.
      schema: record schema, "compact" (uint16, with cloud masks) or "original" (int64).
      num_folds: train/test folds.
      block_size: split blocks are block_size x block_size tiles; default: the largest up to
        splits.MAX_BLOCK_SIZE that leaves every fold and eval some tiles.
      overwrite: replace the dataset in a non-empty root.
      progress: called with a line of text after every row of tiles.

    Returns:
      A summary: tiles, bytes, seconds, observations, cloud and shadow shares per year, label
      pixel counts per year, and split sizes.

    Raises:
      FileExistsError: if `root` is not empty and not `overwrite`.
      ValueError: on an invalid setting.
    """
    config = SimulationConfig(
        num_tiles_x=num_tiles_x,
        num_tiles_y=num_tiles_y,
        pix10=pix10,
        years=tuple(int(year) for year in years),
        nobs=nobs,
        cloud_rate=cloud_rate,
        seed=seed,
    ).validate()
    if schema not in records.SCHEMA_VERSIONS:
        raise ValueError(
            f"unknown schema {schema!r}; expected one of {tuple(records.SCHEMA_VERSIONS)}"
        )
    if block_size is None:
        block_size = splits.choose_block_size(
            num_tiles_y, num_tiles_x, num_folds, seed, splits.MAX_BLOCK_SIZE
        )
    groups = splits.block_groups(num_tiles_y, num_tiles_x, num_folds, block_size, seed)
    dataset_root.prepare_root(
        root, [dataset_root.year_datadir(year) for year in config.years], overwrite
    )
    report = progress or (lambda message: None)
    start = time.perf_counter()
    scene = simulate_scene(config)
    suffix = ".tfrecord.gz"
    num_tiles = num_tiles_x * num_tiles_y
    summary = {
        "root": root,
        "tiles_per_year": num_tiles,
        "pix10": pix10,
        "schema": schema,
        "bytes": 0,
        "years": {},
    }
    for year in config.years:
        summary["years"][year] = {
            "observations": 0, "cloud_share": 0.0, "shadow_share": 0.0, "label_pixels": {}
        }  # fmt: skip
    label_counts = {year: np.zeros(max(crops.CLASS_IDS) + 1, np.int64) for year in config.years}
    done = 0
    for year, tile in simulate_tiles(config, scene):
        record = records.Tile(
            tileid=tile.tileid, x10=tile.x10, x20=tile.x20, x60=tile.x60, doy=tile.doy,
            year=tile.year, labels=tile.labels, cloud_mask=tile.cloud_mask,
        )  # fmt: skip
        path = os.path.join(root, dataset_root.year_datadir(year), f"{tile.tileid}{suffix}")
        summary["bytes"] += records.write_tile(path, record, schema, "GZIP")
        real = tile.doy > 0
        year_summary = summary["years"][year]
        year_summary["observations"] = int(real.sum())
        year_summary["cloud_share"] += float(np.mean(tile.cloud_mask[real] == 1)) / num_tiles
        year_summary["shadow_share"] += float(np.mean(tile.cloud_mask[real] == 2)) / num_tiles
        label_counts[year] += np.bincount(tile.labels.ravel(), minlength=len(label_counts[year]))
        done += 1
        if tile.column == num_tiles_x - 1:
            report(
                f"{year}: row {tile.row + 1}/{num_tiles_y} "
                f"({done}/{num_tiles * len(config.years)} tiles, "
                f"{time.perf_counter() - start:.1f} s)"
            )
    for year in config.years:
        counts = label_counts[year]
        summary["years"][year]["label_pixels"] = {
            int(i): int(counts[i]) for i in (crops.UNKNOWN_ID, *crops.CLASS_IDS)
        }
    tile_splits = splits.split_tileids(groups, num_folds)
    for name, tileids in tile_splits.items():
        dataset_root.write_tileids(root, name, tileids)
    summary["splits"] = {name: len(tileids) for name, tileids in tile_splits.items()}
    summary["margin_tiles"] = int(np.sum(groups == splits.MARGIN))
    summary["block_size"] = block_size
    dataset_root.write_classes(root, class_table())
    dataset_root.write_geotransforms(root, geotransforms(num_tiles_y, num_tiles_x, pix10))
    dataset_root.write_dataset_ini(
        root,
        [
            dataset_root.DatasetSection(
                name=str(year),
                datadir=dataset_root.year_datadir(year),
                pix10=pix10,
                nobs=nobs,
                tiletable=f"simulated_seed{seed}",
            )  # fmt: skip
            for year in config.years
        ],
    )
    summary["seconds"] = time.perf_counter() - start
    return summary
