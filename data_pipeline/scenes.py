"""The files of a scene: dates and bands found by name, GeoTIFF stacks, band files, Level-1C.

Shared by ingestion (`ingest_lib`), prediction (`mtlcc_tf.predict_lib`) and the simulator's
GeoTIFF writer. A scene is a folder of per-date stacks (`<YYYYMMDD>_10m.tif`, `_20m.tif`,
`_60m.tif`), of one file per band (`<YYYYMMDD>_B04.tif`, ...), a Level-1C `.SAFE` product or a
folder of them.
"""

from __future__ import annotations

import collections
import datetime
import functools
import glob
import os
import re

import numpy as np

from data_pipeline import grids
from data_pipeline.rasters import (
    RESOLUTIONS,
    Grid,
    RasterError,
    check_aligned,
    check_same_grid,
    grid_of,
    open_raster,
    read_bands,
)

_DATE_FILE = re.compile(r"^(\d{8})_(10m|20m|60m)\.tif$", re.IGNORECASE)
_BAND_FILE = re.compile(r"^(\d{8})_(B0?\d{1,2}A?)\.tif$", re.IGNORECASE)
# Level-1C products: S2A_MSIL1C_20170105T103421_N0204_R108_T32UQU_20170105T103421.SAFE, and in
# it GRANULE/<granule>/IMG_DATA/T32UQU_20170105T103421_B04.jp2; the date is in the file's name.
_SAFE_FOLDER = re.compile(r"^S2[A-Z]_MSIL1C_\d{8}T\d{6}_.*\.SAFE$", re.IGNORECASE)
_SAFE_BAND_FILE = re.compile(r"^T(\w{5})_(\d{8})(T\d{6})_(B\d[\dA])\.jp2$", re.IGNORECASE)
FACTORS = {"10m": 1, "20m": 2, "60m": 6}


def parse_date(date: str) -> tuple[int, int]:
    """(year, day of year) of `YYYYMMDD`."""
    day = datetime.datetime.strptime(date, "%Y%m%d").date()
    return day.year, day.timetuple().tm_yday


def _band_name(name: str) -> str:
    """`B04` -> `B4`, `B8A` -> `B8A`: the names of records.BANDS10/20/60."""
    return "B" + name[1:].lstrip("0").upper()


def file_band_name(name: str) -> str:
    """`B4` -> `B04`, `B8A` -> `B8A`: band names as Sentinel-2 file names spell them."""
    return name if name.endswith("A") else f"B{int(name[1:]):02d}"


def safe_products(folder: str) -> list[str]:
    """The Level-1C products of `folder`: itself if it is a `.SAFE` folder, else the `.SAFE`
    folders directly inside it (a time series of one tile), sorted; [] if there are none."""
    if _SAFE_FOLDER.match(os.path.basename(os.path.normpath(folder))):
        return [folder]
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if _SAFE_FOLDER.match(name) and os.path.isdir(os.path.join(folder, name))
    )


def _safe_band_files(products: list[str]) -> tuple[dict, dict]:
    """Date -> band -> JPEG2000 path of Level-1C products, and date -> a band file's template.

    Raises:
      RasterError: naming the product if it has no granule with JPEG2000 bands, or naming both
        files if two products hold the same band of one date.
    """
    bands, templates = collections.defaultdict(dict), {}
    for product in products:
        granules = sorted(glob.glob(os.path.join(product, "GRANULE", "*", "IMG_DATA")))
        found = False
        for image_data in granules:
            for name in sorted(os.listdir(image_data)):
                match = _SAFE_BAND_FILE.match(name)
                if not match:
                    continue
                found = True
                tile, date, stamp, band = match.groups()
                path, band = os.path.join(image_data, name), _band_name(band)
                if band in bands[date]:
                    raise RasterError(f"{path}: {date} {band} also in {bands[date][band]}")
                bands[date][band] = path
                templates[date] = os.path.join(image_data, f"T{tile}_{date}{stamp}_{{band}}.jp2")
        if not found:
            raise RasterError(
                f"{product}: no GRANULE/*/IMG_DATA/T<tile>_<YYYYMMDDTHHMMSS>_B<nn>.jp2 bands"
            )
    return bands, templates


def find_dates(folder: str) -> dict[str, dict[str, str | tuple[str, ...]]]:
    """Date -> resolution ("10m", "20m", "60m") -> a stack's path, or a tuple of one path per
    band in records.BANDS10/20/60 order; sorted by date.

    `folder` holds stacks (`<YYYYMMDD>_10m.tif`, ...) or band files (`<YYYYMMDD>_B04.tif`, ...),
    or is a Level-1C `.SAFE` product, or holds several (their `T<tile>_<date>T<time>_B04.jp2`).

    Raises:
      RasterError: naming the missing file if a date lacks a resolution (or one of its bands), or
        the folder if it holds no such files, or both GeoTIFFs and `.SAFE` products.
    """
    stacks, bands = collections.defaultdict(dict), collections.defaultdict(dict)
    for name in os.listdir(folder):
        match = _DATE_FILE.match(name)
        if match:
            stacks[match.group(1)][match.group(2).lower()] = os.path.join(folder, name)
        match = _BAND_FILE.match(name)
        if match:
            bands[match.group(1)][_band_name(match.group(2))] = os.path.join(folder, name)
    products = safe_products(folder)
    if products and (stacks or bands):
        raise RasterError(f"{folder}: holds both .SAFE products and <YYYYMMDD>_*.tif files")
    templates = {date: os.path.join(folder, f"{date}_{{band}}.tif") for date in bands}
    if products:
        bands, templates = _safe_band_files(products)
    if not stacks and not bands:
        raise RasterError(
            f"{folder}: no <YYYYMMDD>_10m.tif / _20m.tif / _60m.tif (or <YYYYMMDD>_B04.tif) "
            "files and no S2?_MSIL1C_*.SAFE products"
        )
    found = {}
    for date in sorted(set(stacks) | set(bands)):
        found[date] = {}
        for suffix, (_, names) in RESOLUTIONS.items():
            if suffix in stacks[date]:
                found[date][suffix] = stacks[date][suffix]
                continue
            missing = [band for band in names if band not in bands[date]]
            if missing == list(names) and not products:
                raise RasterError(f"{os.path.join(folder, f'{date}_{suffix}.tif')}: missing")
            if missing:
                raise RasterError(
                    f"{templates[date].format(band=file_band_name(missing[0]))}: missing"
                )
            found[date][suffix] = tuple(bands[date][band] for band in names)
        try:
            parse_date(date)
        except ValueError as error:
            raise RasterError(f"{folder}: {date} in a file name is no valid date") from error
    return found


def open_sources(paths: str | tuple[str, ...]) -> list[tuple[str, object]]:
    """(path, opened dataset) of a stack, or of every band file of a resolution."""
    return [(path, open_raster(path)) for path in ((paths,) if isinstance(paths, str) else paths)]


def read_sources(sources: list, num_bands: int, window=None) -> np.ndarray:
    """Reads [height, width, num_bands] from a stack or from one file per band.

    Level-1C bands come back without their radiometric offset (see `radiometric_offset`), so
    products of every processing baseline give the same digital numbers.
    """
    if len(sources) == 1:
        return read_bands(sources[0][0], num_bands, window, sources[0][1])
    bands = []
    for path, dataset in sources:
        values = read_bands(path, 1, window, dataset)
        offset = radiometric_offset(path)
        if offset:
            # No-data (0) stays 0; digital numbers below the offset were negative reflectances.
            shifted = np.clip(values.astype(np.int32) + offset, 0, None)
            values = np.where(values == 0, 0, shifted).astype(values.dtype)
        bands.append(values)
    return np.concatenate(bands, axis=-1)


def radiometric_offset(path: str) -> int:
    """The offset to add to a Level-1C band's digital numbers; 0 for other files.

    From processing baseline 04.00 (products from 25 January 2022 on) Level-1C digital numbers
    are reflectance x 10000 + 1000; `RADIO_ADD_OFFSET` in the product's MTD_MSIL1C.xml says so
    per band (-1000). Products without that file get -1000 if their name's baseline (`_N0400_`)
    is 04.00 or later, else 0.
    """
    match = _SAFE_BAND_FILE.match(os.path.basename(path))
    parts = os.path.normpath(path).split(os.sep)
    products = [index for index, part in enumerate(parts) if _SAFE_FOLDER.match(part)]
    if not match or not products:
        return 0
    product = os.sep.join(parts[: products[-1] + 1])
    return _product_offsets(product).get(_band_name(match.group(4)), 0)


# MTD_MSIL1C.xml numbers the bands 0..12 in this order.
_METADATA_BAND_ORDER = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
)  # fmt: skip
_OFFSET_TAG = re.compile(r'<RADIO_ADD_OFFSET\s+band_id="(\d+)"\s*>\s*(-?\d+)\s*<')
_BASELINE = re.compile(r"_N(\d{4})_")
_OFFSET_FROM_BASELINE = 400  # 04.00


@functools.lru_cache(maxsize=256)
def _product_offsets(product: str) -> dict[str, int]:
    """Band -> radiometric offset of one Level-1C product (see `radiometric_offset`)."""
    metadata = os.path.join(product, "MTD_MSIL1C.xml")
    if os.path.isfile(metadata):
        with open(metadata, encoding="utf-8", errors="replace") as file:
            found = _OFFSET_TAG.findall(file.read())
        try:
            offsets = {_METADATA_BAND_ORDER[int(band)]: int(value) for band, value in found}
        except IndexError as error:
            raise RasterError(f"{metadata}: RADIO_ADD_OFFSET of an unknown band_id") from error
        if offsets:
            return offsets
    match = _BASELINE.search(os.path.basename(product))
    late = match is not None and int(match.group(1)) >= _OFFSET_FROM_BASELINE
    return dict.fromkeys(_METADATA_BAND_ORDER, -1000 if late else 0)


def open_scene(dates: dict, resample: bool = False) -> tuple[Grid, dict]:
    """Opens every file of a scene and returns its 10 m grid and (date, suffix) -> sources.

    Every file must be on the Sentinel-2 grid of the first date's 10 m file (see `grids`); with
    `resample`, files that are not are warped onto it (in-memory VRTs) instead.

    Raises:
      RasterError: naming the first file whose pixel size, CRS, origin or extent differs from
        that grid, or that lacks bands.
    """
    first_path, first = open_sources(dates[next(iter(dates))]["10m"])[0]
    native = grid_of(first)
    reference = grids.target_grid(native, first_path) if resample else native
    if not resample:
        grids.check_resolution(native, 10, first_path)
    opened = {}
    for date, files in dates.items():
        for suffix, (_, names) in RESOLUTIONS.items():
            sources = open_sources(files[suffix])
            expected = len(names) if len(sources) == 1 else 1
            for index, (path, dataset) in enumerate(sources):
                if dataset.RasterCount < expected:
                    raise RasterError(
                        f"{path}: has {dataset.RasterCount} band(s), expected {expected}"
                    )
                grid = grid_of(dataset)
                if resample:
                    target = grids.target_grid(native, first_path, FACTORS[suffix])
                    if grid != target:
                        resampling = grids.reflectance_resampling(grid, target)
                        dataset = grids.warp_onto(dataset, grid, target, resampling, path)
                        sources[index] = (path, dataset)
                        grid = grid_of(dataset)
                else:
                    grids.check_resolution(grid, 10 * FACTORS[suffix], path)
                try:
                    if suffix == "10m":
                        check_same_grid(reference, grid, path)
                    else:  # coarser bands may round their size either way at a ragged border
                        check_aligned(reference, grid, path, FACTORS[suffix])
                except RasterError as error:
                    hint = "" if resample else f"; {grids.RESAMPLE_HINT}"
                    raise RasterError(f"{error}{hint}") from None
            opened[date, suffix] = sources
    return reference, opened
