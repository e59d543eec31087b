"""SavedModel export: fresh-process reload, equality with the Keras model, signatures, errors."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import input_pipeline, records, transforms
from data_pipeline.data_config import DataConfig
from mtlcc_tf import export_lib, model_config, models
from tests.conftest import CLASSES, write_random_root
from tests.test_evaluate import make_model_dir, run_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

# Runs in a fresh interpreter: only TensorFlow and the SavedModel, none of this package's code.
CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    export_dir, inputs_path, outputs_path = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    raw = dict(np.load(inputs_path))
    feed = {key: tf.constant(value) for key, value in raw.items()}
    outputs = {key: value.numpy() for key, value in serve(**feed).items()}
    np.savez(outputs_path, **outputs)
    classes = {key: value.numpy().tolist() for key, value in loaded.signatures["classes"]().items()}
    classes["names"] = [name.decode() for name in classes["names"]]
    errors = {}
    bad_inputs = {
        "height": {**feed, "x10": feed["x10"][:, :, :4, :4], "x20": feed["x20"][:, :, :2, :2],
                   "x60": feed["x60"][:, :, :1, :1]},
        "x20": {**feed, "x20": feed["x20"][:, :, :-1]},
        "doy": {**feed, "doy": feed["doy"][:, :-1]},
        "nan": {**feed, "x20": tf.tensor_scatter_nd_update(
            feed["x20"], [[0, 0, 1, 1, 2]], [float("nan")])},
        "doy_range": {**feed, "doy": tf.where(feed["doy"] > 0, 400, 0)},
        "year_range": {**feed, "year": tf.fill(tf.shape(feed["year"]), 1900)},
        "unsorted": {**feed, "doy": tf.reverse(feed["doy"], [1]),
                     "year": tf.reverse(feed["year"], [1])},
        "no_time": {key: value[:, :0] for key, value in feed.items()},
    }
    for name, bad in bad_inputs.items():
        try:
            serve(**bad)
            errors[name] = None
        except tf.errors.InvalidArgumentError as error:
            errors[name] = error.message
    try:
        serve(**{**feed, "x10": tf.cast(feed["x10"], tf.int32)})
        errors["dtype"] = None
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        errors["dtype"] = str(error)
    empty = serve(**{key: value[:0] for key, value in feed.items()})
    errors["empty_shapes"] = {key: value.shape.as_list() for key, value in empty.items()}
    with open(export_dir + "/assets/classes.txt") as handle:
        asset = handle.read()
    print(json.dumps({"classes": classes, "errors": errors, "asset": asset}))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model exported once, and the pipeline's view of the two eval tiles of its root."""
    base = tmp_path_factory.mktemp("export")
    root = str(base / "root")
    tiles = write_random_root(root, num_tiles=4, pix10=12, nobs=5)
    keras.utils.set_random_seed(0)
    model = models.build_model(
        model_config.ModelConfig(
            num_classes=CLASSES.num_classes, convcell="lstm", convrnn_filters=4
        )
    )
    export_dir = export_lib.export(model, CLASSES, str(base / "export"))
    config = DataConfig(root=root, partition="eval", training=False, augment=False, batch_size=2)
    (batch,) = list(input_pipeline.build_dataset(config))
    logits = model({"inputs": batch["inputs"], "sequence_length": batch["sequence_length"]})
    expected = tf.nn.softmax(logits).numpy()
    sources = [source.decode() for source in batch["source"].numpy()]
    return export_dir, [tiles[source] for source in sources], expected, model


def raw_inputs(tile_list: list[records.Tile], padding_inside: bool = False) -> dict:
    """The record tensors of tiles as a client sends them.

    With `padding_inside`, each tile's padding steps are moved between its first and second real
    observation, leaving the real ones in time order.
    """

    def order(tile):
        real, padding = np.flatnonzero(tile.doy > 0), np.flatnonzero(tile.doy == 0)
        if not padding_inside:
            return np.arange(tile.doy.shape[0])
        return np.concatenate([real[:1], padding, real[1:]])

    return {
        key: np.stack([getattr(t, key)[order(t)] for t in tile_list]).astype(dtype)
        for key, dtype in (("x10", np.float32), ("x20", np.float32), ("x60", np.float32),
                           ("doy", np.int32), ("year", np.int32))
    }  # fmt: skip


def test_reloaded_in_a_fresh_process_matches_keras(exported, tmp_path):
    export_dir, tile_list, expected, _ = exported
    # Padding between real observations: the graph must move it behind them.
    inputs = raw_inputs(tile_list, padding_inside=True)
    assert (inputs["doy"][:, 1] == 0).all() and (inputs["doy"][:, -1] > 0).all()
    inputs_path, outputs_path = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")
    np.savez(inputs_path, **inputs)
    client = subprocess.run(
        [sys.executable, "-c", CLIENT, export_dir, inputs_path, outputs_path],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert client.returncode == 0, client.stderr[-3000:]
    report = json.loads(client.stdout.strip().splitlines()[-1])
    outputs = np.load(outputs_path)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    known_ids = np.asarray(CLASSES.known_ids)
    np.testing.assert_array_equal(outputs["class_ids"], known_ids[expected.argmax(-1)])
    assert outputs["class_ids"].dtype == np.int32
    np.testing.assert_allclose(outputs["confidence"], expected.max(-1), atol=1e-5)
    assert report["classes"] == {"ids": list(CLASSES.known_ids), "names": list(CLASSES.known_names)}
    assert "22|winter wheat" in report["asset"] and "0|unknown" in report["asset"]
    errors = report["errors"]
    assert "multiples of 6" in errors["height"]
    assert "x20 must be [batch, time, H/2, W/2, 6]" in errors["x20"]
    assert "doy must be [batch, time]" in errors["doy"]
    assert "expected to be a float tensor" in errors["dtype"]
    assert "x20 holds NaN or inf values" in errors["nan"]
    assert "doy must be 0 (padding) or a day of year in 1-366" in errors["doy_range"]
    assert "year of a real observation must be in 1970-2100" in errors["year_range"]
    assert "real observations must be in date order" in errors["unsorted"]
    assert "the time axis is empty" in errors["no_time"]
    size = tile_list[0].labels.shape[0]
    assert errors["empty_shapes"] == {
        "class_ids": [0, size, size], "confidence": [0, size, size],
        "probabilities": [0, size, size, CLASSES.num_classes],
    }  # fmt: skip


def test_same_result_as_keras_on_sorted_input_in_process(exported):
    export_dir, tile_list, expected, _ = exported
    features = transforms.batch_model_inputs(
        **{k: tf.constant(v) for k, v in raw_inputs(tile_list).items()}
    )
    assert features["sequence_length"].numpy().tolist() == [t.num_observations for t in tile_list]
    loaded = tf.saved_model.load(export_dir)
    outputs = loaded.signatures["serving_default"](
        **{key: tf.constant(value) for key, value in raw_inputs(tile_list).items()}
    )
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)


def test_saved_model_cli_lists_the_signatures(exported):
    export_dir = exported[0]
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", export_dir, "--all"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    text = shown.stdout
    assert "signature_def['serving_default']" in text and "signature_def['classes']" in text
    for name in ("x10", "x20", "x60", "doy", "year", "class_ids", "probabilities", "confidence"):
        assert f"['{name}']" in text
    assert "shape: (-1, -1, -1, -1, 4)" in text and "DT_INT32" in text


def test_refuses_to_overwrite_unless_asked(exported, tmp_path):
    _, _, _, model = exported
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_lib.export(model, CLASSES, str(target))
    assert (target / "keep.txt").exists()
    export_lib.export(model, CLASSES, str(target), overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "saved_model.pb").exists()
    assert [name for name in os.listdir(tmp_path) if name != "target"] == []  # no temporaries
    with pytest.raises(ValueError, match="outputs 4 classes"):
        export_lib.export(
            model, CLASSES.__class__(ids=(0, 1), names=("u", "a")), str(tmp_path / "e")
        )


def test_entry_point(tmp_path):
    root, directory = str(tmp_path / "root"), str(tmp_path / "model")
    export_dir = str(tmp_path / "export")
    tiles = write_random_root(root, num_tiles=2, pix10=6, nobs=3)
    make_model_dir(directory, root)
    args = (f"--model_dir={directory}", f"--export_dir={export_dir}", "--checkpoint=last")
    done = run_module("mtlcc_tf.export", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = tf.saved_model.load(export_dir)
    assert loaded.signatures["classes"]()["ids"].numpy().tolist() == list(CLASSES.known_ids)
    tile_list = list(tiles.values())
    inputs = {key: tf.constant(value) for key, value in raw_inputs(tile_list).items()}
    outputs = loaded.signatures["serving_default"](**inputs)
    assert outputs["probabilities"].shape == (2, 6, 6, CLASSES.num_classes)
    assert set(np.unique(outputs["class_ids"].numpy())) <= set(CLASSES.known_ids)
    again = run_module("mtlcc_tf.export", *args)
    assert again.returncode == 1 and "not empty" in again.stderr


@pytest.mark.slow
def test_bfloat16_export_serves_in_bfloat16_and_says_so(tiny_trained_model, tmp_path):
    """--precision=mixed_bfloat16: the metadata signature (and saved_model_cli) names the
    precision and the training years; probabilities within bf16's rounding of float32's."""
    root, models_dir = tiny_trained_model
    directory = os.path.join(models_dir, "seed_0")
    outputs = {}
    for precision in ("float32", "mixed_bfloat16"):
        export_dir = str(tmp_path / precision)
        done = run_module(
            "mtlcc_tf.export", f"--model_dir={directory}", f"--export_dir={export_dir}",
            "--checkpoint=last", f"--precision={precision}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        loaded = tf.saved_model.load(export_dir)
        metadata = loaded.signatures["metadata"]()
        assert metadata["precision"].numpy().decode() == precision
        assert metadata["train_years"].numpy().tolist() == [2016]
        tile_list = [records.read_tile(os.path.join(root, "data16", "1.tfrecord.gz"))[0]]
        inputs = {key: tf.constant(value) for key, value in raw_inputs(tile_list).items()}
        outputs[precision] = loaded.signatures["serving_default"](**inputs)["probabilities"]
    difference = np.abs(outputs["float32"].numpy() - outputs["mixed_bfloat16"].numpy())
    assert 0 < difference.max() < 0.05
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", str(tmp_path / "mixed_bfloat16"), "--all"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "signature_def['metadata']" in shown.stdout and "['precision']" in shown.stdout


def test_fused_kernels_export_serves_the_same_and_says_so(exported, tmp_path, monkeypatch):
    """fused_kernels=True keeps mtlcc_tf's ops in the graph (a portable export has none), serves
    the same probabilities through `export_lib.load`, and says so in its metadata; where the
    kernels are missing, export refuses and load names the file and the remedy; where they are
    here but differ from the SavedModel's (an older version), load says that instead."""
    from mtlcc_tf import ops

    if not ops.available():
        pytest.skip("mtlcc_tf's fused kernels cannot be built here")
    portable_dir, tile_list, expected, model = exported
    fused_dir = export_lib.export(model, CLASSES, str(tmp_path / "fused"), fused_kernels=True)
    for directory, kernels in ((portable_dir, "portable"), (fused_dir, "fused")):
        with open(os.path.join(directory, "saved_model.pb"), "rb") as graph:
            assert (b"MtlccLnLstmForward" in graph.read()) == (kernels == "fused")
        loaded = export_lib.load(directory)
        assert loaded.signatures["metadata"]()["kernels"].numpy().decode() == kernels
        outputs = loaded.signatures["serving_default"](
            **{key: tf.constant(value) for key, value in raw_inputs(tile_list).items()}
        )
        np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)

    monkeypatch.setattr(ops, "available", lambda: False)
    with pytest.raises(RuntimeError, match="not available"):
        export_lib.export(model, CLASSES, str(tmp_path / "refused"), fused_kernels=True)
    assert not os.path.exists(tmp_path / "refused")

    def unregistered(path):
        raise tf.errors.NotFoundError(None, None, "Op type not registered 'MtlccLnLstmForward'")

    monkeypatch.setattr(tf.saved_model, "load", unregistered)
    with pytest.raises(ValueError, match=r"fused.*export it again without --fused_kernels"):
        export_lib.load(fused_dir)

    # Kernels here, but the SavedModel holds an older version's ops (other inputs).
    def mismatched(path):
        raise ValueError(
            "NodeDef expected inputs 'float, float' do not match 4 inputs for "
            "{{node MtlccGruGates}}"
        )

    monkeypatch.setattr(ops, "available", lambda: True)
    monkeypatch.setattr(ops, "loaded", lambda: None)
    monkeypatch.setattr(tf.saved_model, "load", mismatched)
    with pytest.raises(ValueError, match=r"another mtlcc_tf version.*export it again") as raised:
        export_lib.load(fused_dir)
    assert fused_dir in str(raised.value) and "not available" not in str(raised.value)
