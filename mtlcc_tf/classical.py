"""Classical baseline: a random forest on per-pixel (cloud-masked) composites, scored as evaluate.

python -m mtlcc_tf.classical --datadir=data/simulated --out_dir=data/runs/masked
python -m mtlcc_tf.classical --variant=raw --datadir=data/simulated --out_dir=data/runs/raw

Trains once on the training tiles of --fold and writes metrics.json, report.md,
confusion_matrix.png and tiles.csv of each of --partitions into <--out_dir>/<partition>/, as
`mtlcc_tf.evaluate` does; metrics.json's `baseline` entry holds the settings, training pixels,
feature count and seconds taken.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from data_pipeline import records
from data_pipeline.data_config import DataConfig
from mtlcc_tf import classical_lib, composites

_DATADIR = flags.DEFINE_string("datadir", None, "Dataset root (dataset.ini, classes.txt, ...).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write metrics.json, report.md, ...")
_FOLD = flags.DEFINE_integer("fold", 0, "Fold of the train/test tile id lists.", lower_bound=0)
_TRAIN_ON = flags.DEFINE_list(
    "train_on", [], "Years (dataset.ini sections) to train on; empty: all."
)
_EVAL_ON = flags.DEFINE_list("eval_on", [], "Years to score; empty: those of --train_on.")
_PARTITIONS = flags.DEFINE_list(
    "partitions",
    ["eval"],
    "Tiles to score: train, test and/or eval (the paper's numbers: eval); each goes to "
    "<out_dir>/<partition>/.",
)
flags.register_validator(
    "partitions",
    lambda values: bool(values) and set(values) <= {"train", "test", "eval"},
    "--partitions: one or more of train, test, eval",
)
_VARIANT = flags.DEFINE_enum(
    "variant", "masked", list(composites.VARIANTS),
    "masked: composites of clear observations only; raw: of all observations, clouds included.",
)  # fmt: skip
_WINDOWS = flags.DEFINE_enum(
    "windows", "monthly", list(composites.WINDOWS), "Composite windows: months or 10-day periods."
)
_STATISTIC = flags.DEFINE_enum(
    "statistic", "median", list(composites.STATISTICS), "Composite of a window's observations."
)
_CLOUD_MASK = flags.DEFINE_enum(
    "cloud_mask", "auto", list(composites.CLOUD_MASKS),
    "masked variant: 'record' uses the records' cloud masks (simulated data), 'brightness' the "
    "rule B2 > --cloud_threshold, 'auto' the mask where a record has one, else the rule.",
)  # fmt: skip
_CLOUD_THRESHOLD = flags.DEFINE_float(
    "cloud_threshold", composites.DEFAULT_CLOUD_THRESHOLD,
    "B2 TOA reflectance (0-1) above which the brightness rule calls an observation cloud.",
)  # fmt: skip
_CLASSIFIER = flags.DEFINE_enum(
    "classifier", "random_forest", list(classical_lib.CLASSIFIERS), "scikit-learn classifier."
)
_NUM_TREES = flags.DEFINE_integer(
    "num_trees", 100, "Trees of the forest, or boosting iterations.", lower_bound=1
)
_MAX_TRAIN_PIXELS = flags.DEFINE_integer(
    "max_train_pixels", 200_000, "Train on a random sample of at most this many labelled pixels.",
    lower_bound=1,
)  # fmt: skip
_NUM_JOBS = flags.DEFINE_integer("num_jobs", 2, "CPU threads of the classifier.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the pixel sample, the classifier and clouds.")
_CLOUD_INJECTION = flags.DEFINE_float(
    "cloud_injection", 0.0,
    "Fraction of the scored tiles' observations that get simulated clouds (training data: none).",
    lower_bound=0.0, upper_bound=1.0,
)  # fmt: skip
_SKIP_CORRUPT = flags.DEFINE_bool(
    "skip_corrupt", False, "Skip unreadable records (each is logged) instead of failing."
)
_WRITE_IMAGES = flags.DEFINE_bool(
    "write_images", False, "Per-tile prediction/confidence PNGs and GeoTIFFs under images/."
)
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Progress line every this many tiles.")
_BATCH_SIZE = 8  # tiles read and classified at a time; results do not depend on it


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        train_data = DataConfig(
            root=_DATADIR.value,
            years=tuple(_TRAIN_ON.value),
            partition="train",
            fold=_FOLD.value,
            batch_size=_BATCH_SIZE,
            training=False,
            augment=False,
            skip_corrupt=_SKIP_CORRUPT.value,
        ).validate()
        partitions = list(dict.fromkeys(_PARTITIONS.value))
        eval_template = DataConfig(
            root=_DATADIR.value,
            years=tuple(_EVAL_ON.value or _TRAIN_ON.value),
            partition=partitions[0],
            fold=_FOLD.value,
            batch_size=_BATCH_SIZE,
            training=False,
            augment=False,
            skip_corrupt=_SKIP_CORRUPT.value,
            cloud_injection=_CLOUD_INJECTION.value,
            seed=_SEED.value,
        ).validate()
        features = composites.FeatureConfig(
            variant=_VARIANT.value,
            windows=_WINDOWS.value,
            statistic=_STATISTIC.value,
            cloud_mask=_CLOUD_MASK.value,
            cloud_threshold=_CLOUD_THRESHOLD.value,
        ).validate()
        classifier = classical_lib.ClassifierConfig(
            classifier=_CLASSIFIER.value,
            num_trees=_NUM_TREES.value,
            max_train_pixels=_MAX_TRAIN_PIXELS.value,
            num_jobs=_NUM_JOBS.value,
            seed=_SEED.value,
        ).validate()
        eval_datas = [
            dataclasses.replace(eval_template, partition=partition).validate()
            for partition in partitions
        ]
        out_dirs = [os.path.join(_OUT_DIR.value, partition) for partition in partitions]
        logging.info("classical baseline on %s -> %s", train_data.root, out_dirs)
        classical_lib.train_and_evaluate_partitions(
            train_data, eval_datas, features, classifier, out_dirs,
            write_images=_WRITE_IMAGES.value, log_every=_LOG_EVERY.value,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        # DatasetError, RecordError and ClassMismatchError are ValueErrors naming the file.
        sys.exit(f"classical: {error}")
    except tf.errors.OpError as error:
        # E.g. a corrupt record without --skip_corrupt; the message names the file.
        sys.exit(f"classical: {records.op_error_message(error)}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["datadir", "out_dir"])
    app.run(main)
