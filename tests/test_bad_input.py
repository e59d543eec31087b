"""Bad input: every case fails with an error that names the file and the problem."""

import configparser
import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import dataset_root, input_pipeline
from data_pipeline.data_config import DataConfig
from tests.conftest import random_tile, write_like_the_original, write_random_root


def eval_config(root, **overrides):
    return DataConfig(root=root, partition="eval", batch_size=1, training=False, **overrides)


def read_all(config):
    return [b["tileid"].numpy()[0] for b in input_pipeline.build_dataset(config)]


def truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def corrupt(path):
    data = bytearray(open(path, "rb").read())
    data[40:80] = bytes(40)
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage", [truncate, corrupt])
def test_damaged_gzip_record_names_the_file(random_root, damage):
    root, _ = random_root
    bad = os.path.join(root, "data16", "3.tfrecord.gz")
    damage(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unreadable record") as error:
        read_all(eval_config(root))
    assert bad in str(error.value)


def test_skip_corrupt_skips_reports_and_keeps_the_rest(random_root, capfd):
    root, _ = random_root
    truncate(os.path.join(root, "data16", "3.tfrecord.gz"))
    write_like_the_original(
        os.path.join(root, "data16", "5.tfrecord.gz"),
        random_tile("5", np.random.default_rng(0), nobs=9),  # nobs disagrees with dataset.ini
    )
    assert read_all(eval_config(root, skip_corrupt=True)) == [b"1"]
    reported = capfd.readouterr().err
    assert "skipping unreadable record" in reported and "3.tfrecord.gz" in reported
    assert "5.tfrecord.gz" in reported  # the shape error, logged by ignore_errors


def test_shape_disagreeing_with_dataset_ini(random_root):
    root, _ = random_root
    bad = os.path.join(root, "data16", "1.tfrecord.gz")
    write_like_the_original(bad, random_tile("1", np.random.default_rng(0), pix10=18, nobs=8))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="x10 shape disagrees with dataset.ini"
    ) as error:
        read_all(eval_config(root))
    assert bad in str(error.value)


def test_negative_reflectances(random_root):
    root, _ = random_root
    tile = random_tile("1", np.random.default_rng(0), pix10=12, nobs=8)
    tile.x20[0, 0, 0, 0] = -5
    bad = os.path.join(root, "data16", "1.tfrecord.gz")
    write_like_the_original(bad, tile)  # the original writer did not check
    with pytest.raises(tf.errors.InvalidArgumentError, match="x20: negative reflectances") as error:
        read_all(eval_config(root))
    assert bad in str(error.value)


def test_label_id_missing_from_classes(random_root):
    root, _ = random_root
    tile = random_tile("3", np.random.default_rng(0), pix10=12, nobs=8)
    tile.labels[2, 2] = 99
    bad = os.path.join(root, "data16", "3.tfrecord.gz")
    write_like_the_original(bad, tile)
    with pytest.raises(tf.errors.InvalidArgumentError, match="missing from classes.txt") as error:
        read_all(eval_config(root))
    assert bad in str(error.value) and "99" in str(error.value)


def test_missing_root_ini_key_folder_and_classes(tmp_path):
    root = str(tmp_path / "root")
    with pytest.raises(dataset_root.DatasetError, match="does not exist"):
        read_all(eval_config(root))
    write_random_root(root, num_tiles=2)
    ini = os.path.join(root, "dataset.ini")
    parser = configparser.ConfigParser()
    parser.read(ini)
    del parser["2016"]["nobs"]
    with open(ini, "w") as handle:
        parser.write(handle)
    with pytest.raises(
        dataset_root.DatasetError, match=r"dataset.ini: section \[2016\] lacks the key 'nobs'"
    ):
        read_all(eval_config(root))
    parser["2016"]["nobs"] = "8"
    parser["2016"]["datadir"] = "nowhere"
    with open(ini, "w") as handle:
        parser.write(handle)
    with pytest.raises(dataset_root.DatasetError, match="nowhere: datadir of section"):
        read_all(eval_config(root))
    os.remove(os.path.join(root, "classes.txt"))
    with pytest.raises(dataset_root.DatasetError, match="classes.txt"):
        read_all(eval_config(root))


def test_unknown_year(random_root):
    root, _ = random_root
    with pytest.raises(dataset_root.DatasetError, match=r"no section for \['2018'\]"):
        read_all(eval_config(root, years=("2018",)))


def test_empty_split(random_root):
    root, _ = random_root
    dataset_root.write_tileids(root, "eval", [])
    with pytest.raises(dataset_root.DatasetError, match="eval.tileids: empty split"):
        read_all(eval_config(root))
    dataset_root.write_tileids(root, "eval", ["100", "101"])
    with pytest.raises(dataset_root.DatasetError, match="eval.tileids: empty split: none of its 2"):
        read_all(eval_config(root))


def test_bad_config_values():
    with pytest.raises(ValueError, match="partition"):
        DataConfig(root="x", partition="validation").validate()
    with pytest.raises(ValueError, match="temporal_samples"):
        DataConfig(root="x", temporal_samples=0).validate()
