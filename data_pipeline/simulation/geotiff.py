"""Writes simulated tiles as GeoTIFFs: the PyTorch port's tile folders, or one scene folder."""

from __future__ import annotations

import os

import numpy as np

from data_pipeline import dataset_root, rasters, records
from data_pipeline.simulation import writer
from data_pipeline.simulation.simulator import (
    SimulationConfig,
    YearSimulator,
    simulate_scene,
    simulate_tiles,
)


def _record(tile) -> records.Tile:
    return records.Tile(
        tileid=tile.tileid, x10=tile.x10, x20=tile.x20, x60=tile.x60, doy=tile.doy,
        year=tile.year, labels=tile.labels,
    )  # fmt: skip


def write_tile_folders(root: str, config: SimulationConfig, tileids: dict | None = None) -> dict:
    """Writes `<root>/data/<tileid>/<YYYYMMDD>_10m|20m|60m.tif` and `y.tif`, `classes.txt`.

    Every year's dates go into the tile's one folder; `y.tif` holds the first year's labels (the
    port has one label map per tile). Geotransforms are the simulator's (EPSG:32632).

    Args:
      root: output folder.
      config: what to simulate.
      tileids: optional split name -> tile ids, written as `tileids/<name>.tileids`.

    Returns:
      year -> list of the simulated tiles (records.Tile), to compare an ingest against.
    """
    config.validate()
    geotransforms = writer.geotransforms(config.num_tiles_y, config.num_tiles_x, config.pix10)
    simulated = {year: [] for year in config.years}
    for year, tile in simulate_tiles(config):
        record = _record(tile)
        simulated[year].append(record)
        folder = os.path.join(root, "data", tile.tileid)
        # y.tif: the first year's labels only.
        rasters.write_tile_geotiffs(
            folder, record, geotransforms[tile.tileid], write_labels=year == config.years[0]
        )
    dataset_root.write_classes(root, writer.class_table())
    for name, ids in (tileids or {}).items():
        dataset_root.write_tileids(root, name, ids)
    return simulated


def write_scene_folder(root: str, config: SimulationConfig) -> dict:
    """Writes the whole simulated grid as one scene: `<YYYYMMDD>_10m|20m|60m.tif` per date of
    every year, `y.tif` (first year's labels) and `classes.txt`, written a row of tiles at a time.

    Returns:
      year -> list of the simulated tiles (records.Tile), row-major.
    """
    config.validate()
    scene = simulate_scene(config)
    origin = writer.geotransforms(1, 1, config.pix10)["0"]
    geotransform = origin.gdal()
    width, height = config.width, config.height
    os.makedirs(root, exist_ok=True)
    labels = np.zeros((height, width), np.uint16)
    simulated = {}
    for year_index, year in enumerate(config.years):
        simulator = YearSimulator(scene, config, year_index)
        num_dates = len(simulator.doy)
        files = {}
        for index in range(num_dates):
            date = rasters.date_name(year, simulator.doy[index])
            for suffix, factor in (("10m", 1), ("20m", 2), ("60m", 6)):
                _, names = rasters.RESOLUTIONS[suffix]
                path = os.path.join(root, f"{date}_{suffix}.tif")
                files[index, suffix] = rasters.create_geotiff(
                    path, width // factor, height // factor, len(names), np.uint16,
                    rasters.scaled(geotransform, factor), writer.SRID, names,
                )  # fmt: skip
        simulated[year] = []
        for row in range(config.num_tiles_y):
            for tile in simulator.tile_row(row):
                simulated[year].append(_record(tile))
                for suffix, factor in (("10m", 1), ("20m", 2), ("60m", 6)):
                    key, _ = rasters.RESOLUTIONS[suffix]
                    size = config.pix10 // factor
                    for index in range(num_dates):
                        values = getattr(tile, key)[index]
                        dataset = files[index, suffix]
                        for band in range(values.shape[-1]):
                            dataset.GetRasterBand(band + 1).WriteArray(
                                values[..., band], tile.column * size, row * size
                            )
                if year_index == 0:
                    y, x = row * config.pix10, tile.column * config.pix10
                    labels[y : y + config.pix10, x : x + config.pix10] = tile.labels
        for dataset in files.values():
            dataset.FlushCache()
        files.clear()  # closes the files
    rasters.write_geotiff(
        os.path.join(root, rasters.LABELS_FILE), labels, geotransform, writer.SRID, ("labels",)
    )
    dataset_root.write_classes(root, writer.class_table())
    return simulated
