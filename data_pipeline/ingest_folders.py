"""Ingests the PyTorch port's tile folders (`<input>/data/<tileid>/<YYYYMMDD>_10m.tif`, ...)."""

from __future__ import annotations

import collections
import os
import shutil

import numpy as np

from data_pipeline import dataset_root, grids
from data_pipeline import ingest_common as common
from data_pipeline.rasters import (
    LABELS_FILE,
    RESOLUTIONS,
    RasterError,
    check_same_grid,
    grid_of,
    open_raster,
    read_bands,
    to_geotransform,
)
from data_pipeline.scenes import FACTORS, find_dates, open_sources, read_sources

_TILE_HINT = "warp the tile folders onto it first (gdalwarp -tr 10 10 -r bilinear ...)"


def read_tile_folder(folder: str, dates: dict):
    """Reads one tile folder of the PyTorch port: stacks per key, labels, and its 10 m grid."""
    reference = grid_of(open_sources(dates[next(iter(dates))]["10m"])[0][1])
    stacks = {key: [] for key, _ in RESOLUTIONS.values()}
    for files in dates.values():
        for suffix, (key, names) in RESOLUTIONS.items():
            sources = open_sources(files[suffix])
            for path, dataset in sources:
                grids.check_resolution(grid_of(dataset), 10 * FACTORS[suffix], path, _TILE_HINT)
                check_same_grid(reference, grid_of(dataset), path, FACTORS[suffix])
            stacks[key].append(read_sources(sources, len(names)))
    labels_path = os.path.join(folder, LABELS_FILE)
    dataset = open_raster(labels_path)
    check_same_grid(reference, grid_of(dataset), labels_path)
    labels = read_bands(labels_path, 1, dataset=dataset)[..., 0]
    return {key: np.stack(values) for key, values in stacks.items()}, labels, reference


def ingest_tile_folders(config: common.IngestConfig) -> dict:
    """Ingests `<input>/data/<tileid>/` folders (the PyTorch port's layout) into a dataset root."""
    data = os.path.join(config.input, "data")
    tileids = sorted(
        (name for name in os.listdir(data) if os.path.isdir(os.path.join(data, name))),
        key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name),
    )
    if not tileids:
        raise RasterError(f"{data}: no tile folders")
    table, _ = common.class_table(config)
    all_dates = {tileid: find_dates(os.path.join(data, tileid)) for tileid in tileids}
    nobs = collections.Counter()
    for dates in all_dates.values():
        for year, year_dates in common.years_of(dates).items():
            nobs[year] = max(nobs[year], len(year_dates))
    datadirs = [dataset_root.year_datadir(year) for year in sorted(nobs)]
    dataset_root.prepare_root(config.out_dir, datadirs, config.overwrite)
    geotransforms, pix10, census = {}, None, common.Census()
    for tileid in tileids:
        folder, dates = os.path.join(data, tileid), all_dates[tileid]
        stacks, labels, grid = read_tile_folder(folder, dates)
        if pix10 is None:
            pix10 = grid.width
        if (grid.width, grid.height) != (pix10, pix10) or pix10 % 6:
            raise RasterError(
                f"{folder}: tiles are {grid.width} x {grid.height} pixels; expected square "
                f"tiles of {pix10} pixels (a multiple of 6) like the first tile"
            )
        common.check_labels(labels, table, os.path.join(folder, LABELS_FILE))
        geotransforms[tileid] = to_geotransform(grid)
        index = 0
        for year, year_dates in common.years_of(dates).items():
            part = {key: values[index : index + len(year_dates)] for key, values in stacks.items()}
            index += len(year_dates)
            tile, missing = common.make_tile(tileid, part, year_dates, labels, nobs[year])
            census.add(tile, missing)
            path = os.path.join(
                config.out_dir, dataset_root.year_datadir(year), f"{tileid}.tfrecord.gz"
            )
            common.write_record(path, tile, config.schema, folder)
    source_tileids = os.path.join(config.input, "tileids")
    tile_splits = {}
    if os.path.isdir(source_tileids):
        shutil.copytree(source_tileids, os.path.join(config.out_dir, "tileids"))
        for name in sorted(os.listdir(source_tileids)):
            if name.endswith(".tileids"):
                with open(os.path.join(source_tileids, name), encoding="utf-8") as handle:
                    tile_splits[name.removesuffix(".tileids")] = handle.read().split()
    tiletable = os.path.basename(os.path.normpath(config.input))
    sections = [
        common.section(year, pix10, count, tiletable) for year, count in sorted(nobs.items())
    ]
    common.write_root_files(config, table, sections, geotransforms)
    return {
        "layout": "tile folders",
        "root": config.out_dir,
        "tiles": len(tileids),
        "pix10": pix10,
        "nobs": dict(sorted(nobs.items())),
        "tileids_copied": os.path.isdir(source_tileids),
        **census.summary(tile_splits, data),
    }
