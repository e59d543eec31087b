"""Ingests GeoTIFFs (the PyTorch port's tile folders, or a whole scene) or Level-1C products."""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil

import numpy as np
from absl import logging

from data_pipeline import dataset_root, grids, rasters, records, splits
from data_pipeline.rasters import (
    LABELS_FILE,
    RESOLUTIONS,
    Grid,
    RasterError,
    check_aligned,
    check_same_grid,
    grid_of,
    open_raster,
    read_bands,
    to_geotransform,
)
from data_pipeline.scenes import (
    FACTORS,
    find_dates,
    open_scene,
    open_sources,
    parse_date,
    read_sources,
)

_TILE_HINT = "warp the tile folders onto it first (gdalwarp -tr 10 10 -r bilinear ...)"
_VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".sqlite", ".gml", ".kml")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What to ingest and where.

    Attributes:
      input: a folder in the PyTorch port's layout (`data/<tileid>/<YYYYMMDD>_10m.tif`, ...) or
        a scene: a folder of `<YYYYMMDD>_10m.tif`, `_20m.tif`, `_60m.tif` per date (or of one
        file per band), a Level-1C `.SAFE` folder, or a folder of them (see scenes.find_dates).
      out_dir: the dataset root to write.
      pix10: tile width in 10 m pixels when cutting a scene (tile folders bring their own).
      schema: record schema, "compact" or "original".
      labels: scene labels, a raster on the 10 m grid or a vector file (GeoPackage, Shapefile).
      label_attribute: the vector field holding the class id.
      classes: class table (`id|name` lines); default `<input>/classes.txt`.
      num_folds: train/test folds of the scene's block split.
      seed: seed of the block split.
      overwrite: replace a dataset in a non-empty out_dir.
      resample: warp a scene that is not on the Sentinel-2 grid onto it (see `grids`); without
        it such a scene is refused.
    """

    input: str
    out_dir: str
    pix10: int = 24
    schema: str = records.COMPACT
    labels: str | None = None
    label_attribute: str = "class_id"
    classes: str | None = None
    num_folds: int = splits.DEFAULT_NUM_FOLDS
    seed: int = 0
    overwrite: bool = False
    resample: bool = False

    def validate(self) -> IngestConfig:
        if not os.path.isdir(self.input):
            raise RasterError(f"{self.input}: input folder does not exist")
        if self.pix10 < 6 or self.pix10 % 6:
            raise ValueError(f"pix10={self.pix10} must be a positive multiple of 6 (24, 48)")
        if self.schema not in records.SCHEMA_VERSIONS:
            raise ValueError(f"unknown schema {self.schema!r}")
        return self


def check_labels(labels: np.ndarray, table: dataset_root.ClassTable, path: str) -> None:
    """Raises RasterError naming `path` and the ids if labels hold ids not in the class table."""
    unknown = sorted(set(np.unique(labels).tolist()) - set(table.ids))
    if unknown:
        raise RasterError(f"{path}: label ids {unknown} are not in the class table {table.ids}")


def _pad(values: np.ndarray, nobs: int) -> np.ndarray:
    padded = np.zeros((nobs, *values.shape[1:]), values.dtype)
    padded[: len(values)] = values
    return padded


def _make_tile(tileid: str, stacks: dict, dates: list[str], labels: np.ndarray, nobs: int):
    """A records.Tile of some dates' stacks ([dates, ...] per key), zero-padded to nobs.

    Pixels without data on every one of the dates (all 10 m bands 0: `rasters.read_bands` reads
    NoData as 0) get the unknown label, so they are never trained on or scored.
    """
    year_doy = np.array([parse_date(date) for date in dates], np.int16).reshape(-1, 2)
    return records.Tile(
        tileid=tileid,
        **{key: _pad(values, nobs) for key, values in stacks.items()},
        doy=_pad(year_doy[:, 1], nobs),
        year=_pad(year_doy[:, 0], nobs),
        labels=np.where(no_data(stacks["x10"]), dataset_root.UNKNOWN_ID, labels),
    )


def no_data(x10: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels of x10 [dates, H, W, bands] that are 0 in every band and date."""
    return ~np.any(x10 != 0, axis=(0, -1))


class _Census:
    """Counts per tile: pixels without data, labelled pixels (for the summary)."""

    def __init__(self):
        self.no_data, self.labelled, self.pixels = 0, {}, 0

    def add(self, tile: records.Tile) -> None:
        self.pixels += tile.labels.size
        self.no_data += int(no_data(np.asarray(tile.x10)).sum())
        labelled = int(np.count_nonzero(tile.labels))
        self.labelled[tile.tileid] = self.labelled.get(tile.tileid, 0) + labelled

    def summary(self, tile_splits: dict[str, list[str]], source: str) -> dict:
        """No-data pixels, and labelled pixels and tiles overall and per split.

        Raises:
          RasterError: naming `source` if no pixel is labelled.
        """
        total = sum(self.labelled.values())
        if not total:
            raise RasterError(
                f"{source}: no labelled pixel in the dataset: every label is 0 (unknown) or lies "
                "on no-data; check that the labels overlap the imagery (same place, a CRS each) "
                "and hold the class table's ids"
            )
        per_split = {
            name: {
                "labelled_pixels": sum(self.labelled.get(tileid, 0) for tileid in tileids),
                "tiles_with_labels": sum(self.labelled.get(tileid, 0) > 0 for tileid in tileids),
                "tiles": len(tileids),
            }
            for name, tileids in tile_splits.items()
        }
        return {
            "no_data_pixels": self.no_data,
            "no_data_share": round(self.no_data / max(self.pixels, 1), 4),
            "labelled_pixels": total,
            "tiles_with_labels": sum(count > 0 for count in self.labelled.values()),
            "labels_per_split": per_split,
        }


def _years_of(dates) -> dict[int, list[str]]:
    years = collections.defaultdict(list)
    for date in dates:
        years[parse_date(date)[0]].append(date)
    return dict(sorted(years.items()))


def _class_table(config: IngestConfig) -> tuple[dataset_root.ClassTable, str]:
    path = config.classes or os.path.join(config.input, "classes.txt")
    if not os.path.isfile(path):
        raise dataset_root.DatasetError(f"{path}: no class table; pass --classes=classes.txt")
    return dataset_root.read_class_file(path), path


def _write_root_files(config, table, sections, geotransforms) -> None:
    dataset_root.write_classes(config.out_dir, table)
    dataset_root.write_geotransforms(config.out_dir, geotransforms)
    # dataset.ini last: a crash leaves no root that looks complete.
    dataset_root.write_dataset_ini(config.out_dir, sections)


def _section(year: int, pix10: int, nobs: int, tiletable: str) -> dataset_root.DatasetSection:
    return dataset_root.DatasetSection(
        name=str(year),
        datadir=dataset_root.year_datadir(year),
        pix10=pix10,
        nobs=nobs,
        tiletable=tiletable,
    )


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


def ingest_tile_folders(config: IngestConfig) -> dict:
    """Ingests `<input>/data/<tileid>/` folders (the PyTorch port's layout) into a dataset root."""
    data = os.path.join(config.input, "data")
    tileids = sorted(
        (name for name in os.listdir(data) if os.path.isdir(os.path.join(data, name))),
        key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name),
    )
    if not tileids:
        raise RasterError(f"{data}: no tile folders")
    table, _ = _class_table(config)
    all_dates = {tileid: find_dates(os.path.join(data, tileid)) for tileid in tileids}
    nobs = collections.Counter()
    for dates in all_dates.values():
        for year, year_dates in _years_of(dates).items():
            nobs[year] = max(nobs[year], len(year_dates))
    datadirs = [dataset_root.year_datadir(year) for year in sorted(nobs)]
    dataset_root.prepare_root(config.out_dir, datadirs, config.overwrite)
    geotransforms, pix10, census = {}, None, _Census()
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
        check_labels(labels, table, os.path.join(folder, LABELS_FILE))
        geotransforms[tileid] = to_geotransform(grid)
        index = 0
        for year, year_dates in _years_of(dates).items():
            part = {key: values[index : index + len(year_dates)] for key, values in stacks.items()}
            index += len(year_dates)
            tile = _make_tile(tileid, part, year_dates, labels, nobs[year])
            census.add(tile)
            path = os.path.join(
                config.out_dir, dataset_root.year_datadir(year), f"{tileid}.tfrecord.gz"
            )
            _write(path, tile, config.schema, folder)
    source_tileids = os.path.join(config.input, "tileids")
    tile_splits = {}
    if os.path.isdir(source_tileids):
        shutil.copytree(source_tileids, os.path.join(config.out_dir, "tileids"))
        for name in sorted(os.listdir(source_tileids)):
            if name.endswith(".tileids"):
                with open(os.path.join(source_tileids, name), encoding="utf-8") as handle:
                    tile_splits[name.removesuffix(".tileids")] = handle.read().split()
    tiletable = os.path.basename(os.path.normpath(config.input))
    sections = [_section(year, pix10, count, tiletable) for year, count in sorted(nobs.items())]
    _write_root_files(config, table, sections, geotransforms)
    return {
        "layout": "tile folders",
        "root": config.out_dir,
        "tiles": len(tileids),
        "pix10": pix10,
        "nobs": dict(sorted(nobs.items())),
        "tileids_copied": os.path.isdir(source_tileids),
        **census.summary(tile_splits, data),
    }


def _write(path: str, tile: records.Tile, schema: str, source: str) -> None:
    try:
        records.write_tile(path, tile, schema)
    except records.RecordError as error:
        raise RasterError(f"{source}: {error}") from error


def _scene_labels(config: IngestConfig, reference: Grid) -> tuple[object, str | None]:
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


def ingest_scene(config: IngestConfig) -> dict:
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
    table, _ = _class_table(config)
    pix10 = config.pix10
    num_tiles_x, num_tiles_y = reference.width // pix10, reference.height // pix10
    if not num_tiles_x or not num_tiles_y:
        raise RasterError(
            f"{dates[next(iter(dates))]['10m']}: {reference.width} x {reference.height} pixels "
            f"hold no whole tile of {pix10} pixels"
        )
    years = _years_of(dates)
    datadirs = [dataset_root.year_datadir(year) for year in years]
    dataset_root.prepare_root(config.out_dir, datadirs, config.overwrite)
    labels_dataset, temporary = _scene_labels(config, reference)
    labels_path = config.labels
    census = _Census()
    try:
        geotransforms = {}
        datasets = [dataset for sources in opened.values() for _, dataset in sources]
        with rasters.block_cache([*datasets, labels_dataset], pix10) as cache_bytes:
            for row in range(num_tiles_y):
                window_labels = read_bands(
                    labels_path, 1, (0, row * pix10, num_tiles_x * pix10, pix10), labels_dataset
                )[..., 0]
                check_labels(window_labels, table, config.labels)
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
                        tile = _make_tile(tileid, part, year_dates, labels, len(year_dates))
                        census.add(tile)
                        name = f"{tileid}.tfrecord.gz"
                        path = os.path.join(config.out_dir, dataset_root.year_datadir(year), name)
                        _write(path, tile, config.schema, config.input)
    finally:
        labels_dataset = None  # closes the file
        if temporary and os.path.exists(temporary):
            os.remove(temporary)
    summary, tile_splits = _write_scene_splits(config, num_tiles_y, num_tiles_x)
    summary.update(census.summary(tile_splits, config.labels))
    tiletable = os.path.basename(os.path.normpath(config.input))
    sections = [_section(year, pix10, len(d), tiletable) for year, d in years.items()]
    _write_root_files(config, table, sections, geotransforms)
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


def _write_scene_splits(config: IngestConfig, num_tiles_y: int, num_tiles_x: int):
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


def ingest(config: IngestConfig) -> dict:
    """Ingests tile folders if `<input>/data/` exists, else a scene folder; returns a summary.

    The dataset is written into a staging folder beside out_dir and moved into place at the end
    (`dataset_root.staged_root`): a run that fails leaves out_dir as it was.
    """
    config.validate()
    with dataset_root.staged_root(config.out_dir, config.overwrite) as staging:
        staged = dataclasses.replace(config, out_dir=staging, overwrite=False)
        if os.path.isdir(os.path.join(config.input, "data")):
            summary = ingest_tile_folders(staged)
        else:
            summary = ingest_scene(staged)
    return {**summary, "root": config.out_dir}
