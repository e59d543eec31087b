"""The files of a predicted map: a class-id and a confidence GeoTIFF, written row by row.

Both are tiled, DEFLATE-compressed GeoTIFFs on the scene's grid (with its CRS, even without an
EPSG code), written under temporary names and renamed once complete, with NoData values (class
0, confidence -1) for pixels without data, the class names and colours, and internal overviews.
`mtlcc_tf.predict_lib` fills them; `images.qgis_style` is the style written beside them.
"""

from __future__ import annotations

import os

import numpy as np
from osgeo import gdal

from data_pipeline import dataset_root, rasters
from mtlcc_tf import images

NODATA_CONFIDENCE = -1.0
_SMALLEST_OVERVIEW = 64  # pixels along the longer side


def overview_levels(width: int, height: int, smallest: int = _SMALLEST_OVERVIEW) -> list[int]:
    """Overview factors 2, 4, 8, ... while the overview's longer side keeps >= `smallest` px."""
    levels, factor = [], 2
    while -(-max(width, height) // factor) >= smallest:
        levels.append(factor)
        factor *= 2
    return levels


class MapWriter:
    """Writes rows of blended probabilities as a class-id and a confidence GeoTIFF.

    Files are written under temporary names next to the outputs and renamed on a clean exit of
    the `with` block; on an error they are removed.
    """

    def __init__(self, path: str, confidence_path: str, reference: rasters.Grid, classes):
        self.paths = {final: f"{final}.tmp-{os.getpid()}" for final in (path, confidence_path)}
        self.known_ids = np.asarray(classes.known_ids)
        # GTiff colour tables exist for Byte and UInt16 only.
        self.dtype = np.uint8 if max(classes.ids) < 256 else np.uint16
        self.classes = self._create(self.paths[path], self.dtype, reference)
        self.confidence = self._create(self.paths[confidence_path], np.float32, reference)
        images.describe_class_band(self.classes.GetRasterBand(1), classes)
        self.confidence.GetRasterBand(1).SetDescription("probability of the predicted class")

    @staticmethod
    def _create(path: str, dtype, reference: rasters.Grid) -> gdal.Dataset:
        # The input's own CRS, even without an EPSG code.
        dataset = rasters.create_geotiff(
            path, reference.width, reference.height, 1, dtype, reference.geotransform,
            reference.wkt,
        )  # fmt: skip
        nodata = dataset_root.UNKNOWN_ID if np.issubdtype(dtype, np.integer) else NODATA_CONFIDENCE
        dataset.GetRasterBand(1).SetNoDataValue(nodata)
        return dataset

    def write_rows(self, y0: int, probabilities: np.ndarray, no_data: np.ndarray) -> None:
        """Writes [rows, width, classes] blended probabilities at row `y0`; pixels where
        `no_data` [rows, width] is True get the NoData values."""
        indices = probabilities.argmax(axis=-1)
        ids = np.where(no_data, dataset_root.UNKNOWN_ID, self.known_ids[indices])
        confidence = np.where(no_data, NODATA_CONFIDENCE, probabilities.max(axis=-1))
        self.classes.GetRasterBand(1).WriteArray(ids.astype(self.dtype), 0, y0)
        self.confidence.GetRasterBand(1).WriteArray(confidence.astype(np.float32), 0, y0)

    def build_overviews(self) -> None:
        """Internal, DEFLATE-compressed overviews of both files (see `overview_levels`)."""
        levels = overview_levels(self.classes.RasterXSize, self.classes.RasterYSize)
        if not levels:
            return
        previous = gdal.GetConfigOption("COMPRESS_OVERVIEW")
        gdal.SetConfigOption("COMPRESS_OVERVIEW", "DEFLATE")
        try:
            self.classes.BuildOverviews("NEAREST", levels)
            self.confidence.BuildOverviews("AVERAGE", levels)
        finally:
            gdal.SetConfigOption("COMPRESS_OVERVIEW", previous)

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.build_overviews()
        for dataset in (self.classes, self.confidence):
            dataset.FlushCache()
        self.classes = self.confidence = None  # closes the files
        # GDAL keeps the category names in a `.aux.xml` sidecar, which moves with its file.
        for final, temporary in self.paths.items():
            for suffix in ("", ".aux.xml"):
                if error_type is None and os.path.exists(temporary + suffix):
                    os.replace(temporary + suffix, final + suffix)
                elif os.path.exists(temporary + suffix):
                    os.remove(temporary + suffix)
