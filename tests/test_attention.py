"""The temporal-attention encoder (convcell='utae'): shapes, masking, learning, export."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcc_tf import model_config, model_restore, models
from tests.conftest import CLASSES
from tests.encoder_checks import assert_export_serves_the_same, assert_overfits, batch

CONFIG = model_config.ModelConfig(
    num_classes=CLASSES.num_classes, convcell="utae", convrnn_filters=8
)


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.build_model(CONFIG)


def test_shapes_and_attention_over_real_dates_only():
    model = build()
    logits = model(batch())
    assert logits.shape == (2, 12, 12, CLASSES.num_classes) and logits.dtype == tf.float32
    attention = models.build_attention_model(model)(batch()).numpy()
    assert attention.shape == (2, 4, 5, 6, 6)
    np.testing.assert_allclose(attention.sum(axis=2), 1.0, atol=1e-5)
    assert not attention[1, :, 3:].any()  # the second tile's last two dates are padding
    assert model(batch(size=18)).shape == (2, 18, 18, CLASSES.num_classes)  # any size


def test_padding_dates_change_nothing():
    model = build()
    np.testing.assert_allclose(model(batch()), model(batch(padding=3)), atol=1e-5)
    # A padding slot filled with garbage: masked all the same.
    noisy = batch()
    noisy["inputs"][1, 3:] = 7.0
    np.testing.assert_allclose(model(batch())[1], model(noisy)[1], atol=1e-5)


def test_overfits_a_tiny_batch():
    assert_overfits(build(), batch(), learning_rate=0.01, steps=60)


def test_saved_model_predicts_the_same(tmp_path):
    assert_export_serves_the_same(build(), str(tmp_path / "export"))


def test_config_checks():
    with pytest.raises(ValueError, match="multiple of 4"):
        model_config.ModelConfig(num_classes=3, convcell="utae", convrnn_filters=6).validate()
    with pytest.raises(ValueError, match="pools the dates itself"):
        model_config.ModelConfig(num_classes=3, convcell="utae", aggr_strat="avg_output").validate()
    with pytest.raises(ValueError, match="needs convcell 'utae'"):
        models.build_attention_model(models.build_model(model_config.ModelConfig(num_classes=3)))


DEEP = model_config.ModelConfig(
    num_classes=CLASSES.num_classes, convcell="utae", attention_widths=(8, 8, 8, 16),
    attention_decoder_widths=(4, 4, 8, 16), attention_heads=4, attention_key_dim=4,
    attention_d_model=32,
)  # fmt: skip  # U-TAE's published layout (64,64,64,128 / 32,32,64,128, d_model 256), shrunk


def test_four_levels_as_published():
    keras.utils.set_random_seed(0)
    model = models.build_model(DEEP.validate())
    data = batch(size=24)
    assert model(data).shape == (2, 24, 24, CLASSES.num_classes)
    encoder = model.get_layer(models.ENCODER_NAME)
    assert encoder.output_channels == 4 and encoder.get_config()["d_model"] == 32
    attention = models.build_attention_model(model)(data).numpy()
    assert attention.shape == (2, 4, 5, 3, 3)  # 24 px at an eighth of the resolution
    np.testing.assert_allclose(attention.sum(axis=2), 1.0, atol=1e-5)
    assert not attention[1, :, 3:].any()
    np.testing.assert_allclose(model(data), model(batch(size=24, padding=2)), atol=1e-5)
    assert model(batch(size=20)).shape == (2, 20, 20, CLASSES.num_classes)  # 20 -> 10 -> 5 -> 3
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(data), model(data), atol=1e-5)


def test_attention_settings_are_checked():
    def config(**fields):
        return model_config.ModelConfig(num_classes=3, convcell="utae", **fields).validate()

    with pytest.raises(ValueError, match="in length and last"):
        config(attention_widths=(8, 16), attention_decoder_widths=(8, 8))
    with pytest.raises(ValueError, match="at least two levels"):
        config(attention_widths=(8,))
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        config(attention_heads=3)
    with pytest.raises(ValueError, match="attention_heads=16.*only for convcell 'utae' or 'tsvit'"):
        model_config.ModelConfig(num_classes=3, attention_heads=16).validate()


@pytest.mark.slow
def test_the_published_settings_flagfile_trains_restores_and_scores(tiny_trained_model, tmp_path):
    """experiments/mtlcc_utae.flags stays valid: one step through the entry point on the tiny
    dataset; the model restores from its run folder, and attention_clouds scores it."""
    from mtlcc_tf import model_dir
    from tests.conftest import run_entry_point

    root, _ = tiny_trained_model
    directory = str(tmp_path / "utae_mtlcc")
    done = run_entry_point(
        "mtlcc_tf.train", "--flagfile=experiments/mtlcc_utae.flags", f"--datadir={root}",
        f"--model_dir={directory}", "--train_steps=1", "--num_image_tiles=0",
        "--max_eval_batches=1", "--temporal_samples=0", "--train_on=2016",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    config = model_dir.read_run_config(directory).model
    assert config.attention_widths == (64, 64, 64, 128) and config.attention_d_model == 256
    model, run_config = model_restore.restore_model(directory, "last")
    assert run_config.model.convcell == "utae"
    assert run_config.model.attention_widths == (64, 64, 64, 128)  # four levels, from config.json
    assert model(batch()).shape == (2, 12, 12, CLASSES.num_classes)
    # Its attention against the records' cloud masks, trained and untrained.
    results = str(tmp_path / "results")
    done = run_entry_point(
        "mtlcc_tf.attention_clouds", f"--datadir={root}", f"--runs={directory}",
        f"--results_dir={results}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(0.0 <= summary[name]["mean"] <= 1.0 for name in ("trained", "untrained"))
    assert os.path.isfile(os.path.join(results, "results.md"))
