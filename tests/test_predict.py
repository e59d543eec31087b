"""Whole-scene prediction: georeference, parity with ingested tiles and the SavedModel, errors."""

import json
import os
import shutil

import numpy as np
import pytest
from osgeo import gdal

from data_pipeline import dataset_root, ingest_lib, rasters, scenes
from data_pipeline.data_config import DataConfig
from data_pipeline.simulation import geotiff, simulator
from mtlcc_tf import export_lib, images, model_restore, predict_lib, tile_predictions
from tests.conftest import CLASSES
from tests.test_evaluate import make_model_dir, run_module
from tests.test_ingest import rewrite

# 36 x 24 px of 10 m, 4 dates of 2016: ingest cuts it into 3 x 2 tiles of 12 px.
CONFIG = simulator.SimulationConfig(
    num_tiles_x=3, num_tiles_y=2, pix10=12, years=(2016,), nobs=4, num_observations=4
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A simulated scene, a tiny model directory and the same model exported as a SavedModel."""
    base = tmp_path_factory.mktemp("predict")
    scene, directory = str(base / "scene"), str(base / "model")
    geotiff.write_scene_folder(scene, CONFIG)
    model = make_model_dir(directory, str(base / "unused_root"))
    saved_model = export_lib.export(model, CLASSES, str(base / "saved_model"))
    return scene, directory, saved_model


def predict(model: str, scene: str, output: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    config = predict_lib.PredictConfig(input=scene, output=output, **kwargs)
    predict_lib.predict_scene(config, predict_lib.load_predictor(model, "last"))
    return read(output), read(config.confidence_path)


def read(path: str) -> np.ndarray:
    return rasters.read_bands(path, 1)[..., 0]


def first_10m(scene: str) -> str:
    return os.path.join(scene, f"{sorted(scenes.find_dates(scene))[0]}_10m.tif")


def test_cut_like_ingest_equals_predict_tiles_on_the_ingested_root(setup, tmp_path):
    scene, directory, _ = setup
    output = str(tmp_path / "map.tif")
    classes, confidence = predict(directory, scene, output, tile_size=12, overlap=0)
    # Georeferenced like the input, the dataset's label ids, colour table and names, no temp files.
    reference, written = rasters.read_grid(first_10m(scene)), rasters.read_grid(output)
    assert written.geotransform == reference.geotransform and written.wkt == reference.wkt
    assert (written.width, written.height) == (36, 24) and classes.dtype == np.uint8
    assert set(np.unique(classes)) <= set(CLASSES.known_ids)
    assert images.read_geotiff(output)[3][22] == "winter wheat"
    dataset = gdal.Open(output)  # kept: a band outlived by its dataset crashes GDAL
    assert dataset.GetRasterBand(1).GetColorTable().GetColorEntry(22)[3] == 255
    assert sorted(os.listdir(tmp_path)) == [
        "map.qml",
        "map.tif",
        "map.tif.aux.xml",
        "map_confidence.tif",
    ]
    # The same tiles through ingest and the evaluation pipeline.
    # Labels of one class and the model's class table: the predictions do not depend on them.
    root, labels = str(tmp_path / "root"), str(tmp_path / "labels" / "y.tif")
    one_class = np.full((24, 36), CLASSES.known_ids[0], np.uint16)
    rasters.write_geotiff(labels, one_class, reference.geotransform, 32632)
    dataset_root.write_classes(str(tmp_path / "labels"), CLASSES)
    classes_file = str(tmp_path / "labels" / "classes.txt")
    ingest_lib.ingest(
        ingest_lib.IngestConfig(
            input=scene, out_dir=root, pix10=12, labels=labels, classes=classes_file
        )
    )
    dataset_root.write_tileids(root, "eval", [str(index) for index in range(6)])
    model, _ = model_restore.restore_model(directory, "last")
    data_config = DataConfig(root=root, partition="eval", training=False, augment=False)
    results = list(tile_predictions.predict_tiles(model, data_config, log_every=0))
    assert len(results) == 6
    for result in results:
        row, column = divmod(int(result.tileid), 3)
        window = np.s_[row * 12 : (row + 1) * 12, column * 12 : (column + 1) * 12]
        expected = np.asarray(CLASSES.known_ids)[result.probabilities.argmax(-1)]
        np.testing.assert_array_equal(classes[window], expected, err_msg=result.tileid)
        np.testing.assert_allclose(confidence[window], result.probabilities.max(-1), atol=1e-5)


def test_saved_model_and_model_dir_give_the_same_map(setup, tmp_path):
    scene, directory, saved_model = setup
    # Defaults (48 px windows) on a 36 x 24 px scene: one padded window, cropped.
    from_saved, confidence_saved = predict(saved_model, scene, str(tmp_path / "a.tif"))
    from_dir, confidence_dir = predict(directory, scene, str(tmp_path / "b.tif"))
    assert from_saved.shape == (24, 36)
    np.testing.assert_array_equal(from_saved, from_dir)
    np.testing.assert_allclose(confidence_saved, confidence_dir, atol=1e-5)
    assert ((0 < confidence_dir) & (confidence_dir <= 1)).all()


def crop_scene(source: str, target: str, width: int, height: int) -> None:
    """Copies a scene folder cropped to width x height 10 m pixels (coarser bands: floor)."""
    os.makedirs(target)
    for name in os.listdir(source):
        factor = {"_20m.tif": 2, "_60m.tif": 6}.get(name[-8:], 1)
        if name.endswith(".tif"):
            window = [0, 0, width // factor, height // factor]
            gdal.Translate(os.path.join(target, name), os.path.join(source, name), srcWin=window)


def test_scene_not_a_multiple_of_the_window(setup, tmp_path):
    scene, directory, _ = setup
    ragged = str(tmp_path / "ragged")
    crop_scene(scene, ragged, 34, 23)
    output = str(tmp_path / "map.tif")
    # Windows of 12 px at x 0, 6, ... 24 (the last shifted in, padded by 2 px); overlap 4 -> 6.
    classes, confidence = predict(directory, ragged, output, tile_size=12, overlap=4)
    assert classes.shape == (23, 34) and np.isfinite(confidence).all()
    assert set(np.unique(classes)) <= set(CLASSES.known_ids)
    assert (
        rasters.read_grid(output).geotransform == rasters.read_grid(first_10m(scene)).geotransform
    )


def test_windows_and_weights():
    assert predict_lib.window_offsets(36, 12, 12) == [0, 12, 24]
    assert predict_lib.window_offsets(34, 12, 6) == [0, 6, 12, 18, 24]
    assert predict_lib.window_offsets(10, 48, 30) == [0]
    assert predict_lib.PredictConfig(input="", output="", tile_size=48, overlap=16).stride == 30
    weights = predict_lib.blend_weights(12)
    assert weights.min() == pytest.approx(predict_lib.WEIGHT_FLOOR**2)
    np.testing.assert_allclose(weights, weights.T)
    assert weights[5, 5] == weights.max()
    with pytest.raises(ValueError, match="multiple of 6"):
        predict_lib.PredictConfig(input="", output="", tile_size=40).validate()


def test_bad_input_names_the_file(setup, tmp_path):
    scene, directory, _ = setup
    predictor = predict_lib.load_predictor(directory, "last")
    missing = str(tmp_path / "nothing")
    config = predict_lib.PredictConfig(input=missing, output=str(tmp_path / "map.tif"))
    with pytest.raises(rasters.RasterError, match=f"{missing}: scene folder does not exist"):
        predict_lib.predict_scene(config, predictor)
    shifted = str(tmp_path / "shifted")
    shutil.copytree(scene, shifted)
    bad = os.path.join(shifted, f"{sorted(scenes.find_dates(shifted))[1]}_20m.tif")
    rewrite(bad, shift=10.0)
    config = predict_lib.PredictConfig(input=shifted, output=str(tmp_path / "map.tif"))
    with pytest.raises(rasters.RasterError, match=f"{bad}: geotransform"):
        predict_lib.predict_scene(config, predictor)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("map")]
    with pytest.raises(FileNotFoundError, match="no such SavedModel or model directory"):
        predict_lib.load_predictor(missing)


def test_entry_point(setup, tmp_path):
    scene, _, saved_model = setup
    output, confidence = str(tmp_path / "out" / "map.tif"), str(tmp_path / "conf.tif")
    done = run_module(
        "mtlcc_tf.predict", f"--model={saved_model}", f"--input={scene}", f"--output={output}",
        f"--confidence_output={confidence}", "--tile_size=18", "--overlap=6",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "px/s" in done.stderr and "ETA" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["windows"] == 3 * 2 and os.path.isfile(output) and os.path.isfile(confidence)
    failed = run_module("mtlcc_tf.predict", f"--model={saved_model}", "--input=/no/scene",
                        f"--output={output}")  # fmt: skip
    assert failed.returncode == 1 and "/no/scene: scene folder does not exist" in failed.stderr
    failed = run_module("mtlcc_tf.predict", f"--model={saved_model}", f"--input={scene}",
                        f"--output={output}", "--year=2018")  # fmt: skip
    assert failed.returncode == 1 and "no dates of 2018" in failed.stderr


def test_year_of_a_two_year_scene_equals_a_scene_of_that_year(setup, tmp_path):
    _, directory, _ = setup
    both, only = str(tmp_path / "both"), str(tmp_path / "only2017")
    config = simulator.SimulationConfig(
        num_tiles_x=3, num_tiles_y=2, pix10=12, years=(2016, 2017), nobs=4, num_observations=4
    )
    geotiff.write_scene_folder(both, config)
    os.makedirs(only)
    for name in os.listdir(both):
        if name.startswith("2017"):
            shutil.copy(os.path.join(both, name), only)
    assert len(scenes.find_dates(both)) == 8 and len(scenes.find_dates(only)) == 4
    windows = {"tile_size": 12, "overlap": 6}
    chosen, confidence = predict(directory, both, str(tmp_path / "a.tif"), year=2017, **windows)
    expected, expected_confidence = predict(directory, only, str(tmp_path / "b.tif"), **windows)
    np.testing.assert_array_equal(chosen, expected)
    np.testing.assert_allclose(confidence, expected_confidence, atol=1e-6)
    _, other_confidence = predict(directory, both, str(tmp_path / "c.tif"), year=2016, **windows)
    assert not np.allclose(other_confidence, expected_confidence)  # 2016's dates, not 2017's
    predictor = predict_lib.load_predictor(directory, "last")
    for year, message in ((None, r"years \[2016, 2017\]; pick one"), (2018, "no dates of 2018")):
        config = predict_lib.PredictConfig(input=both, output=str(tmp_path / "d.tif"), year=year)
        with pytest.raises(ValueError, match=message) as error:
            predict_lib.predict_scene(config, predictor)
        assert both in str(error.value)
    assert not os.path.exists(str(tmp_path / "d.tif"))


def test_safe_products_predict_like_geotiffs(setup, tmp_path):
    scene, directory, _ = setup
    products = geotiff.write_safe_products(scene, str(tmp_path / "products"))
    windows = {"tile_size": 12, "overlap": 6}
    expected, expected_confidence = predict(directory, scene, str(tmp_path / "a.tif"), **windows)
    classes, confidence = predict(
        directory, os.path.dirname(products[0]), str(tmp_path / "b.tif"), **windows
    )
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_allclose(confidence, expected_confidence, atol=1e-6)
    written = rasters.read_grid(str(tmp_path / "b.tif"))
    assert written.geotransform == rasters.read_grid(first_10m(scene)).geotransform
