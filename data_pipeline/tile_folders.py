"""A tile written as the PyTorch port's tile folder (names in `rasters.RESOLUTIONS`).

A folder per tile holds `<YYYYMMDD>_10m.tif`, `_20m.tif` and `_60m.tif` per observation and
`y.tif` with the labels; `ingest_folders` reads it, the simulator and `tfrecord2tif` write it.
"""

from __future__ import annotations

import datetime
import os

import numpy as np

from data_pipeline import dataset_root, rasters, records


def date_name(year: int, doy: int) -> str:
    """`YYYYMMDD` of a year and day of year."""
    date = datetime.date(int(year), 1, 1) + datetime.timedelta(days=int(doy) - 1)
    return date.strftime("%Y%m%d")


def write_tile_geotiffs(
    folder: str,
    tile: records.Tile,
    geotransform: dataset_root.Geotransform | None = None,
    write_labels: bool = True,
) -> list[str]:
    """Writes a tile as the PyTorch port's GeoTIFFs: `<YYYYMMDD>_10m/_20m/_60m.tif` per real
    observation and `y.tif` (labels); returns the paths.

    Without a geotransform the tile is placed at (0, 0) with 10 m pixels and no CRS.
    """
    base = geotransform.gdal() if geotransform else (0.0, 10.0, 0.0, 0.0, 0.0, -10.0)
    crs = geotransform.crs if geotransform else 0
    paths = []
    for index in np.flatnonzero(tile.doy > 0):
        date = date_name(tile.year[index], tile.doy[index])
        for suffix, factor in (("10m", 1), ("20m", 2), ("60m", 6)):
            key, names = rasters.RESOLUTIONS[suffix]
            path = os.path.join(folder, f"{date}_{suffix}.tif")
            values = np.asarray(getattr(tile, key)[index]).astype(np.uint16)
            rasters.write_geotiff(path, values, rasters.scaled(base, factor), crs, names)
            paths.append(path)
    if write_labels:
        path = os.path.join(folder, rasters.LABELS_FILE)
        labels = np.asarray(tile.labels).astype(np.uint16)
        rasters.write_geotiff(path, labels, base, crs, ("labels",))
        paths.append(path)
    return paths


def record_to_geotiffs(record: str, out_dir: str, root: str | None = None) -> list[str]:
    """Writes a record's tile as the PyTorch port's GeoTIFFs, placed by the root's
    geotransforms.csv when it lists the tile (else at (0, 0) with no CRS); returns the paths.

    Raises:
      records.RecordError: naming the record if it is unreadable.
    """
    tile, _ = records.read_tile(record)
    geotransform = dataset_root.read_geotransforms(root).get(tile.tileid) if root else None
    return write_tile_geotiffs(out_dir, tile, geotransform)
