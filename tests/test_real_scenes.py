"""Real scenes that are not Sentinel-2 on its own grid, end to end: a Lambert Conformal Conic CRS
without EPSG code, 30 m pixels (60 m and 180 m for the coarser groups), no-data, label NoData;
labels that come out empty, failed ingests, sparse labels, QGIS-ready maps."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from data_pipeline import (
    dataset_root,
    ingest_lib,
    input_pipeline,
    inspection,
    rasters,
    records,
    tile_folders,
)
from data_pipeline.data_config import DataConfig
from data_pipeline.simulation import geotiff, simulator, writer
from mtlcc_tf import images, map_files, predict_lib, train_steps
from tests.conftest import write_random_root

CONFIG = simulator.SimulationConfig(
    num_tiles_x=4, num_tiles_y=3, pix10=12, years=(2016,), nobs=4, num_observations=4
)
NODATA, LABEL_NODATA = 65535, -99999
NO_DATA_COLUMNS = 4  # of the 30 m grid, on every date
ORIGIN = (600000.0, 30.0, 0.0, 5300000.0, 0.0, -30.0)
FACTORS = {"10m.tif": 1, "20m.tif": 2, "60m.tif": 6}


def lcc_wkt() -> str:
    """A state-plane-like Lambert Conformal Conic CRS in metres that has no EPSG code."""
    srs = osr.SpatialReference()
    srs.SetProjCS("Custom Lambert Conformal Conic")
    srs.SetWellKnownGeogCS("WGS84")
    srs.SetLCC(47.5, 49.5, 48.0, 11.0, 600000.0, 0.0)
    srs.SetLinearUnits(osr.SRS_UL_METER, 1.0)
    return srs.ExportToWkt()


def same_crs(wkt: str, other: str) -> bool:
    mine, theirs = osr.SpatialReference(), osr.SpatialReference()
    mine.ImportFromWkt(wkt)
    theirs.ImportFromWkt(other)
    return bool(mine.IsSame(theirs))


@pytest.fixture(scope="module")
def landsat_like(tmp_path_factory):
    """The simulated scene moved onto 30 m pixels in an LCC CRS without EPSG code, its first
    columns NoData on every date and its last row of labels the label raster's NoData."""
    simulated = str(tmp_path_factory.mktemp("simulated"))
    tiles = geotiff.write_scene_folder(simulated, CONFIG)
    folder = str(tmp_path_factory.mktemp("lcc30"))
    wkt = lcc_wkt()
    for name in sorted(os.listdir(simulated)):
        source = os.path.join(simulated, name)
        if not name.endswith(".tif"):
            shutil.copy(source, folder)
            continue
        dataset = rasters.open_raster(source)
        values = rasters.read_bands(source, dataset.RasterCount, dataset=dataset)
        factor = FACTORS.get(name[-7:], 1)
        if name == rasters.LABELS_FILE:
            values, nodata = values.astype(np.int32), LABEL_NODATA
            values[-1] = LABEL_NODATA
        else:
            values[:, : NO_DATA_COLUMNS // factor] = nodata = NODATA
        path = os.path.join(folder, name)
        rasters.write_geotiff(path, values, rasters.scaled(ORIGIN, factor), wkt)
        written = gdal.Open(path, gdal.GA_Update)
        for band in range(written.RasterCount):
            written.GetRasterBand(band + 1).SetNoDataValue(nodata)
        written = None  # closes the file
    return folder, tiles


def first_10m(folder: str) -> str:
    return os.path.join(folder, sorted(n for n in os.listdir(folder) if n.endswith("_10m.tif"))[0])


def test_a_scene_off_the_grid_is_refused_saying_what_grid_is_expected(landsat_like, tmp_path):
    folder, _ = landsat_like
    root = str(tmp_path / "root")
    config = ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=f"{folder}/y.tif")
    with pytest.raises(rasters.RasterError) as error:
        ingest_lib.ingest(config)
    message = str(error.value)
    assert (
        message.startswith(first_10m(folder)) and "pixels are 30 x 30 m, expected 10 m" in message
    )
    assert "--resample" in message and "20 m in _20m" in message
    assert not os.path.exists(root) and os.listdir(tmp_path) == []


def read_tiles(root: str) -> dict[str, records.Tile]:
    folder = os.path.join(root, "data16")
    return {
        name.split(".")[0]: records.read_tile(os.path.join(folder, name))[0]
        for name in os.listdir(folder)
    }


def test_resampled_ingest_keeps_the_crs_and_honours_no_data(landsat_like, tmp_path):
    folder, simulated = landsat_like
    root = str(tmp_path / "root")
    config = ingest_lib.IngestConfig(
        input=folder, out_dir=root, pix10=12, labels=f"{folder}/y.tif", resample=True
    )
    summary = ingest_lib.ingest(config)
    # 48 x 36 pixels of 30 m are 144 x 108 of 10 m: 12 x 9 tiles.
    assert summary["tiles"] == "12 x 9" and summary["epsg"] == 0 and summary["resampled"]
    assert summary["crs"] == "Custom Lambert Conformal Conic (no EPSG code)"
    geotransforms = dataset_root.read_geotransforms(root)
    assert geotransforms["1"].gdal() == (600120.0, 10.0, 0.0, 5300000.0, 0.0, -10.0)
    assert geotransforms["1"].srid == 0 and same_crs(geotransforms["1"].wkt, lcc_wkt())
    tiles = read_tiles(root)
    # A 10 m pixel centred on a 30 m pixel's centre keeps its value (bilinear weights 1, 0):
    # column 13 of the scene is column 4 of the 30 m grid, column 4 of simulated tile 0.
    np.testing.assert_array_equal(tiles["1"].x10[:4, 1, 1], simulated[2016][0].x10[:, 0, 4])
    # No-data: 30 m columns 0-3 are 10 m columns 0-11; bilinear needs both neighbours, so
    # columns up to 9 are no-data for sure, column 13 on has data.
    no_data = np.concatenate([records.no_data(tiles[str(index)].x10) for index in (0, 1)], axis=1)
    assert no_data[:, :10].all() and not no_data[:, 13:].any()
    for tile in tiles.values():
        assert not tile.labels[records.no_data(tile.x10)].any()  # never trained on
    assert summary["no_data_pixels"] == sum(
        int(records.no_data(tile.x10).sum()) for tile in tiles.values()
    )
    # The label raster's NoData (-99999, the last 30 m row) is unknown (0), not a class id.
    bottom = tiles[str(8 * 12 + 6)].labels
    assert not bottom[-3:].any() and bottom[:-3].any()
    assert summary["labelled_pixels"] == sum(
        int(np.count_nonzero(t.labels)) for t in tiles.values()
    )
    splits = summary["labels_per_split"]
    assert splits and all(entry["tiles_with_labels"] <= entry["tiles"] for entry in splits.values())
    # The CRS travels on to the GeoTIFFs of tfrecord2tif and of evaluate --write_images.
    record = os.path.join(root, "data16", "1.tfrecord.gz")
    written = tile_folders.record_to_geotiffs(record, str(tmp_path / "tif"), root)
    assert same_crs(rasters.read_grid(written[0]).wkt, lcc_wkt())
    stem = str(tmp_path / "images" / "1")
    indices = np.zeros((12, 12), np.int64)
    table = writer.class_table()
    images.write_tile_images(stem, indices, indices, indices * 0.5, table, geotransforms["1"])
    assert same_crs(rasters.read_grid(f"{stem}_prediction.tif").wkt, lcc_wkt())


def test_resampled_prediction_writes_no_data_and_gis_files(
    landsat_like, tiny_trained_model, tmp_path
):
    folder, _ = landsat_like
    _, models = tiny_trained_model
    predictor = predict_lib.load_predictor(os.path.join(models, "seed_0"), "last")
    output = str(tmp_path / "map.tif")
    config = predict_lib.PredictConfig(input=folder, output=output, tile_size=12, overlap=0)
    with pytest.raises(rasters.RasterError, match="--resample"):
        predict_lib.predict_scene(config, predictor)
    config = predict_lib.PredictConfig(
        input=folder, output=output, tile_size=12, overlap=0, resample=True
    )
    summary = predict_lib.predict_scene(config, predictor)
    classes_file, confidence_file = gdal.Open(output), gdal.Open(summary["confidence_output"])
    grid = rasters.grid_of(classes_file)
    assert (grid.width, grid.height, grid.xres) == (144, 108, 10.0)
    assert same_crs(grid.wkt, lcc_wkt()) and summary["crs"].endswith("(no EPSG code)")
    band, confidence_band = classes_file.GetRasterBand(1), confidence_file.GetRasterBand(1)
    classes, confidence = band.ReadAsArray(), confidence_band.ReadAsArray()
    assert band.GetNoDataValue() == 0 and confidence_band.GetNoDataValue() == -1
    no_data = classes == 0
    np.testing.assert_array_equal(confidence == -1, no_data)
    assert no_data[:, :10].all() and not no_data[:, 13:].any()
    assert summary["no_data_pixels"] == int(no_data.sum())
    assert set(np.unique(classes[~no_data])) <= set(predictor.class_table.known_ids)
    assert confidence[~no_data].min() > 0
    # QGIS: a style beside the map, band descriptions, overviews (144 px: one level, 72 px).
    with open(str(tmp_path / "map.qml"), encoding="utf-8") as handle:
        style = handle.read()
    name = predictor.class_table.known_names[0]
    assert 'type="paletted"' in style and f'label="{name}"' in style
    assert band.GetDescription() and confidence_band.GetDescription()
    assert band.GetOverviewCount() == 1 and confidence_band.GetOverviewCount() == 1
    assert band.GetOverview(0).XSize == 72


def test_overview_levels():
    assert map_files.overview_levels(10980, 10980) == [2, 4, 8, 16, 32, 64, 128]
    assert map_files.overview_levels(127, 40) == [2]
    assert map_files.overview_levels(126, 40) == []


def test_prediction_warns_for_a_year_the_model_was_not_trained_on(
    landsat_like, tiny_trained_model, tmp_path, caplog
):
    _, models = tiny_trained_model
    predictor = predict_lib.load_predictor(os.path.join(models, "seed_0"), "last")
    assert predictor.train_years == (2016,)
    folder = str(tmp_path / "scene")
    os.makedirs(folder)
    for name in os.listdir(landsat_like[0]):  # the same scene, a year later
        shutil.copy(os.path.join(landsat_like[0], name), os.path.join(folder, "2017" + name[4:]))
    config = predict_lib.PredictConfig(
        input=folder, output=str(tmp_path / "map.tif"), tile_size=12, overlap=0, resample=True
    )
    predict_lib.predict_scene(config, predictor)
    assert "dates are of 2017, the model was trained on 2016" in caplog.text


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("scene"))
    geotiff.write_scene_folder(folder, CONFIG)
    return folder


def write_text_labels(path: str, polygon: str, value: str) -> None:
    """A GeoPackage with one polygon whose `label` attribute is text."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(writer.SRID)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = source.CreateLayer("parcels", srs, ogr.wkbPolygon, options=["SPATIAL_INDEX=NO"])
    layer.CreateField(ogr.FieldDefn("label", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("label", value)
    feature.SetField("class_id", int(value))
    feature.SetGeometry(ogr.CreateGeometryFromWkt(polygon))
    layer.CreateFeature(feature)
    source = None


def square(x: float, y: float, size: float = 60.0) -> str:
    return f"POLYGON(({x} {y},{x + size} {y},{x + size} {y - size},{x} {y - size},{x} {y}))"


def test_labels_that_would_come_out_empty_are_errors(scene, tmp_path):
    class_id = str(writer.class_table().known_ids[1])
    inside = square(writer.ORIGIN_EASTING, writer.ORIGIN_NORTHING)
    elsewhere = square(writer.ORIGIN_EASTING + 50000, writer.ORIGIN_NORTHING)
    cases = {
        "text": (inside, "label", "is of type String, not an integer class id"),
        "elsewhere": (elsewhere, "class_id", "no labelled pixel"),
    }
    for name, (polygon, attribute, message) in cases.items():
        labels = str(tmp_path / f"{name}.gpkg")
        write_text_labels(labels, polygon, class_id)
        root = str(tmp_path / name / "root")
        config = ingest_lib.IngestConfig(
            input=scene, out_dir=root, pix10=12, labels=labels, label_attribute=attribute
        )
        with pytest.raises(rasters.RasterError, match=message) as error:
            ingest_lib.ingest(config)
        assert str(error.value).startswith(labels)
        assert os.listdir(tmp_path / name) == []  # no root, no staging folder
    labels = str(tmp_path / "inside.gpkg")
    write_text_labels(labels, inside, class_id)
    root = str(tmp_path / "good")
    config = ingest_lib.IngestConfig(input=scene, out_dir=root, pix10=12, labels=labels)
    summary = ingest_lib.ingest(config)
    assert summary["labelled_pixels"] == 36 and summary["tiles_with_labels"] == 1


def test_a_failed_ingest_leaves_the_root_as_it_was(scene, tmp_path):
    folder = str(tmp_path / "scene")
    shutil.copytree(scene, folder)
    root = str(tmp_path / "root")
    config = ingest_lib.IngestConfig(input=folder, out_dir=root, pix10=12, labels=f"{folder}/y.tif")
    ingest_lib.ingest(config)
    before = {name: tile.x10.tobytes() for name, tile in read_tiles(root).items()}
    # An unknown id in the last row of tiles: the first rows are written before it is read.
    labels = rasters.read_bands(f"{folder}/y.tif", 1)[..., 0]
    labels[-1, -1] = 999
    grid = rasters.read_grid(f"{folder}/y.tif")
    rasters.write_geotiff(f"{folder}/y.tif", labels, grid.geotransform, grid.epsg)
    for overwrite in (False, True):
        with pytest.raises((rasters.RasterError, FileExistsError)):
            ingest_lib.ingest(ingest_lib.IngestConfig(
                input=folder, out_dir=root, pix10=12, labels=f"{folder}/y.tif",
                overwrite=overwrite,
            ))  # fmt: skip
    assert {name: tile.x10.tobytes() for name, tile in read_tiles(root).items()} == before
    assert os.path.isfile(os.path.join(root, "dataset.ini"))
    assert sorted(os.listdir(tmp_path)) == ["root", "scene"]  # no staging folder left
    # A fresh root after a failure needs no --overwrite.
    labels[-1, -1] = 0
    rasters.write_geotiff(f"{folder}/y.tif", labels, grid.geotransform, grid.epsg)
    other = str(tmp_path / "other")
    with pytest.raises(rasters.RasterError):
        broken = dict(labels=str(tmp_path / "missing.tif"))
        ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=other, **broken))
    ingest_lib.ingest(ingest_lib.IngestConfig(input=folder, out_dir=other, pix10=12,
                                              labels=f"{folder}/y.tif"))  # fmt: skip
    assert os.path.isfile(os.path.join(other, "dataset.ini"))


def unlabel(root: str, tileids: list[str]) -> None:
    """Rewrites tiles of a root with every label 0 (unknown)."""
    for tileid in tileids:
        path = os.path.join(root, "data16", f"{tileid}.tfrecord.gz")
        tile, schema = records.read_tile(path)
        tile = dataclasses.replace(tile, labels=np.zeros_like(tile.labels))
        records.write_tile(path, tile, schema)


def test_training_skips_unlabelled_tiles_and_inspect_warns(tmp_path, caplog):
    root = str(tmp_path / "root")
    write_random_root(root, num_tiles=10)  # train: the even ids
    unlabel(root, ["0", "2", "4", "6"])
    config = DataConfig(root=root, partition="train", batch_size=1, training=True, augment=False)
    census = input_pipeline.label_census(config)
    assert (census.tiles, census.labelled_tiles) == (5, 1)
    train_steps.check_training_labels(census, root)
    assert "4 of 5 training tiles hold no labelled pixel" in caplog.text
    seen = {
        batch["tileid"].numpy()[0].decode()
        for batch in input_pipeline.build_dataset(config).take(6)
    }
    assert seen == {"8"}
    unlabel(root, ["1", "3"])  # 4 of 10 tiles left with labels
    report = inspection.inspect_root(root)
    assert report["tiles_with_labels"] == 4 and "hold no labelled pixel" in report["warnings"][0]
    assert "warning: " in inspection.format_report(report)
    unlabel(root, ["8"])
    with pytest.raises(ValueError, match="none of the 5 training tiles holds a labelled pixel"):
        train_steps.check_training_labels(input_pipeline.label_census(config), root)


def test_one_resolution_for_all_bands_is_refused_or_resampled(scene, tmp_path):
    """Every band at 10 m (a folder exported at one resolution): the 20 m and 60 m groups are
    named with the pixel size they need; `resample` averages them back onto 20 m and 60 m."""
    folder = str(tmp_path / "scene")
    shutil.copytree(scene, folder)
    original = {}
    for name in sorted(os.listdir(folder)):
        factor = FACTORS.get(name[-7:], 1)
        if factor == 1:
            continue
        path = os.path.join(folder, name)
        grid = rasters.read_grid(path)
        values = rasters.read_bands(path, rasters.open_raster(path).RasterCount)
        original[name] = values
        fine = np.repeat(np.repeat(values, factor, axis=0), factor, axis=1)
        geotransform = rasters.scaled(grid.geotransform, 1 / factor)
        rasters.write_geotiff(path, fine, geotransform, grid.epsg)
    labels = f"{folder}/y.tif"
    config = ingest_lib.IngestConfig(input=folder, out_dir=str(tmp_path / "a"), labels=labels)
    with pytest.raises(rasters.RasterError, match="pixels are 10 x 10 m, expected 20 m") as error:
        ingest_lib.ingest(dataclasses.replace(config, pix10=12))
    assert str(error.value).split(":")[0].endswith("_20m.tif")
    root = str(tmp_path / "b")
    ingest_lib.ingest(dataclasses.replace(config, out_dir=root, pix10=12, resample=True))
    first = sorted(name for name in original if name.endswith("_20m.tif"))[0]
    tile = read_tiles(root)["0"]
    np.testing.assert_array_equal(tile.x20[0], original[first][:6, :6])  # averages of equals


def test_nan_reflectances_predict_as_no_data(scene, tiny_trained_model, tmp_path):
    """A float32 scene with NaN on every date in a corner: NoData in the map, not class 1."""
    folder = str(tmp_path / "scene")
    os.makedirs(folder)
    for name in sorted(os.listdir(scene)):
        source, path = os.path.join(scene, name), os.path.join(folder, name)
        if not name.endswith(("_10m.tif", "_20m.tif", "_60m.tif")):
            shutil.copy(source, path)
            continue
        grid = rasters.read_grid(source)
        values = rasters.read_bands(source, rasters.open_raster(source).RasterCount)
        values = values.astype(np.float32)
        if name.endswith("_10m.tif"):
            values[:6, :6] = np.nan
        rasters.write_geotiff(path, values, grid.geotransform, grid.epsg)
    _, models = tiny_trained_model
    predictor = predict_lib.load_predictor(os.path.join(models, "seed_0"), "last")
    output = str(tmp_path / "map.tif")
    config = predict_lib.PredictConfig(input=folder, output=output, tile_size=12, overlap=0)
    summary = predict_lib.predict_scene(config, predictor)
    classes = rasters.read_bands(output, 1)[..., 0]  # NoData (0) reads as 0
    assert summary["no_data_pixels"] == 36 and not classes[:6, :6].any() and classes[6:].all()
