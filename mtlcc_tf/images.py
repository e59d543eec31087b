"""Per-tile prediction images: class colours, PNG maps and georeferenced GeoTIFFs (via GDAL)."""

from __future__ import annotations

import html
import io
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from matplotlib import image as matplotlib_image

from data_pipeline import dataset_root

UNKNOWN_COLOR = (0, 0, 0)


def class_colors(num_classes: int) -> np.ndarray:
    """A fixed colour per class index: uint8 [num_classes, 3].

    tab20 (then tab20b/tab20c) keeps neighbouring class indices visually distinct and, being a
    fixed list, gives every run and every tile the same colour for the same class.
    """
    palette = []
    for name in ("tab20", "tab20b", "tab20c"):
        palette += [tuple(color[:3]) for color in colormaps[name].colors]
    if num_classes > len(palette):
        hues = colormaps["hsv"](np.linspace(0.0, 1.0, num_classes - len(palette), endpoint=False))
        palette += [tuple(color[:3]) for color in hues]
    return np.round(np.asarray(palette[:num_classes]) * 255).astype(np.uint8)


def colorize(class_indices: np.ndarray, num_classes: int) -> np.ndarray:
    """uint8 [height, width, 3] RGB of class indices [height, width]; unknown (-1) is black."""
    colors = np.concatenate([class_colors(num_classes), [UNKNOWN_COLOR]]).astype(np.uint8)
    # Index -1 picks the last row, the unknown colour.
    return colors[np.where(class_indices < 0, -1, class_indices)]


def _write_bytes(path: str, data: bytes) -> None:
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(data)


def write_class_png(path: str, class_indices: np.ndarray, num_classes: int) -> None:
    """Writes class indices [height, width] (-1 unknown) as a colour PNG, one pixel per pixel."""
    buffer = io.BytesIO()
    matplotlib_image.imsave(buffer, colorize(class_indices, num_classes), format="png")
    _write_bytes(path, buffer.getvalue())


def write_confidence_png(path: str, confidence: np.ndarray) -> None:
    """Writes values in [0, 1] [height, width] as a viridis PNG (yellow = confident)."""
    buffer = io.BytesIO()
    matplotlib_image.imsave(buffer, confidence, cmap="viridis", vmin=0.0, vmax=1.0, format="png")
    _write_bytes(path, buffer.getvalue())


def _gdal():
    """Imports GDAL on first use, so that evaluation without GeoTIFFs works without it."""
    try:
        from osgeo import gdal, osr
    except ImportError as error:
        raise ImportError(
            "writing GeoTIFFs needs GDAL's Python bindings (`from osgeo import gdal`); "
            "scripts/setup.sh installs them"
        ) from error
    gdal.UseExceptions()
    osr.UseExceptions()
    return gdal, osr


def _create_geotiff(path: str, array: np.ndarray, geotransform) -> object:
    """A one-band GeoTIFF holding `array` ([height, width]), through `rasters.create_geotiff`."""
    _gdal()  # a clear message where GDAL is missing
    from data_pipeline import rasters  # noqa: PLC0415 - rasters needs GDAL at import

    height, width = array.shape
    dataset = rasters.create_geotiff(
        path, width, height, 1, array.dtype, geotransform.gdal(), geotransform.crs
    )
    dataset.GetRasterBand(1).WriteArray(array)
    return dataset


def write_class_geotiff(
    path: str,
    class_indices: np.ndarray,
    geotransform: dataset_root.Geotransform,
    class_table: dataset_root.ClassTable,
) -> None:
    """Writes predicted classes as a GeoTIFF of the dataset's own label ids.

    Values are label ids from classes.txt (e.g. 22 for winter wheat), not class indices, so the
    file lines up with the dataset's label rasters. The band has a colour table (the PNG colours)
    and the class names as category names, which QGIS shows as a legend.

    Args:
      path: output .tif (local path or a GDAL virtual path such as /vsimem/).
      class_indices: int [height, width] class indices 0..K-1 (-1 is written as id 0, unknown).
      geotransform: the tile's geotransform and EPSG code (from geotransforms.csv).
      class_table: the dataset's classes.
    """
    known_ids = np.asarray(class_table.known_ids, np.int64)
    label_ids = np.where(class_indices < 0, dataset_root.UNKNOWN_ID, known_ids[class_indices])
    max_id = int(max(class_table.ids))
    # GTiff colour tables exist for Byte and UInt16 only.
    if max_id < 256:
        dtype = np.uint8
    elif max_id < 65536:
        dtype = np.uint16
    else:
        raise ValueError(f"label id {max_id} does not fit a uint16 GeoTIFF")
    dataset = _create_geotiff(path, label_ids.astype(dtype), geotransform)
    describe_class_band(dataset.GetRasterBand(1), class_table)
    dataset.FlushCache()
    dataset = None  # closing the GDAL dataset writes the file


def describe_class_band(band, class_table: dataset_root.ClassTable) -> None:
    """Gives a band of label ids the PNGs' colours as a colour table and the class names as
    category names (which QGIS shows as a legend)."""
    gdal, _ = _gdal()
    colors = class_colors(class_table.num_classes)
    table = gdal.ColorTable()
    table.SetColorEntry(dataset_root.UNKNOWN_ID, (*UNKNOWN_COLOR, 255))
    for index, label_id in enumerate(class_table.known_ids):
        table.SetColorEntry(label_id, (*(int(c) for c in colors[index]), 255))
    names = [""] * (max(class_table.ids) + 1)
    for label_id, name in zip(class_table.ids, class_table.names, strict=True):
        names[label_id] = name
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(names)
    band.SetDescription("predicted class (label id)")


def qgis_style(class_table: dataset_root.ClassTable) -> str:
    """A QGIS layer style (`.qml`) of a class-id raster: a paletted renderer with the PNGs'
    colours and the class names as labels, unknown (0) transparent."""
    colors = class_colors(class_table.num_classes)
    entries = "\n".join(
        f'        <paletteEntry value="{label_id}" color="#{"".join(f"{c:02x}" for c in color)}" '
        f'label="{html.escape(name, quote=True)}" alpha="255"/>'
        for label_id, name, color in zip(
            class_table.known_ids, class_table.known_names, colors, strict=True
        )
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
"""


def write_float_geotiff(
    path: str,
    values: np.ndarray,
    geotransform: dataset_root.Geotransform,
    description: str = "",
) -> None:
    """Writes float32 [height, width] values (e.g. confidence) as a georeferenced GeoTIFF."""
    dataset = _create_geotiff(path, values.astype(np.float32), geotransform)
    if description:
        dataset.GetRasterBand(1).SetDescription(description)
    dataset.FlushCache()
    dataset = None


def write_tile_images(
    stem: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    class_table: dataset_root.ClassTable,
    geotransform: dataset_root.Geotransform | None,
) -> None:
    """Writes `<stem>_{prediction,labels,confidence}.png` and, if georeferenced, GeoTIFFs.

    Args:
      stem: path prefix of the tile's files, e.g. `out/images/2016/1234`.
      predictions: int [height, width] predicted class indices.
      labels: int [height, width] true class indices, -1 unknown.
      confidence: float [height, width] probability of the predicted class.
      class_table: the dataset's classes.
      geotransform: the tile's georeference; None writes PNGs only.
    """
    write_class_png(f"{stem}_prediction.png", predictions, class_table.num_classes)
    write_class_png(f"{stem}_labels.png", labels, class_table.num_classes)
    write_confidence_png(f"{stem}_confidence.png", confidence)
    if geotransform is not None:
        write_class_geotiff(f"{stem}_prediction.tif", predictions, geotransform, class_table)
        write_float_geotiff(
            f"{stem}_confidence.tif", confidence, geotransform, "probability of the predicted class"
        )


def read_geotiff(path: str) -> tuple[np.ndarray, tuple[float, ...], int | None, Sequence[str]]:
    """Reads band 1 of a GeoTIFF: (array, geotransform, EPSG code or None, category names)."""
    gdal, osr = _gdal()
    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(1)
    reference = osr.SpatialReference(wkt=dataset.GetProjection())
    try:
        reference.AutoIdentifyEPSG()
    except RuntimeError:
        pass  # a CRS without EPSG code
    code = reference.GetAuthorityCode(None)
    return (
        band.ReadAsArray(),
        tuple(dataset.GetGeoTransform()),
        int(code) if code else None,
        band.GetCategoryNames() or [],
    )
