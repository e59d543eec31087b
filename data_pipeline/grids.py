"""The Sentinel-2 grid a scene must be on (10, 20 and 60 m pixels) and warping onto it.

A scene's `_10m` files (or B2, B3, B4, B8) need 10 m pixels, `_20m` 20 m and `_60m` 60 m, all
with the same origin and CRS: the grid the model was trained on. Imagery on another grid (Landsat's
30 m, a scene resampled to one resolution for all bands) is refused with a message that says so,
or, with `resample`, warped onto it through GDAL's warper, lazily (an in-memory VRT, read window by
window like the files themselves):

- the target: the first date's 10 m file's CRS and upper-left corner, 10 m pixels (in the CRS's
  own units, e.g. 32.81 US survey feet) covering its extent, and 20 m and 60 m grids of that
  origin; other files are reprojected onto it where their CRS differs.
- reflectance: bilinear where the target's pixels are at most 1.5 times the source's (the usual
  case: 30 m onto 10 m), else the average of the source pixels (10 m onto 60 m), which keeps
  the band's mean instead of sampling a few pixels;
- labels: nearest neighbour, so that class ids stay class ids.

Source NoData stays no-data (GDAL's warper carries it over); `rasters.read_bands` reads it as 0.
"""

from __future__ import annotations

import math

from osgeo import gdal, osr

from data_pipeline.rasters import Grid, RasterError

gdal.UseExceptions()

SENTINEL2_GRID = (
    "the Sentinel-2 grid: 10 m pixels in the _10m files (B2, B3, B4, B8), 20 m in _20m "
    "(B5, B6, B7, B8A, B11, B12) and 60 m in _60m (B1, B9, B10), one origin and CRS"
)
RESAMPLE_HINT = (
    "pass --resample to warp it onto that grid (bilinear for reflectance, nearest for labels), "
    "or warp it first: gdalwarp -tr 10 10 -r bilinear in.tif out_10m.tif (20 20, 60 60)"
)
_RELATIVE_TOLERANCE = 1e-3  # 10.000001 m pixels are 10 m pixels


def metres_per_unit(wkt: str, path: str) -> float:
    """Metres per unit of a projected CRS (1 without CRS: taken to be metres).

    Raises:
      RasterError: naming `path` for a geographic CRS (degrees have no fixed size in metres).
    """
    if not wkt:
        return 1.0
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    if srs.IsGeographic():
        raise RasterError(
            f"{path}: the CRS is geographic (pixels in degrees); the model needs {SENTINEL2_GRID}."
            " Warp it onto a projected CRS in metres first, e.g. its UTM zone: "
            "gdalwarp -t_srs EPSG:326<zone> -tr 10 10 -r bilinear in.tif out.tif"
        )
    return srs.GetLinearUnits() or 1.0


def pixel_metres(grid: Grid, path: str) -> tuple[float, float]:
    """(x, y) pixel size of a grid in metres."""
    scale = metres_per_unit(grid.wkt, path)
    return grid.xres * scale, grid.yres * scale


def check_resolution(grid: Grid, metres: float, path: str, hint: str = RESAMPLE_HINT) -> None:
    """Raises RasterError naming `path` unless its pixels are `metres` square (in metres)."""
    x, y = pixel_metres(grid, path)
    if max(abs(x - metres), abs(y - metres)) > _RELATIVE_TOLERANCE * metres:
        raise RasterError(
            f"{path}: pixels are {x:g} x {y:g} m, expected {metres:g} m ({SENTINEL2_GRID}); {hint}"
        )


def target_grid(native: Grid, path: str, factor: int = 1) -> Grid:
    """The grid of `factor` x 10 m pixels with the native grid's CRS and upper-left corner,
    covering its extent (the last pixel may reach beyond it)."""
    size = 10.0 * factor / metres_per_unit(native.wkt, path)
    width = math.ceil(native.width * native.xres / size - _RELATIVE_TOLERANCE)
    height = math.ceil(native.height * native.yres / size - _RELATIVE_TOLERANCE)
    xmin, _, _, ymax, _, _ = native.geotransform
    return Grid(
        width=max(width, 1), height=max(height, 1),
        geotransform=(xmin, size, 0.0, ymax, 0.0, -size), wkt=native.wkt, epsg=native.epsg,
    )  # fmt: skip


def reflectance_resampling(source: Grid, target: Grid) -> str:
    """ "bilinear" unless the target's pixels are over 1.5 times the source's, then "average"."""
    return "average" if target.xres > 1.5 * source.xres else "bilinear"


def warp_onto(dataset: gdal.Dataset, source: Grid, target: Grid, resampling: str, path: str):
    """`dataset` warped onto `target` (an in-memory VRT, warped as windows are read).

    Raises:
      RasterError: naming `path` if GDAL cannot warp it (e.g. no CRS where the target has one).
    """
    if bool(source.wkt) != bool(target.wkt):
        mine, theirs = ("a", "has none") if source.wkt else ("no", "has one")
        raise RasterError(f"{path}: has {mine} CRS, the scene's 10 m grid {theirs}; cannot warp it")
    xmin, xres, _, ymax, _, yres = target.geotransform
    bounds = (xmin, ymax - target.height * abs(yres), xmin + target.width * xres, ymax)
    try:
        return gdal.Warp(
            "", dataset, format="VRT", outputBounds=bounds, width=target.width,
            height=target.height, srcSRS=source.wkt or None, dstSRS=target.wkt or None,
            resampleAlg=resampling,
        )  # fmt: skip
    except RuntimeError as error:
        raise RasterError(f"{path}: cannot warp onto the 10 m grid: {error}") from error
