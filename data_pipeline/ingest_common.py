"""What both ways of ingesting share: the settings, tiles and their census, the root's files."""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from data_pipeline import dataset_root, records, splits
from data_pipeline.rasters import RasterError
from data_pipeline.scenes import parse_date


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


def make_tile(
    tileid: str, stacks: dict, dates: list[str], labels: np.ndarray, nobs: int
) -> tuple[records.Tile, np.ndarray]:
    """A records.Tile of some dates' stacks ([dates, ...] per key), zero-padded to nobs, and
    its no-data mask (bool [H, W], `records.no_data`).

    Pixels without data on every one of the dates (all 10 m bands 0: `rasters.read_bands` reads
    NoData as 0) get the unknown label, so they are never trained on or scored.
    """
    missing = records.no_data(stacks["x10"])
    year_doy = np.array([parse_date(date) for date in dates], np.int16).reshape(-1, 2)
    tile = records.Tile(
        tileid=tileid,
        **{key: _pad(values, nobs) for key, values in stacks.items()},
        doy=_pad(year_doy[:, 1], nobs),
        year=_pad(year_doy[:, 0], nobs),
        labels=np.where(missing, dataset_root.UNKNOWN_ID, labels),
    )
    return tile, missing


class Census:
    """Counts per tile: pixels without data, labelled pixels (for the summary)."""

    def __init__(self):
        self.no_data, self.labelled, self.pixels = 0, {}, 0

    def add(self, tile: records.Tile, missing: np.ndarray) -> None:
        """Counts `tile`, whose no-data mask (from `make_tile`) is `missing`."""
        self.pixels += tile.labels.size
        self.no_data += int(missing.sum())
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


def years_of(dates) -> dict[int, list[str]]:
    years = collections.defaultdict(list)
    for date in dates:
        years[parse_date(date)[0]].append(date)
    return dict(sorted(years.items()))


def class_table(config: IngestConfig) -> tuple[dataset_root.ClassTable, str]:
    path = config.classes or os.path.join(config.input, "classes.txt")
    if not os.path.isfile(path):
        raise dataset_root.DatasetError(f"{path}: no class table; pass --classes=classes.txt")
    return dataset_root.read_class_file(path), path


def write_root_files(config, table, sections, geotransforms) -> None:
    dataset_root.write_classes(config.out_dir, table)
    dataset_root.write_geotransforms(config.out_dir, geotransforms)
    # dataset.ini last: a crash leaves no root that looks complete.
    dataset_root.write_dataset_ini(config.out_dir, sections)


def section(year: int, pix10: int, nobs: int, tiletable: str) -> dataset_root.DatasetSection:
    return dataset_root.DatasetSection(
        name=str(year),
        datadir=dataset_root.year_datadir(year),
        pix10=pix10,
        nobs=nobs,
        tiletable=tiletable,
    )


def write_record(path: str, tile: records.Tile, schema: str, source: str) -> None:
    try:
        records.write_tile(path, tile, schema)
    except records.RecordError as error:
        raise RasterError(f"{source}: {error}") from error
