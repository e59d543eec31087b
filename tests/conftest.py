"""Shared test fixtures: tiny dataset roots written with the package's own writers."""

from __future__ import annotations

import os
import subprocess
import sys

# 1 keeps TensorFlow warnings (tf.data logs skipped corrupt records as warnings).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from data_pipeline import dataset_root, records  # noqa: E402

CLASSES = dataset_root.ClassTable(
    ids=(0, 1, 5, 22, 26), names=("unknown", "sugar beet", "rape", "winter wheat", "maize")
)


def random_tile(
    tileid: str,
    rng: np.random.Generator,
    pix10: int = 12,
    nobs: int = 8,
    num_real: int = 6,
    year: int = 2016,
    cloud_mask: bool = True,
    max_reflectance: int = 10000,
) -> records.Tile:
    """A tile of random reflectances with `num_real` observations and zero padding after them."""

    def raster(size, bands):
        values = rng.integers(1, max_reflectance, (nobs, size, size, bands))
        values[num_real:] = 0
        return values

    doy = np.zeros(nobs, np.int64)
    doy[:num_real] = np.sort(rng.choice(np.arange(1, 366), num_real, replace=False))
    mask = None
    if cloud_mask:
        mask = rng.integers(0, 3, (nobs, pix10, pix10)).astype(np.uint8)
        mask[num_real:] = 0
    return records.Tile(
        tileid=tileid,
        x10=raster(pix10, 4),
        x20=raster(pix10 // 2, 6),
        x60=raster(pix10 // 6, 3),
        doy=doy,
        year=np.where(doy > 0, year, 0),
        labels=rng.choice(np.array(CLASSES.ids), (pix10, pix10)),
        cloud_mask=mask,
    )


def write_like_the_original(path: str, tile: records.Tile) -> None:
    """Writes a record field by field as the original TF 1 code did (independent of encode())."""

    def raw(array):
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[array.astype(np.int64).tobytes()])
        )

    def shape(array):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(array.shape)))

    labels = np.stack([tile.labels] * tile.x10.shape[0])
    feature = {
        "x10/data": raw(tile.x10), "x10/shape": shape(tile.x10),
        "x20/data": raw(tile.x20), "x20/shape": shape(tile.x20),
        "x60/data": raw(tile.x60), "x60/shape": shape(tile.x60),
        "dates/doy": raw(tile.doy), "dates/year": raw(tile.year), "dates/shape": shape(tile.doy),
        "labels/data": raw(labels), "labels/shape": shape(labels),
    }  # fmt: skip
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        writer.write(example.SerializeToString())


def write_random_root(
    root: str,
    num_tiles: int = 6,
    pix10: int = 12,
    nobs: int = 8,
    years: tuple[int, ...] = (2016,),
    schema: str = records.COMPACT,
    compression: str | None = "GZIP",
    seed: int = 0,
    max_reflectance: int = 10000,
) -> dict[str, records.Tile]:
    """Writes a dataset root: tiles 0..n-1 in every year, train = even ids, eval = odd ids."""
    rng = np.random.default_rng(seed)
    sections = []
    tiles = {}
    suffix = ".tfrecord.gz" if compression else ".tfrecord"
    for year in years:
        section = dataset_root.DatasetSection(str(year), f"data{year % 100}", pix10, nobs)
        sections.append(section)
        for index in range(num_tiles):
            tile = random_tile(
                str(index),
                rng,
                pix10,
                nobs,
                num_real=nobs - 1 - index % 3,
                year=year,
                max_reflectance=max_reflectance,
            )
            path = os.path.join(root, section.datadir, f"{index}{suffix}")
            records.write_tile(path, tile, schema, compression)
            tiles[path] = tile
    dataset_root.write_dataset_ini(root, sections)
    dataset_root.write_classes(root, CLASSES)
    ids = [str(i) for i in range(num_tiles)]
    dataset_root.write_tileids(root, "train_fold0", ids[0::2])
    dataset_root.write_tileids(root, "test_fold0", ids[1::2])
    dataset_root.write_tileids(root, "eval", ids[1::2])
    return tiles


def pytest_collection_modifyitems(config, items):
    """Tests marked slow first (stable otherwise): pytest-xdist's workers then share out the
    short tests at the end instead of one worker finishing a long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def random_root(tmp_path):
    root = str(tmp_path / "root")
    tiles = write_random_root(root)
    return root, tiles


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory) -> tuple[str, str]:
    """(dataset root, models folder): 4 tiles of 12 px and 5 steps, and `<models>/seed_0`, a
    2-filter model trained on them for 2 steps by `mtlcc_tf.train`. Tests that change the model
    folder must put it back."""
    base = tmp_path_factory.mktemp("trained")
    root = str(base / "root")
    write_random_root(root, num_tiles=4, pix10=12, nobs=5)
    model_dir = str(base / "models" / "seed_0")
    done = subprocess.run(
        [
            sys.executable, "-m", "mtlcc_tf.train", f"--datadir={root}", f"--model_dir={model_dir}",
            "--convrnn_filters=2", "--train_steps=2", "--batchsize=2", "--num_image_tiles=0",
        ],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return root, str(base / "models")


def run_entry_point(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `python -m module args...` from the repository root; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
