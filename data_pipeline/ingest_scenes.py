"""Ingests a whole scene (a folder of dates, or Level-1C products): cut into tiles, labelled from
a raster or vector file, split into spatial blocks."""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from data_pipeline import dataset_root, grids, rasters, splits
from data_pipeline import ingest_common as common
from data_pipeline.rasters import (
    RESOLUTIONS,
    Grid,
    RasterError,
    check_aligned,
    grid_of,
    open_raster,
    read_bands,
)
from data_pipeline.scenes import FACTORS, find_dates, open_scene, read_sources

_VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".sqlite", ".gml", ".kml")


def _scene_labels(config: common.IngestConfig, reference: Grid) -> tuple[object, str | None]:
    """The labels raster opened on the scene's 10 m grid (rasterised into out_dir for a vector
    file, warped with nearest neighbour if `resample`), and the temporary file to remove."""
    if config.labels is None:
        raise RasterError(f"{config.input}: a scene needs --labels (a raster or a vector file)")
    if config.labels.lower().endswith(_VECTOR_SUFFIXES):
        temporary = os.path.join(config.out_dir, f".labels-{os.getpid()}.tif")
        rasters.rasterize_labels(config.labels, config.label_attribute, reference, temporary)
        return open_raster(temporary), temporary
    dataset = open_raster(config.labels)
    grid = grid_of(dataset)
    if config.resample and grid != reference:
        dataset = grids.warp_onto(dataset, grid, reference, "nearest", config.labels)
    elif not config.resample:
        grids.check_resolution(grid, 10, config.labels)
    check_aligned(reference, grid_of(dataset), config.labels)
    return dataset, None


def ingest_scene(config: common.IngestConfig) -> dict:
    """Cuts a scene folder into tiles of pix10 px and writes a dataset root.

    The ragged border (the last width % pix10 columns and height % pix10 rows) is dropped. The
    scene is read one row of tiles at a time, so memory holds one row of tiles of all dates, and
    GDAL's block cache at most the blocks of every file that a row of tiles touches.
    """
    dates = find_dates(config.input)
    reference, opened = open_scene(dates, config.resample)
    if reference.wkt and not reference.epsg:
        logging.warning(
            "%s: CRS %s; its WKT is kept in %s (geotransforms.csv says srid 0)",
            config.input, rasters.crs_name(reference.wkt), dataset_root.CRS_FILE,
        )  # fmt: skip
    table, _ = common.class_table(config)
    pix10 = config.pix10
    num_tiles_x, num_tiles_y = reference.width // pix10, reference.height // pix10
    if not num_tiles_x or not num_tiles_y:
        raise RasterError(
            f"{dates[next(iter(dates))]['10m']}: {reference.width} x {reference.height} pixels "
            f"hold no whole tile of {pix10} pixels"
        )
    years = common.years_of(dates)
    datadirs = [dataset_root.year_datadir(year) for year in years]
    dataset_root.prepare_root(config.out_dir, datadirs, config.overwrite)
    labels_dataset, temporary = _scene_labels(config, reference)
    labels_path = config.labels
    census = common.Census()
    try:
        geotransforms = {}
        datasets = [dataset for sources in opened.values() for _, dataset in sources]
        with rasters.block_cache([*datasets, labels_dataset], pix10) as cache_bytes:
            for row in range(num_tiles_y):
                window_labels = read_bands(
                    labels_path, 1, (0, row * pix10, num_tiles_x * pix10, pix10), labels_dataset
                )[..., 0]
                common.check_labels(window_labels, table, config.labels)
                stacks = {}
                for suffix, (key, names) in RESOLUTIONS.items():
                    size = pix10 // FACTORS[suffix]
                    window = (0, row * size, num_tiles_x * size, size)
                    stacks[key] = np.stack(
                        [read_sources(opened[date, suffix], len(names), window) for date in dates]
                    )  # [dates, size, num_tiles_x * size, bands]
                for column in range(num_tiles_x):
                    tileid = str(row * num_tiles_x + column)
                    xmin, xres, _, ymax, _, yres = reference.geotransform
                    geotransforms[tileid] = dataset_root.Geotransform(
                        xmin=xmin + column * pix10 * xres, xres=xres,
                        ymax=ymax + row * pix10 * yres, yres=abs(yres), srid=reference.epsg,
                        wkt="" if reference.epsg else reference.wkt,
                    )  # fmt: skip
                    labels = window_labels[:, column * pix10 : (column + 1) * pix10]
                    index = 0
                    for year, year_dates in years.items():
                        part = {}
                        for suffix, (key, _) in RESOLUTIONS.items():
                            size = pix10 // FACTORS[suffix]
                            values = stacks[key][index : index + len(year_dates)]
                            part[key] = values[:, :, column * size : (column + 1) * size]
                        index += len(year_dates)
                        tile, missing = common.make_tile(
                            tileid, part, year_dates, labels, len(year_dates)
                        )
                        census.add(tile, missing)
                        name = f"{tileid}.tfrecord.gz"
                        path = os.path.join(config.out_dir, dataset_root.year_datadir(year), name)
                        common.write_record(path, tile, config.schema, config.input)
    finally:
        labels_dataset = None  # closes the file
        if temporary and os.path.exists(temporary):
            os.remove(temporary)
    summary, tile_splits = _write_scene_splits(config, num_tiles_y, num_tiles_x)
    summary.update(census.summary(tile_splits, config.labels))
    tiletable = os.path.basename(os.path.normpath(config.input))
    sections = [common.section(year, pix10, len(d), tiletable) for year, d in years.items()]
    common.write_root_files(config, table, sections, geotransforms)
    return {
        "layout": "scene",
        "root": config.out_dir,
        "tiles": f"{num_tiles_x} x {num_tiles_y}",
        "dropped_border_pixels": [reference.width % pix10, reference.height % pix10],
        "pix10": pix10,
        "epsg": reference.epsg,
        "crs": rasters.crs_name(reference.wkt),
        "resampled": config.resample,
        "nobs": {year: len(year_dates) for year, year_dates in years.items()},
        "gdal_cache_mib": round(cache_bytes / 2**20, 1),
        **summary,
    }


def _write_scene_splits(config: common.IngestConfig, num_tiles_y: int, num_tiles_x: int):
    """Writes a spatial block split; a grid too small for the folds gets no split (reported).

    Returns the summary's lines and split name -> tile ids."""
    try:
        block_size = splits.choose_block_size(
            num_tiles_y, num_tiles_x, config.num_folds, config.seed, splits.MAX_BLOCK_SIZE
        )
    except ValueError as error:
        return {"splits": f"none written: {error}"}, {}
    groups = splits.block_groups(
        num_tiles_y, num_tiles_x, config.num_folds, block_size, config.seed
    )
    tile_splits = splits.split_tileids(groups, config.num_folds)
    for name, tileids in tile_splits.items():
        dataset_root.write_tileids(config.out_dir, name, tileids)
    return {
        "splits": {name: len(tileids) for name, tileids in tile_splits.items()},
        "block_size": block_size,
    }, tile_splits
