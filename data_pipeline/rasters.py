"""GDAL helpers: open rasters with errors naming the file, read windows, write GeoTIFFs, grids."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np
from osgeo import gdal, ogr, osr

from data_pipeline import dataset_root, records

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

# Tiled and compressed: QGIS and GDAL read windows of it without decompressing the whole file.
GEOTIFF_OPTIONS = ("TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2")
# Files of one date in the PyTorch port's layout: suffix -> (record key, band names).
RESOLUTIONS = {
    "10m": ("x10", records.BANDS10),
    "20m": ("x20", records.BANDS20),
    "60m": ("x60", records.BANDS60),
}
LABELS_FILE = "y.tif"
# GDAL drivers that read Sentinel-2's .jp2 bands; JP2OpenJPEG is the one open-source builds have.
JPEG2000_DRIVERS = ("JP2OpenJPEG", "JP2KAK", "JP2ECW", "JP2MrSID")
# What GDAL's GeoPackage driver reports for layers stored without a CRS (srs_id 0 and -1).
_UNDEFINED_SRS_NAMES = ("Undefined geographic SRS", "Undefined Cartesian SRS")
_TOLERANCE = 1e-6  # metres; origins of grids that agree differ by rounding only


class RasterError(ValueError):
    """A raster is missing, unreadable or does not fit; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Grid:
    """Where a raster lies: size in pixels, GDAL geotransform, and its CRS."""

    width: int
    height: int
    geotransform: tuple[float, ...]
    wkt: str
    epsg: int  # 0 if the CRS has none (or is absent)

    @property
    def xres(self) -> float:
        return self.geotransform[1]

    @property
    def yres(self) -> float:
        return abs(self.geotransform[5])

    def same_crs(self, other: Grid) -> bool:
        if not self.wkt or not other.wkt:
            return self.wkt == other.wkt
        mine, theirs = osr.SpatialReference(), osr.SpatialReference()
        mine.ImportFromWkt(self.wkt)
        theirs.ImportFromWkt(other.wkt)
        return bool(mine.IsSame(theirs))


def epsg_of(wkt: str) -> int:
    """EPSG code of a CRS in WKT (0 if there is none, or GDAL cannot identify it)."""
    if not wkt:
        return 0
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    try:
        srs.AutoIdentifyEPSG()
    except RuntimeError:
        pass  # not identifiable; the authority code may still be in the WKT
    code = srs.GetAuthorityCode(None)
    return int(code) if code and code.isdigit() else 0


def open_raster(path: str) -> gdal.Dataset:
    """Opens a raster read-only; raises RasterError naming the file if missing or unreadable."""
    if not os.path.isfile(path):
        raise RasterError(f"{path}: no such file")
    if path.lower().endswith(".jp2") and not any(map(gdal.GetDriverByName, JPEG2000_DRIVERS)):
        raise RasterError(
            f"{path}: this GDAL build ({gdal.__version__}) has no JPEG2000 driver; "
            f"install GDAL with the {JPEG2000_DRIVERS[0]} driver (OpenJPEG)"
        )
    try:
        dataset = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as error:
        raise RasterError(f"{path}: unreadable raster: {error}") from error
    if dataset is None or dataset.RasterCount == 0:
        raise RasterError(f"{path}: unreadable raster (no bands)")
    return dataset


def strip_block_bytes(dataset: gdal.Dataset, strip_rows: int) -> int:
    """Bytes of the blocks (tiles or strips) that a strip of `strip_rows` rows across all bands of
    a raster touches at most."""
    total = 0
    for index in range(dataset.RasterCount):
        band = dataset.GetRasterBand(index + 1)
        block_height = band.GetBlockSize()[1]
        rows = (-(-strip_rows // block_height) + 1) * block_height
        total += rows * dataset.RasterXSize * gdal.GetDataTypeSize(band.DataType) // 8
    return total


@contextlib.contextmanager
def block_cache(datasets: Iterable[gdal.Dataset], strip_rows: int) -> Iterator[int]:
    """Shrinks GDAL's block cache to what a strip of `strip_rows` rows touches in every dataset
    (its blocks, plus 64 MiB), never above the cache's size before (GDAL_CACHEMAX, by default
    5 % of the RAM); restores that size on exit and yields the size in bytes.

    For reading (and writing) rasters in strips from top to bottom: GDAL keeps every block it has
    read until its cache is full, so without this a large scene always fills the whole cache;
    with it the cache grows with the rasters' width and number, not their height. Where the
    strip's blocks do not fit (many dates of a wide scene), blocks are decompressed again for
    later strips: a larger GDAL_CACHEMAX trades memory for that time.
    """
    needed = sum(strip_block_bytes(dataset, strip_rows) for dataset in datasets) + 2**26
    previous = gdal.GetCacheMax()
    size = min(needed, previous)
    gdal.SetCacheMax(size)
    try:
        yield size
    finally:
        gdal.SetCacheMax(previous)


def grid_of(dataset: gdal.Dataset) -> Grid:
    wkt = dataset.GetProjection() or ""
    return Grid(
        width=dataset.RasterXSize,
        height=dataset.RasterYSize,
        geotransform=tuple(dataset.GetGeoTransform()),
        wkt=wkt,
        epsg=epsg_of(wkt),
    )


def read_grid(path: str) -> Grid:
    return grid_of(open_raster(path))


def read_bands(
    path: str,
    num_bands: int,
    window: tuple[int, int, int, int] | None = None,
    dataset: gdal.Dataset | None = None,
) -> np.ndarray:
    """Reads the first `num_bands` bands of a raster, or a window of them.

    No-data reads as 0 (no observation in a reflectance band, unknown in a label band): a band's
    declared NoData value, and NaN or infinity in floating-point rasters.

    Args:
      path: the file (named in errors).
      num_bands: bands expected; fewer raises, more are ignored.
      window: (xoff, yoff, xsize, ysize) in pixels; the whole raster if None.
      dataset: the file already opened, to read many windows without reopening it.

    Returns:
      [ysize, xsize, num_bands] in the raster's data type.

    Raises:
      RasterError: naming the file, if it has too few bands, the window lies outside it, or a
        read fails (e.g. a truncated file).
    """
    dataset = dataset or open_raster(path)
    if dataset.RasterCount < num_bands:
        raise RasterError(f"{path}: has {dataset.RasterCount} band(s), expected {num_bands}")
    xoff, yoff, xsize, ysize = window or (0, 0, dataset.RasterXSize, dataset.RasterYSize)
    if xoff + xsize > dataset.RasterXSize or yoff + ysize > dataset.RasterYSize:
        raise RasterError(
            f"{path}: window {window} lies outside the raster "
            f"({dataset.RasterXSize} x {dataset.RasterYSize} pixels)"
        )
    try:
        bands = [
            dataset.GetRasterBand(index + 1).ReadAsArray(xoff, yoff, xsize, ysize)
            for index in range(num_bands)
        ]
    except RuntimeError as error:
        raise RasterError(f"{path}: read failed: {error}") from error
    if any(band is None for band in bands):
        raise RasterError(f"{path}: read failed")
    for index, values in enumerate(bands):
        nodata = dataset.GetRasterBand(index + 1).GetNoDataValue()
        invalid = values == nodata if nodata is not None and np.isfinite(nodata) else None
        if np.issubdtype(values.dtype, np.floating):
            invalid = ~np.isfinite(values) if invalid is None else invalid | ~np.isfinite(values)
        if invalid is not None and invalid.any():
            values[invalid] = 0
    return np.stack(bands, axis=-1)


def _gdal_type(dtype: np.dtype) -> int:
    from osgeo import gdal_array

    return gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(dtype))


def srs_wkt(crs: int | str) -> str:
    """WKT of a CRS given as an EPSG code or as WKT (returned as is); empty for 0 or "" (none)."""
    if isinstance(crs, str):
        return crs
    if not crs:
        return ""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(crs))
    return srs.ExportToWkt()


def crs_name(wkt: str) -> str:
    """`EPSG:32632`, or the CRS's name with "(no EPSG code)", or "no CRS": for messages."""
    if not wkt:
        return "no CRS"
    epsg = epsg_of(wkt)
    if epsg:
        return f"EPSG:{epsg}"
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    return f"{srs.GetName() or 'unnamed CRS'} (no EPSG code)"


def create_geotiff(
    path: str,
    width: int,
    height: int,
    num_bands: int,
    dtype: np.dtype,
    geotransform: tuple[float, ...],
    crs: int | str,
    band_names: tuple[str, ...] = (),
) -> gdal.Dataset:
    """Creates a tiled, DEFLATE-compressed GeoTIFF to write windows into; close by dropping it.

    `crs`: an EPSG code, or WKT (a CRS without EPSG code keeps its full definition); 0 or ""
    for none. `path` may be a GDAL virtual path (/vsimem/...); local parent folders are created.
    """
    if not path.startswith("/vsi"):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(
        path, width, height, num_bands, _gdal_type(dtype), options=list(GEOTIFF_OPTIONS)
    )
    dataset.SetGeoTransform(tuple(geotransform))
    if crs:
        dataset.SetProjection(srs_wkt(crs))
    for index, name in enumerate(band_names[:num_bands]):
        dataset.GetRasterBand(index + 1).SetDescription(name)
    return dataset


def write_geotiff(
    path: str,
    array: np.ndarray,
    geotransform: tuple[float, ...],
    crs: int | str,
    band_names: tuple[str, ...] = (),
) -> None:
    """Writes [height, width] or [height, width, bands] as a tiled, DEFLATE-compressed GeoTIFF
    (`crs` as in `create_geotiff`)."""
    array = array[..., None] if array.ndim == 2 else array
    height, width, num_bands = array.shape
    dataset = create_geotiff(
        path, width, height, num_bands, array.dtype, geotransform, crs, band_names
    )
    for index in range(num_bands):
        dataset.GetRasterBand(index + 1).WriteArray(array[..., index])
    dataset.FlushCache()
    dataset = None  # closes the file


def rasterize_labels(vector: str, attribute: str, reference: Grid, path: str) -> str:
    """Burns a vector file's `attribute` onto the reference grid as a uint16 GeoTIFF at `path`,
    reprojecting the features from the layer's CRS to the grid's.

    Raises:
      RasterError: naming the vector file, if unreadable, lacking the attribute, or without a CRS
        (for a grid with one).
    """
    if not os.path.isfile(vector):
        raise RasterError(f"{vector}: no such file")
    try:
        source = gdal.OpenEx(vector, gdal.OF_VECTOR)
    except RuntimeError as error:
        raise RasterError(f"{vector}: unreadable vector file: {error}") from error
    if source is None or source.GetLayerCount() == 0:
        raise RasterError(f"{vector}: unreadable vector file (no layers)")
    layer = source.GetLayer(0)
    # gdal.Rasterize reprojects the features onto the grid's CRS when both have one. Without a
    # CRS a GeoPackage layer reports an "Undefined geographic SRS": treated as none, else its
    # metres would be taken for degrees.
    srs = layer.GetSpatialRef()
    if (srs is None or srs.GetName() in _UNDEFINED_SRS_NAMES) and reference.wkt:
        raise RasterError(
            f"{vector}: layer {layer.GetName()!r} has no CRS, so it cannot be placed on the "
            f"scene's (EPSG {reference.epsg or 'unknown'}); assign one, e.g. "
            "ogr2ogr -a_srs EPSG:<code> out.gpkg in.gpkg"
        )
    definition = layer.GetLayerDefn()
    fields = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if attribute not in fields:
        raise RasterError(f"{vector}: no attribute {attribute!r}; fields are {fields}")
    field = definition.GetFieldDefn(fields.index(attribute))
    if field.GetType() not in (ogr.OFTInteger, ogr.OFTInteger64):
        raise RasterError(
            f"{vector}: attribute {attribute!r} is of type {field.GetTypeName()}, not an integer "
            "class id; map it onto the class table's ids first (e.g. ogr2ogr -sql \"SELECT *, "
            f'CAST({attribute} AS integer) AS class_id FROM {layer.GetName()}" out.gpkg in.gpkg '
            "for numbers in text, or a lookup table)"
        )
    write_geotiff(
        path, np.zeros((reference.height, reference.width), np.uint16), reference.geotransform, 0
    )
    target = gdal.Open(path, gdal.GA_Update)
    target.SetProjection(reference.wkt)
    gdal.Rasterize(target, source, attribute=attribute, layers=[layer.GetName()])
    target.FlushCache()
    return path


def scaled(geotransform: tuple[float, ...], factor: int) -> tuple[float, ...]:
    """The geotransform of the same origin with pixels `factor` times larger."""
    xmin, xres, xskew, ymax, yskew, yres = geotransform
    return (xmin, xres * factor, xskew, ymax, yskew, yres * factor)


def check_aligned(reference: Grid, grid: Grid, path: str, factor: int = 1) -> None:
    """Raises RasterError naming `path` unless `grid` has the reference's CRS and origin, and
    pixels `factor` times the reference's size (factor 2 for 20 m bands on a 10 m grid)."""
    if not reference.same_crs(grid):
        raise RasterError(
            f"{path}: CRS (EPSG {grid.epsg or 'unknown'}) differs from the scene's "
            f"(EPSG {reference.epsg or 'unknown'})"
        )
    expected = scaled(reference.geotransform, factor)
    if not np.allclose(grid.geotransform, expected, rtol=0, atol=_TOLERANCE):
        raise RasterError(
            f"{path}: geotransform {grid.geotransform} does not match the scene's {expected}"
        )


def check_same_grid(reference: Grid, grid: Grid, path: str, factor: int = 1) -> None:
    """Like `check_aligned`, and the size must be the reference's divided by `factor`."""
    check_aligned(reference, grid, path, factor)
    size = (-(-reference.width // factor), -(-reference.height // factor))
    if (grid.width, grid.height) != size:
        raise RasterError(
            f"{path}: {grid.width} x {grid.height} pixels, expected {size[0]} x {size[1]} "
            "(the extent differs from the scene's)"
        )


def to_geotransform(grid: Grid) -> dataset_root.Geotransform:
    """A dataset root's geotransform of a grid; the WKT is kept where the CRS has no EPSG code."""
    xmin, xres, _, ymax, _, yres = grid.geotransform
    return dataset_root.Geotransform(
        xmin=xmin, xres=xres, ymax=ymax, yres=abs(yres), srid=grid.epsg,
        wkt="" if grid.epsg else grid.wkt,
    )  # fmt: skip
