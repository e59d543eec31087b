"""Transforms, each run eagerly and inside tf.data (they must agree)."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import records, transforms
from tests.conftest import CLASSES, random_tile


def decoded(tile: records.Tile, tmp_path) -> dict:
    path = str(tmp_path / f"{tile.tileid}.tfrecord")
    records.write_tile(path, tile, compression=None)
    return records.decode(next(iter(tf.data.TFRecordDataset(path))), path)


def run_both_ways(function, features: dict):
    """(eager result, result of the same function inside tf.data.Dataset.map) as numpy dicts."""
    eager = function(features)
    graph = next(iter(tf.data.Dataset.from_tensors(features).map(function)))
    to_numpy = lambda d: {k: v.numpy() for k, v in d.items()}  # noqa: E731
    return to_numpy(eager), to_numpy(graph)


@pytest.fixture
def tile_features(tmp_path):
    tile = random_tile("1", np.random.default_rng(0), pix10=12, nobs=9, num_real=7)
    return tile, decoded(tile, tmp_path)


def test_map_labels(tile_features):
    tile, features = tile_features
    table = transforms.label_lookup_table(CLASSES.known_ids)
    eager, graph = run_both_ways(lambda f: transforms.map_labels(f, table), features)
    expected = np.vectorize(CLASSES.index_of().get)(tile.labels)
    np.testing.assert_array_equal(eager["labels"], expected)
    np.testing.assert_array_equal(graph["labels"], expected)
    assert expected.min() == -1  # unknown pixels are present and map to -1


def test_map_labels_rejects_ids_missing_from_classes(tile_features):
    _, features = tile_features
    table = transforms.label_lookup_table([1, 5])  # 22 and 26 are now unknown to the table
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"missing from classes.txt[\s\S]*1.tfrecord"
    ):
        transforms.map_labels(features, table)


def test_select_all_observations_keeps_order_and_pads(tile_features):
    tile, features = tile_features
    eager, graph = run_both_ways(lambda f: transforms.select_observations(f, length=11), features)
    for out in (eager, graph):
        assert out["sequence_length"] == 7
        assert out["x10"].shape == (11, 12, 12, 4)
        np.testing.assert_array_equal(out["doy"][:7], tile.doy[:7])
        assert not out["doy"][7:].any() and not out["x10"][7:].any()
        np.testing.assert_array_equal(out["cloud_mask"][:7], tile.cloud_mask[:7])


def test_padding_in_the_middle_is_moved_to_the_end(tile_features):
    tile, features = tile_features
    features = dict(features)
    features["x10"] = tf.tensor_scatter_nd_update(
        features["x10"], [[2]], tf.zeros([1, 12, 12, 4])
    )  # an all-zero observation counts as padding, as in the original
    out = transforms.select_observations(features, length=9)
    assert out["sequence_length"] == 6
    np.testing.assert_array_equal(out["doy"][:6], np.delete(tile.doy[:7], 2))


def test_random_subsample_is_sorted_seeded_and_varies(tile_features):
    tile, features = tile_features
    seed = tf.constant([3, 4])
    eager, graph = run_both_ways(
        lambda f: transforms.select_observations(f, 4, num_samples=4, seed=seed), features
    )
    np.testing.assert_array_equal(eager["doy"], graph["doy"])
    assert eager["sequence_length"] == 4
    assert np.all(np.diff(eager["doy"]) > 0)
    assert set(eager["doy"]) <= set(tile.doy[:7])
    chosen = {
        tuple(transforms.select_observations(features, 4, 4, tf.constant([3, s]))["doy"].numpy())
        for s in range(12)
    }
    assert len(chosen) > 3  # different seeds pick different subsets


def test_deterministic_subsample_is_evenly_spaced(tile_features):
    tile, features = tile_features
    out = transforms.select_observations(features, 3, num_samples=3)
    np.testing.assert_array_equal(out["doy"].numpy(), tile.doy[[0, 2, 4]])


def test_fewer_observations_than_samples_are_padded(tile_features):
    _, features = tile_features
    out = transforms.select_observations(features, 10, num_samples=10, seed=tf.constant([0, 1]))
    assert out["sequence_length"] == 7 and out["doy"].shape == (10,)


def test_model_inputs_normalise_like_the_original(tile_features):
    tile, features = tile_features
    selected = transforms.select_observations(features, 9)
    eager, graph = run_both_ways(transforms.to_model_inputs, selected)
    np.testing.assert_allclose(eager["inputs"], graph["inputs"], rtol=1e-6)
    inputs = eager["inputs"]
    assert inputs.shape == (9, 12, 12, 15)
    np.testing.assert_allclose(inputs[:, :, :, :4], tile.x10 * 1e-4, rtol=1e-6)
    # A 20 m pixel covers 2x2 10 m pixels; bilinear resizing keeps the mean.
    np.testing.assert_allclose(inputs[:7, :, :, 4:10].mean(), tile.x20[:7].mean() * 1e-4, rtol=1e-3)
    np.testing.assert_allclose(inputs[:7, 0, 0, 13], tile.doy[:7] / 365.0, rtol=1e-6)
    np.testing.assert_allclose(inputs[:7, 5, 3, 14], 0.0)  # year 2016 -> 0
    assert not inputs[7:].any()  # padding stays zero


def test_augment_moves_labels_masks_and_inputs_together(tile_features):
    _, features = tile_features
    selected = transforms.to_model_inputs(transforms.select_observations(features, 9))
    # Make every field a copy of one pattern so the spatial transform must match everywhere.
    pattern = tf.reshape(tf.range(144, dtype=tf.int32), [12, 12])
    selected["labels"] = pattern
    selected["cloud_mask"] = tf.cast(tf.broadcast_to(pattern % 3, [9, 12, 12]), tf.uint8)
    selected["inputs"] = tf.broadcast_to(
        tf.cast(pattern, tf.float32)[None, :, :, None], [9, 12, 12, 15]
    )
    outcomes = set()
    for s in range(16):
        seed = tf.constant([1, s])
        eager, graph = run_both_ways(lambda f, seed=seed: transforms.augment(f, seed), selected)
        for out in (eager, graph):
            np.testing.assert_array_equal(out["inputs"][4, :, :, 7], out["labels"])
            np.testing.assert_array_equal(out["cloud_mask"][2], out["labels"] % 3)
        np.testing.assert_array_equal(eager["labels"], graph["labels"])
        assert sorted(eager["labels"].ravel()) == list(range(144))
        outcomes.add(eager["labels"].tobytes())
    assert len(outcomes) >= 6  # flips and rotations give up to 8 distinct orientations


def _numpy_view(value: np.ndarray, index: int, axes: tuple[int, int]) -> np.ndarray:
    """transforms.VIEWS[index] written with numpy: flip along axes[1], then turn (np.rot90)."""
    quarter_turns, flip = transforms.VIEWS[index]
    if flip:
        value = np.flip(value, axes[1])
    return np.rot90(value, quarter_turns, axes)


def test_views_are_the_eight_symmetries_and_unview_inverts_them():
    value = np.arange(2 * 3 * 5 * 5 * 2, dtype=np.float32).reshape(2, 3, 5, 5, 2)
    seen = set()
    for index in range(8):
        viewed = transforms.view(tf.constant(value), index, (2, 3)).numpy()
        np.testing.assert_array_equal(viewed, _numpy_view(value, index, (2, 3)))
        graph = tf.function(lambda v, index=index: transforms.view(v, index, (2, 3)))(value)
        np.testing.assert_array_equal(graph.numpy(), viewed)
        np.testing.assert_array_equal(transforms.unview(viewed, index, (2, 3)).numpy(), value)
        seen.add(viewed.tobytes())
    assert len(seen) == 8
    # The first 4 views never transpose, so they keep a non-square shape.
    wide = tf.zeros([1, 2, 3, 7, 1])
    assert all(transforms.view(wide, i, (2, 3)).shape == wide.shape for i in range(4))
    # rotate takes a tensor too (augment's random turns), with the same result.
    turned = transforms.rotate(tf.constant(value), tf.constant(3), (2, 3)).numpy()
    np.testing.assert_array_equal(turned, np.rot90(value, 3, (2, 3)))
