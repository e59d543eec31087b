"""Record schemas: round trips through real files; the original schema as the original wrote it."""

import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import dataset_root, records
from tests.conftest import CLASSES, random_tile, write_like_the_original

FIELDS = ("x10", "x20", "x60", "doy", "year", "labels")


def assert_same_tile(expected: records.Tile, actual: records.Tile, with_mask: bool):
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(actual, field), getattr(expected, field), field)
    if with_mask:
        np.testing.assert_array_equal(actual.cloud_mask, expected.cloud_mask)
    else:
        assert actual.cloud_mask is None


@pytest.mark.parametrize("schema", [records.COMPACT, records.ORIGINAL])
@pytest.mark.parametrize("compression", ["GZIP", None])
def test_round_trip(tmp_path, schema, compression):
    tile = random_tile("42", np.random.default_rng(1), pix10=12, nobs=7, num_real=5)
    path = str(tmp_path / ("42.tfrecord.gz" if compression else "42.tfrecord"))
    size = records.write_tile(path, tile, schema, compression)
    assert size == os.path.getsize(path) > 0
    back, found_schema = records.read_tile(path)
    assert found_schema == schema
    assert_same_tile(tile, back, with_mask=schema == records.COMPACT)
    assert back.num_observations == 5


def test_compact_schema_is_smaller(tmp_path):
    tile = random_tile("1", np.random.default_rng(2), pix10=24, nobs=10)
    sizes = {
        schema: records.write_tile(str(tmp_path / f"{schema}.tfrecord"), tile, schema, None)
        for schema in (records.COMPACT, records.ORIGINAL)
    }
    # uint16 instead of int64 reflectances and one label map instead of T: well under a third.
    assert sizes[records.COMPACT] < sizes[records.ORIGINAL] / 3


def test_reads_records_written_like_the_original(tmp_path):
    tile = random_tile(
        "3", np.random.default_rng(3), pix10=24, nobs=9, num_real=6, cloud_mask=False
    )
    path = str(tmp_path / "3.tfrecord.gz")
    write_like_the_original(path, tile)
    back, schema = records.read_tile(path)
    assert schema == records.ORIGINAL
    assert back.tileid == "3"  # from the file name: the original has no tile id feature
    assert_same_tile(tile, back, with_mask=False)


def test_decode_inside_tf_data_equals_eager(tmp_path):
    tile = random_tile("5", np.random.default_rng(4))
    path = str(tmp_path / "5.tfrecord.gz")
    records.write_tile(path, tile)
    dataset = tf.data.TFRecordDataset(path, "GZIP").map(lambda r: records.decode(r, path))
    graph = next(iter(dataset))
    eager = records.decode(next(iter(tf.data.TFRecordDataset(path, "GZIP"))), path)
    for key in ("x10", "x20", "x60", "doy", "labels", "cloud_mask"):
        np.testing.assert_array_equal(graph[key].numpy(), eager[key].numpy())
    assert graph["x10"].dtype == tf.float32 and graph["labels"].dtype == tf.int32


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("x10", np.full((4, 12, 12, 4), np.nan), "NaN"),
        ("x20", -np.ones((4, 6, 6, 6)), "outside"),
        ("x60", np.full((4, 2, 2, 3), 70000), "outside"),
        ("doy", np.zeros(3), "shape"),
        ("labels", -np.ones((12, 12), np.int64), "negative label"),
    ],
)
def test_writer_rejects_bad_tiles_and_writes_nothing(tmp_path, field, value, message):
    tile = random_tile("9", np.random.default_rng(5), pix10=12, nobs=4, num_real=3)
    setattr(tile, field, value)
    path = str(tmp_path / "9.tfrecord.gz")
    with pytest.raises(records.RecordError, match=message) as error:
        records.write_tile(path, tile)
    assert "'9'" in str(error.value)
    assert os.listdir(tmp_path) == []


def test_class_table_maps_ids_in_file_order(tmp_path):
    dataset_root.write_classes(str(tmp_path), CLASSES)
    table = dataset_root.read_classes(str(tmp_path))
    assert table == CLASSES
    assert table.num_classes == 4
    assert table.index_of() == {0: -1, 1: 0, 5: 1, 22: 2, 26: 3}
    assert table.known_names == ("sugar beet", "rape", "winter wheat", "maize")


def test_dataset_root_files_round_trip(tmp_path):
    root = str(tmp_path)
    sections = [
        dataset_root.DatasetSection("2016", "data16", 24, 46, tiletable="tiles16"),
        dataset_root.DatasetSection("2017", "data17", 48, 30),
    ]
    dataset_root.write_dataset_ini(root, sections)
    assert list(dataset_root.read_dataset_ini(root).values()) == sections
    geotransforms = {"0": dataset_root.Geotransform(690000.0, 10.0, 5360000.0, 10.0, 32632)}
    dataset_root.write_geotransforms(root, geotransforms)
    assert dataset_root.read_geotransforms(root) == geotransforms
    assert geotransforms["0"].gdal() == (690000.0, 10.0, 0.0, 5360000.0, 0.0, -10.0)
    dataset_root.write_tileids(root, "eval", ["3", "1"])
    assert dataset_root.read_tileids(root, "eval") == ["3", "1"]
