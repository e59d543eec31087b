"""Evaluates a trained model on a partition: metrics.json, report.md, figures, tiles.csv, images.

python -m mtlcc_tf.evaluate --model_dir=runs/convgru --datadir=/data/mtlcc --out_dir=eval
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from data_pipeline import dataset_root
from data_pipeline.data_config import DataConfig
from mtlcc_tf import model_dir

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Model directory written by mtlcc_tf.train.")
_DATADIR = flags.DEFINE_string(
    "datadir", None, "Dataset root to evaluate on; default: the one the model was trained on."
)
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Where to write the results; default: <model_dir>/evaluation/<partition>."
)
_PARTITION = flags.DEFINE_enum(
    "partition", "eval", dataset_root.PARTITIONS, "Tile id list under <datadir>/tileids/."
)
_FOLD = flags.DEFINE_integer("fold", 0, "Fold of the train/test partitions.")
_YEARS = flags.DEFINE_list("years", [], "dataset.ini sections to evaluate; default: all.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "'best', 'last', or the path of a checkpoint (prefix of its .index)."
)
_BATCHSIZE = flags.DEFINE_integer("batchsize", 1, "Tiles per batch (the original: 1).")
_TEMPORAL_SAMPLES = flags.DEFINE_integer(
    "temporal_samples", None, "Keep this many evenly spaced observations; default: all."
)
_WRITE_IMAGES = flags.DEFINE_bool(
    "write_images", False, "Per-tile prediction/confidence PNGs and GeoTIFFs under images/."
)
_CLOUD_INJECTION = flags.DEFINE_float(
    "cloud_injection", 0.0, "Fraction of observations that get simulated clouds added."
)
_DATA_SEED = flags.DEFINE_integer(
    "data_seed", 0, "Seed of the cloud injection (as mtlcc_tf.train's --data_seed)."
)
_SKIP_CORRUPT = flags.DEFINE_bool(
    "skip_corrupt", False, "Skip unreadable records (each is logged) instead of failing."
)
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Progress line every this many tiles.")
_TEST_TIME_VIEWS = flags.DEFINE_enum(
    "test_time_views",
    "1",
    ["1", "2", "4", "8"],
    "Average the softmax over this many views of each tile (test-time augmentation): 1 (off, "
    "the original), 2 (and left-right flipped), 4 (all flips), 8 (flips and 90 degree "
    "rotations; square tiles). Costs that many model runs.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    directory = _MODEL_DIR.value
    # The model directory and the flags are checked before TensorFlow loads (seconds).
    try:
        run_config = model_dir.read_run_config(directory)
        data_config = DataConfig(
            root=_DATADIR.value or run_config.data.root,
            years=tuple(_YEARS.value),
            partition=_PARTITION.value,
            fold=_FOLD.value,
            temporal_samples=_TEMPORAL_SAMPLES.value,
            batch_size=_BATCHSIZE.value,
            training=False,
            augment=False,
            skip_corrupt=_SKIP_CORRUPT.value,
            cloud_injection=_CLOUD_INJECTION.value,
            seed=_DATA_SEED.value,
        ).validate()
        dataset_classes = dataset_root.read_classes(data_config.root)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"evaluate: {error}")
    import tensorflow as tf  # noqa: PLC0415 - after the checks above

    from data_pipeline import records  # noqa: PLC0415
    from mtlcc_tf import evaluate_lib, model_restore, tile_predictions  # noqa: PLC0415

    try:
        model, run_config, checkpoint = model_restore.restore_for_inference(
            directory, _CHECKPOINT.value
        )
        tile_predictions.check_classes(
            run_config.classes,
            dataset_classes,
            model_source=os.path.join(directory, model_dir.CONFIG_FILE),
            dataset_source=os.path.join(data_config.root, "classes.txt"),
        )
        out_dir = _OUT_DIR.value or os.path.join(directory, "evaluation", _PARTITION.value)
        logging.info("evaluating %s on %s -> %s", checkpoint, data_config.root, out_dir)
        evaluate_lib.evaluate(
            model,
            data_config,
            run_config.classes,
            out_dir=out_dir,
            write_images=_WRITE_IMAGES.value,
            metadata={
                "model_dir": directory,
                "checkpoint": checkpoint,
                "step": model_restore.checkpoint_step(checkpoint),
            },
            log_every=_LOG_EVERY.value,
            views=int(_TEST_TIME_VIEWS.value),
        )
    except (FileNotFoundError, ValueError) as error:
        # DatasetError and ClassMismatchError are ValueErrors; their messages name the files.
        sys.exit(f"evaluate: {error}")
    except tf.errors.OpError as error:
        # E.g. a corrupt record without --skip_corrupt; the message names the file.
        sys.exit(f"evaluate: {records.op_error_message(error)}")


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    app.run(main)
