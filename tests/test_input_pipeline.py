"""The tf.data input pipeline on tiny dataset roots: shapes, padding, order, seeds, sharding."""

import os

import numpy as np
import tensorflow as tf

from data_pipeline import input_pipeline
from data_pipeline.data_config import DataConfig
from tests.conftest import CLASSES, write_random_root


def collect(dataset, num_batches=None):
    batches = list(dataset if num_batches is None else dataset.take(num_batches))
    return {key: np.concatenate([b[key].numpy() for b in batches]) for key in batches[0]}


def test_eval_reads_every_tile_once_in_order_with_all_observations(random_root):
    root, tiles = random_root
    config = DataConfig(root=root, partition="eval", batch_size=2, training=False)
    out = collect(input_pipeline.build_dataset(config))
    assert list(out["tileid"]) == [b"1", b"3", b"5"]
    assert out["inputs"].shape == (3, 8, 12, 12, 15)
    index_of = np.vectorize(CLASSES.index_of().get)
    for i, source in enumerate(out["source"]):
        tile = tiles[source.decode()]
        assert out["sequence_length"][i] == tile.num_observations
        np.testing.assert_array_equal(out["labels"][i], index_of(tile.labels))
        np.testing.assert_allclose(out["inputs"][i, ..., :4], tile.x10 * 1e-4, rtol=1e-6)
        np.testing.assert_array_equal(out["cloud_mask"][i], tile.cloud_mask)
    assert out["has_cloud_mask"].all()


def test_count_labels_counts_every_known_pixel_of_the_split_once(random_root):
    root, tiles = random_root
    config = DataConfig(root=root, partition="train", batch_size=2, training=True)
    index_of = CLASSES.index_of()
    expected = np.zeros(CLASSES.num_classes, np.int64)
    for path, tile in tiles.items():
        if os.path.basename(path).split(".")[0] in {"0", "2", "4"}:  # train_fold0: even ids
            indices = np.array([index_of.get(int(label), -1) for label in tile.labels.ravel()])
            expected += np.bincount(indices[indices >= 0], minlength=CLASSES.num_classes)
    counts = input_pipeline.count_labels(config)
    assert counts == tuple(expected.tolist())
    assert sum(counts) > 0


def test_training_batches_subsample_and_are_reproducible(tmp_path):
    root = str(tmp_path)
    write_random_root(root, num_tiles=8, years=(2016, 2017))
    config = DataConfig(root=root, temporal_samples=4, batch_size=3, seed=5)
    first = collect(input_pipeline.build_dataset(config), 4)
    again = collect(input_pipeline.build_dataset(config), 4)
    assert first["inputs"].shape == (12, 4, 12, 12, 15)  # repeats past the 8 training tiles
    assert (first["sequence_length"] == 4).all()
    assert np.all(np.diff(first["doy"], axis=1) > 0)  # subsets keep time order
    assert set(first["year"].ravel()) == {2016, 2017}
    # Reads run in parallel and out of order here (deterministic=False), so 12 samples of 3
    # epochs need not hold the same multiset of tiles in two runs; every training tile is in both.
    assert set(first["tileid"]) == set(again["tileid"]) and len(set(first["tileid"])) == 4
    other = collect(input_pipeline.build_dataset(DataConfig(**{**config.__dict__, "seed": 6})), 4)
    assert not np.array_equal(first["doy"], other["doy"])


def test_deterministic_training_order_is_fixed_by_the_seed(tmp_path):
    root = str(tmp_path)
    write_random_root(root, num_tiles=8)
    config = DataConfig(root=root, temporal_samples=4, batch_size=2, seed=5, deterministic=True)
    first = collect(input_pipeline.build_dataset(config), 6)
    again = collect(input_pipeline.build_dataset(config), 6)
    for key in ("tileid", "inputs", "doy"):
        np.testing.assert_array_equal(first[key], again[key])


def test_years_and_missing_tiles(tmp_path, caplog):
    root = str(tmp_path)
    write_random_root(root, num_tiles=4, years=(2016, 2017))
    (tmp_path / "data17" / "2.tfrecord.gz").unlink()
    split = input_pipeline.list_split_files(DataConfig(root=root, partition="train"))
    assert len(split.files) == 3 and split.missing == ("2017/2",)
    only_2016 = input_pipeline.list_split_files(DataConfig(root=root, years=("2016",)))
    assert len(only_2016.files) == 2


def test_input_context_shards_files_and_splits_the_batch(tmp_path):
    root = str(tmp_path)
    write_random_root(root, num_tiles=8)
    config = DataConfig(root=root, partition="eval", batch_size=4, training=False)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, num_replicas_in_sync=2)
        batches = list(input_pipeline.build_dataset(config, context))
        assert all(b["inputs"].shape[0] == 2 for b in batches)
        seen += [t for b in batches for t in b["tileid"].numpy()]
    assert sorted(seen) == [b"1", b"3", b"5", b"7"]


def test_cloud_injection_is_deterministic_and_adds_bright_clouds(tmp_path):
    root = str(tmp_path)
    # A dark surface (reflectance < 0.15, like vegetation in blue) that clouds must brighten.
    write_random_root(root, num_tiles=4, pix10=24, nobs=8, max_reflectance=1500)
    clear = dict(root=root, partition="eval", batch_size=2, training=False)
    base = collect(input_pipeline.build_dataset(DataConfig(**clear)))
    cloudy = collect(input_pipeline.build_dataset(DataConfig(**clear, cloud_injection=1.0, seed=3)))
    again = collect(input_pipeline.build_dataset(DataConfig(**clear, cloud_injection=1.0, seed=3)))
    other = collect(input_pipeline.build_dataset(DataConfig(**clear, cloud_injection=1.0, seed=4)))
    np.testing.assert_array_equal(cloudy["inputs"], again["inputs"])
    assert not np.array_equal(cloudy["inputs"], other["inputs"])
    real = np.arange(8)[None, :] < base["sequence_length"][:, None]  # [tiles, T]
    changed = np.any(cloudy["inputs"] != base["inputs"], axis=(2, 3, 4))
    assert changed[real].mean() > 0.5 and not changed[~real].any()  # padding stays padding
    added = (cloudy["cloud_mask"] == 1) & (base["cloud_mask"] != 1)
    assert added.any()
    blue = 2  # B2 is the third 10 m band
    assert cloudy["inputs"][..., blue][added].mean() > base["inputs"][..., blue][added].mean()
