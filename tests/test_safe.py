"""Level-1C .SAFE products: found, read through JPEG2000, offsets removed, bad ones named."""

from __future__ import annotations

import os
import shutil

import pytest
from osgeo import gdal

from data_pipeline import ingest_lib, rasters, records, scenes
from data_pipeline.simulation import geotiff, simulator
from tests.test_ingest import assert_same_tile, split_into_band_files


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """48 x 48 px, 3 dates: the same scene as per-band GeoTIFFs and as Level-1C .SAFE products."""
    base = tmp_path_factory.mktemp("small")
    folder, products = str(base / "scene"), str(base / "products")
    config = simulator.SimulationConfig(
        num_tiles_x=2, num_tiles_y=2, pix10=24, years=(2017,), nobs=3, num_observations=3
    )
    geotiff.write_scene_folder(folder, config)
    safes = geotiff.write_safe_products(folder, products)
    split_into_band_files(folder)
    return folder, products, safes


def ingest_records(folder: str, root: str, scene_folder: str) -> dict[str, records.Tile]:
    labels = os.path.join(scene_folder, rasters.LABELS_FILE)
    classes = os.path.join(scene_folder, "classes.txt")
    config = ingest_lib.IngestConfig(
        input=folder, out_dir=root, pix10=24, labels=labels, classes=classes
    )
    ingest_lib.ingest(config)
    data = os.path.join(root, "data17")
    return {name: records.read_tile(os.path.join(data, name))[0] for name in os.listdir(data)}


def test_safe_products_ingest_like_band_geotiffs(small_scene, tmp_path):
    folder, products, safes = small_scene
    assert len(safes) == 3 and os.path.basename(safes[0]).startswith("S2A_MSIL1C_2017")
    dates = scenes.find_dates(products)
    assert list(dates) == sorted(scenes.find_dates(folder))
    first = dates[next(iter(dates))]
    assert [os.path.basename(path)[-7:] for path in first["60m"]] == [
        "B01.jp2",
        "B09.jp2",
        "B10.jp2",
    ]
    assert gdal.Open(first["10m"][0]).GetDriver().ShortName == "JP2OpenJPEG"
    expected = ingest_records(folder, str(tmp_path / "tifs"), folder)
    actual = ingest_records(products, str(tmp_path / "safe"), folder)
    assert sorted(actual) == sorted(expected) == [f"{index}.tfrecord.gz" for index in range(4)]
    for name, tile in actual.items():
        assert_same_tile(tile, expected[name])
    # One .SAFE folder is a scene of one date.
    one = ingest_records(safes[1], str(tmp_path / "one"), folder)
    for name, tile in one.items():
        assert_same_tile(tile, expected[name], time=slice(1, 2))


def test_radiometric_offset_of_baseline_04_products_is_removed(small_scene, tmp_path):
    folder, _, _ = small_scene
    expected = ingest_records(folder, str(tmp_path / "tifs"), folder)
    # Baseline 05.09 with MTD_MSIL1C.xml; baseline 04.00 with none (the offset from the name).
    for baseline, metadata in (("0509", True), ("0400", False)):
        products = str(tmp_path / f"products{baseline}")
        safes = geotiff.write_safe_products(folder, products, baseline=baseline, metadata=metadata)
        band = scenes.find_dates(products)[sorted(scenes.find_dates(products))[0]]["10m"][0]
        assert scenes.radiometric_offset(band) == -1000
        raw = gdal.Open(band).ReadAsArray()
        assert raw[raw > 0].min() > 1000  # the files do carry the offset
        actual = ingest_records(products, str(tmp_path / f"safe{baseline}"), folder)
        for name, tile in actual.items():
            assert_same_tile(tile, expected[name])
        assert os.path.isfile(os.path.join(safes[0], "MTD_MSIL1C.xml")) == metadata
    old = geotiff.write_safe_products(folder, str(tmp_path / "old"), baseline="0208")
    assert scenes.radiometric_offset(scenes.find_dates(old[0]).popitem()[1]["10m"][0]) == 0
    assert scenes.radiometric_offset(os.path.join(folder, "x.tif")) == 0


def test_bad_safe_products_fail_naming_the_file(small_scene, tmp_path):
    _, products, _ = small_scene
    copy = str(tmp_path / "products")
    shutil.copytree(products, copy)
    missing = sorted(path for files in scenes.find_dates(copy).values() for path in files["20m"])[
        -1
    ]
    os.remove(missing)
    with pytest.raises(rasters.RasterError, match="missing") as error:
        scenes.find_dates(copy)
    assert str(error.value).startswith(f"{missing}: ")
    driver = gdal.GetDriverByName("JP2OpenJPEG")
    band = scenes.find_dates(products)[sorted(scenes.find_dates(products))[0]]["10m"][0]
    driver.Deregister()
    try:
        with pytest.raises(rasters.RasterError, match="no JPEG2000 driver.*JP2OpenJPEG") as error:
            rasters.open_raster(band)
    finally:
        driver.Register()
    assert str(error.value).startswith(f"{band}: ")
    assert rasters.open_raster(band).RasterCount == 1
