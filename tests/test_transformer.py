"""The temporo-spatial transformer (convcell='tsvit'): shapes, masking, learning, export."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcc_tf import model_config, model_restore, models
from mtlcc_tf.layers.dates import DOY_CHANNEL
from mtlcc_tf.layers.transformer import TemporoSpatialTransformer
from tests.conftest import CLASSES
from tests.encoder_checks import assert_export_serves_the_same, assert_overfits, batch

CONFIG = model_config.ModelConfig(
    num_classes=CLASSES.num_classes, convcell="tsvit", convrnn_filters=16, convrnn_layers=1,
    attention_heads=2, attention_key_dim=8, head="logits",
)  # fmt: skip


def build(config: model_config.ModelConfig = CONFIG) -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.build_model(config)


def test_shapes_any_tile_size_and_class_tokens():
    model = build()
    logits = model(batch())
    assert logits.shape == (2, 12, 12, CLASSES.num_classes) and logits.dtype == tf.float32
    # Not a multiple of the patch size: padded inside, cropped back.
    assert model(batch(size=13)).shape == (2, 13, 13, CLASSES.num_classes)
    encoder = model.get_layer(models.ENCODER_NAME)
    assert isinstance(encoder, TemporoSpatialTransformer)
    assert tuple(encoder.class_tokens.shape) == (CLASSES.num_classes, 16)


def test_padding_dates_change_nothing():
    model = build()
    np.testing.assert_allclose(model(batch()), model(batch(padding=3)), atol=1e-5)
    noisy = batch()
    noisy["inputs"][1, 3:] = 7.0  # the second tile's last two dates are padding
    np.testing.assert_allclose(model(batch())[1], model(noisy)[1], atol=1e-5)
    # A real date does matter.
    changed = batch()
    changed["inputs"][0, 1, ..., :4] += 1.0
    assert np.abs(model(changed)[0] - model(batch())[0]).max() > 1e-4


def test_mixed_bfloat16_reads_the_same_days_as_float32():
    """The day table is read from the exact doy channel under every precision: a bf16 doy
    (off by up to a day or two) would read other rows, trained in bf16, untrained in float32."""
    config = dataclasses.replace(CONFIG, date_harmonics=2)
    # Days that a bf16 doy / 365 channel rounds to another day.
    days = np.arange(1, 366)
    rounded = tf.cast(tf.constant(days / 365.0, tf.float32), tf.bfloat16)
    misread = days[np.round(tf.cast(rounded, tf.float32).numpy() * 365.0) != days]
    assert len(misread) > 20
    data = batch()
    data["inputs"][..., DOY_CHANNEL] = (misread[:5] / 365.0)[None, :, None, None]
    outputs = {}
    for policy in ("mixed_bfloat16", "float32"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = build(config)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        encoder = model.get_layer(models.ENCODER_NAME)
        table = np.random.default_rng(3).normal(0, 1, encoder.day_embedding.embeddings.shape)
        encoder.day_embedding.embeddings.assign(table)  # days far apart in token space
        outputs[policy] = tf.nn.softmax(model(data)).numpy()
    assert np.abs(outputs["mixed_bfloat16"] - outputs["float32"]).max() < 0.1


def test_patches_see_each_other_through_the_spatial_transformer():
    model = build()
    changed = batch()
    changed["inputs"][:, :, :2, :2, :4] += 1.0  # only the top-left patch
    difference = np.abs(model(changed) - model(batch())).max(axis=(0, 3))
    assert difference[8:, 8:].max() > 1e-5  # a far corner changes too


def test_overfits_a_tiny_batch():
    assert_overfits(
        build(), batch(), learning_rate=3e-3, steps=80
    )  # 1e-2 does not converge: too high for attention


def test_saved_model_predicts_the_same(tmp_path):
    assert_export_serves_the_same(build(), str(tmp_path / "export"))


def test_config_round_trip_and_checks():
    model = build()
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch()), model(batch()), atol=1e-6)
    with pytest.raises(ValueError, match="tsvit pools the dates itself"):
        model_config.ModelConfig(
            num_classes=3, convcell="tsvit", aggr_strat="avg_output"
        ).validate()
    with pytest.raises(ValueError, match="patch_size=4.*only for convcell 'tsvit'"):
        model_config.ModelConfig(num_classes=3, patch_size=4).validate()
    with pytest.raises(ValueError, match="attention_d_model=8.*only for convcell 'utae'"):
        model_config.ModelConfig(num_classes=3, convcell="tsvit", attention_d_model=8).validate()


@pytest.mark.slow
def test_the_published_settings_flagfile_trains(tiny_trained_model, tmp_path):
    """experiments/mtlcc_tsvit.flags stays valid: one step through the entry point on the tiny
    dataset, and the model restores from its run folder."""
    from mtlcc_tf import model_dir
    from tests.conftest import run_entry_point

    root, _ = tiny_trained_model
    directory = str(tmp_path / "tsvit_mtlcc")
    done = run_entry_point(
        "mtlcc_tf.train", "--flagfile=experiments/mtlcc_tsvit.flags", f"--datadir={root}",
        f"--model_dir={directory}", "--train_steps=1", "--num_image_tiles=0", "--batchsize=2",
        "--max_eval_batches=1", "--temporal_samples=0", "--train_on=2016",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    config = model_dir.read_run_config(directory).model
    assert (config.convrnn_filters, config.convrnn_layers, config.attention_key_dim) == (128, 4, 64)
    model, run_config = model_restore.restore_model(directory, "last")
    assert run_config.model.convcell == "tsvit" and run_config.model.patch_size == 2
    assert model(batch()).shape == (2, 12, 12, CLASSES.num_classes)
    assert model_config.ModelConfig(num_classes=3, convcell="tsvit").validate().patch_size == 2
