"""Writes simulated tiles as GeoTIFFs (the PyTorch port's tile folders, one scene folder, or a
large scene of one tile repeated), and a scene folder as Level-1C `.SAFE` products (JPEG2000)."""

from __future__ import annotations

import os

import numpy as np
from osgeo import gdal

from data_pipeline import dataset_root, rasters, records, scenes, tile_folders
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
        tile_folders.write_tile_geotiffs(
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
            date = tile_folders.date_name(year, simulator.doy[index])
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


def write_repeated_scene(
    root: str, width: int, height: int, num_dates: int, year: int = 2016, pattern_size: int = 240
) -> str:
    """Writes a scene folder of any size cheaply: one simulated tile of `pattern_size` px repeated,
    as `<YYYYMMDD>_10m|20m|60m.tif` per date, `y.tif` and `classes.txt`, written 4 patterns'
    height at a time, so that neither simulating nor writing holds the scene (for benchmarks).

    Args:
      root: output folder.
      width: in 10 m pixels, a multiple of 6.
      height: in 10 m pixels, a multiple of 6.
      num_dates: dates of `year` (the simulator's acquisition days).
      year: their year.
      pattern_size: the simulated tile's width, a multiple of 6.

    Returns:
      The path of `y.tif`.
    """
    if width % 6 or height % 6 or pattern_size % 6:
        raise ValueError(f"{width} x {height} px, pattern {pattern_size}: not multiples of 6")
    config = SimulationConfig(
        num_tiles_x=1, num_tiles_y=1, pix10=pattern_size, years=(year,), nobs=num_dates,
        num_observations=num_dates,
    )  # fmt: skip
    (_, tile), *_ = simulate_tiles(config)
    patterns = {"labels": np.asarray(tile.labels)[..., None]}
    patterns.update({key: np.asarray(getattr(tile, key)) for key in ("x10", "x20", "x60")})
    geotransform = writer.geotransforms(1, 1, 1)["0"].gdal()
    files = []  # (dataset, pattern [h, w, bands], factor)
    for index in range(num_dates):
        date = tile_folders.date_name(year, tile.doy[index])
        for suffix, factor in (("10m", 1), ("20m", 2), ("60m", 6)):
            key, names = rasters.RESOLUTIONS[suffix]
            dataset = rasters.create_geotiff(
                os.path.join(root, f"{date}_{suffix}.tif"), width // factor, height // factor,
                len(names), np.uint16, rasters.scaled(geotransform, factor), writer.SRID, names,
            )  # fmt: skip
            files.append((dataset, patterns[key][index], factor))
    labels = os.path.join(root, rasters.LABELS_FILE)
    dataset = rasters.create_geotiff(
        labels, width, height, 1, np.uint16, geotransform, writer.SRID, ("labels",)
    )
    files.append((dataset, patterns["labels"], 1))
    strip_rows = 4 * pattern_size  # strips start at whole patterns at every resolution
    for y in range(0, height, strip_rows):
        rows = min(strip_rows, height - y)
        for dataset, pattern, factor in files:
            size = pattern.shape[0]
            repeats = (-(-rows // factor // size), -(-width // factor // size), 1)
            strip = np.tile(pattern, repeats)[: rows // factor, : width // factor]
            for band in range(strip.shape[-1]):
                dataset.GetRasterBand(band + 1).WriteArray(
                    strip[..., band].astype(np.uint16), 0, y // factor
                )
    for dataset, _, _ in files:
        dataset.FlushCache()
    files.clear()  # closes the files
    dataset_root.write_classes(root, writer.class_table())
    return labels


def write_safe_products(
    scene_folder: str,
    out_dir: str,
    tile: str = "32UQU",
    baseline: str = "0204",
    metadata: bool = False,
) -> list[str]:
    """Rewrites a scene folder's dates as Level-1C products, one per date:
    `S2A_MSIL1C_<date>T103021_N0204_R065_T<tile>_<date>T103021.SAFE/GRANULE/L1C_T<tile>_<date>/
    IMG_DATA/T<tile>_<date>T103021_B01.jp2`, ..., losslessly compressed, same grid.

    Only the band files the ingestion reads are written (no TCI, no masks). From processing
    baseline "0400" on, digital numbers carry ESA's +1000 radiometric offset (no-data 0 stays 0);
    `metadata` also writes an MTD_MSIL1C.xml holding just the offsets (`RADIO_ADD_OFFSET`).

    Returns:
      The `.SAFE` folders, sorted by date.

    Raises:
      RuntimeError: if GDAL has no JP2OpenJPEG driver.
    """
    driver = gdal.GetDriverByName("JP2OpenJPEG")
    if driver is None:
        raise RuntimeError("GDAL has no JP2OpenJPEG driver to write .jp2 bands")
    products = []
    for date, files in scenes.find_dates(scene_folder).items():
        stamp = f"{date}T103021"
        product = os.path.join(out_dir, f"S2A_MSIL1C_{stamp}_N{baseline}_R065_T{tile}_{stamp}.SAFE")
        image_data = os.path.join(product, "GRANULE", f"L1C_T{tile}_{date}", "IMG_DATA")
        os.makedirs(image_data)
        offset = 1000 if int(baseline) >= 400 else 0
        if metadata:
            _write_offset_metadata(os.path.join(product, "MTD_MSIL1C.xml"), -offset)
        for suffix, (_, names) in rasters.RESOLUTIONS.items():
            sources = scenes.open_sources(files[suffix])
            values = scenes.read_sources(sources, len(names))
            grid = rasters.grid_of(sources[0][1])
            for index, name in enumerate(names):
                memory = gdal.GetDriverByName("MEM").Create(
                    "", grid.width, grid.height, 1, gdal.GDT_UInt16
                )
                memory.SetGeoTransform(grid.geotransform)
                memory.SetProjection(grid.wkt)
                band = values[..., index].astype(np.uint16)
                band = np.where(band > 0, band + offset, 0).astype(np.uint16)
                memory.GetRasterBand(1).WriteArray(band)
                path = os.path.join(
                    image_data, f"T{tile}_{stamp}_{scenes.file_band_name(name)}.jp2"
                )
                driver.CreateCopy(path, memory, options=["QUALITY=100", "REVERSIBLE=YES"])
        products.append(product)
    return products


def _write_offset_metadata(path: str, offset: int) -> None:
    """A stand-in MTD_MSIL1C.xml with only the radiometric offsets of the 13 bands."""
    tag = "RADIO_ADD_OFFSET"
    offsets = "\n".join(f'      <{tag} band_id="{band}">{offset}</{tag}>' for band in range(13))
    with open(path, "w", encoding="utf-8") as file:
        file.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-1C_User_Product>\n'
            "  <General_Info><Product_Image_Characteristics>\n"
            f"    <Radiometric_Offset_List>\n{offsets}\n    </Radiometric_Offset_List>\n"
            "  </Product_Image_Characteristics></General_Info>\n</n1:Level-1C_User_Product>\n"
        )
