"""Classical baseline: per-pixel composite features, a scikit-learn classifier, evaluate's scoring.

Reads tiles through `input_pipeline.build_dataset` (so labels, splits, padding, corrupt records
and cloud injection behave as for the models; 20 m and 60 m bands come bilinearly resized to the
10 m grid, as the models see them), turns every pixel into `composites.tile_features`, trains a
random forest or gradient boosting on a capped random sample of the training split's labelled
pixels and scores a partition with `evaluate_lib.score_tiles`: the same metrics.json, report.md,
confusion_matrix.png and tiles.csv as `mtlcc_tf.evaluate`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import sklearn
import tensorflow as tf
import threadpoolctl
from absl import logging
from sklearn import ensemble

from data_pipeline import dataset_root, input_pipeline
from data_pipeline.data_config import DataConfig
from mtlcc_tf import composites, evaluate_lib, pixel_features, tile_predictions

CLASSIFIERS = ("random_forest", "hist_gradient_boosting")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The classifier and its training sample.

    Attributes:
      classifier: 'random_forest' or 'hist_gradient_boosting'.
      num_trees: trees of the forest, or boosting iterations.
      max_train_pixels: train on a uniform random sample of at most this many labelled pixels.
      num_jobs: CPU threads for fitting and predicting.
      seed: seed of the pixel sample and of the classifier.
    """

    classifier: str = "random_forest"
    num_trees: int = 100
    max_train_pixels: int = 200_000
    num_jobs: int = 2
    seed: int = 0

    def validate(self) -> ClassifierConfig:
        """Raises ValueError naming the bad setting; returns self for chaining."""
        if self.classifier not in CLASSIFIERS:
            raise ValueError(
                f"ClassifierConfig.classifier={self.classifier!r}: expected one of {CLASSIFIERS}"
            )
        for name in ("num_trees", "max_train_pixels", "num_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClassifierConfig.{name}={getattr(self, name)} must be >= 1")
        return self


def build_classifier(config: ClassifierConfig) -> sklearn.base.ClassifierMixin:
    """An unfitted scikit-learn classifier for `config`."""
    if config.classifier == "random_forest":
        return ensemble.RandomForestClassifier(
            n_estimators=config.num_trees, n_jobs=config.num_jobs, random_state=config.seed
        )
    return ensemble.HistGradientBoostingClassifier(
        max_iter=config.num_trees, random_state=config.seed
    )


def _threads(config: ClassifierConfig) -> threadpoolctl.threadpool_limits:
    # Gradient boosting and BLAS use OpenMP/BLAS pools that n_jobs does not reach.
    return threadpoolctl.threadpool_limits(limits=config.num_jobs)


def fit(
    pixels: np.ndarray, labels: np.ndarray, config: ClassifierConfig
) -> sklearn.base.ClassifierMixin:
    """Fits `build_classifier(config)` on the pixels; logs the time it took."""
    classifier = build_classifier(config)
    present = np.unique(labels)
    logging.info(
        "fitting %s (%d trees) on %d pixels x %d features, %d classes present",
        config.classifier, config.num_trees, len(labels), pixels.shape[1], len(present),
    )  # fmt: skip
    if len(present) < 2:
        logging.warning("the training pixels hold only class %s: every prediction is it", present)
    start = time.perf_counter()
    with _threads(config):
        classifier.fit(pixels, labels)
    logging.info("fitted in %.1f s", time.perf_counter() - start)
    return classifier


def predict_tiles(
    classifier: sklearn.base.ClassifierMixin,
    data_config: DataConfig,
    features: composites.FeatureConfig,
    config: ClassifierConfig,
    num_classes: int,
    statistics: dict[str, Any] | None = None,
    log_every: int = 50,
) -> Iterator[tile_predictions.TileResult]:
    """Classifies every pixel of every tile of a partition, yielding one TileResult each.

    Args:
      classifier: fitted on class indices 0..num_classes-1 (not all need to be present).
      data_config: the partition to classify.
      features: as used for training.
      config: the classifier settings (threads).
      num_classes: classes of the dataset.
      statistics: if given, updated after the last tile with the partition's cloud-mask sources,
        gap statistics, number of tiles and seconds taken.
      log_every: progress line every this many tiles.
    """
    split = input_pipeline.list_split_files(data_config)
    sections = tile_predictions.section_names(data_config, split)
    make_features = composites.FeatureMaker(features)
    columns = np.asarray(classifier.classes_, np.int64)
    num_tiles = 0
    start = time.perf_counter()
    for batch in pixel_features.read_batches(data_config):
        tiles = [
            pixel_features.tile_of(batch, index) for index in range(len(batch["sequence_length"]))
        ]
        pixels = np.stack(
            [pixel_features.features_of(make_features, tile) for tile in tiles]
        )  # [batch, H, W, F]
        with _threads(config):
            known = classifier.predict_proba(pixels.reshape(-1, pixels.shape[-1]))
        # The classifier only knows the classes of its training pixels: widen to all of them.
        probabilities = np.zeros([len(known), num_classes], np.float32)
        probabilities[:, columns] = known
        probabilities = probabilities.reshape(*pixels.shape[:3], num_classes)
        for index in range(len(tiles)):
            yield tile_predictions.tile_result(batch, index, probabilities[index], sections)
            num_tiles += 1
            if log_every and num_tiles % log_every == 0:
                logging.info("classified %d tiles (%.1f s)", num_tiles, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    logging.info("classified %d tiles in %.1f s", num_tiles, seconds)
    if statistics is not None:
        statistics.update(
            make_features.statistics(), num_tiles=num_tiles, seconds=round(seconds, 3)
        )


def describe(features: composites.FeatureConfig, config: ClassifierConfig) -> str:
    """One line for report.md, e.g. 'random_forest (100 trees) on monthly median ...'."""
    if features.variant == "masked":
        mask = {"auto": "record mask, else B2 rule", "record": "record mask"}.get(
            features.cloud_mask, f"B2 > {features.cloud_threshold}"
        )
        observations = f"clear observations ({mask}), gaps interpolated"
    else:
        observations = "all observations (clouds included), gaps interpolated"
    return (
        f"{config.classifier} ({config.num_trees} trees) on {features.windows} "
        f"{features.statistic} composites of {observations}; {features.num_features} features, "
        f"{config.max_train_pixels:,} training pixels at most"
    )


def _move_into(staging: str, out_dir: str) -> None:
    """Renames every file under `staging` into `out_dir`, metrics.json last, then drops staging.

    Each file appears whole (a rename); metrics.json appearing means the rest is there.
    """
    paths = []
    for folder, _, names in tf.io.gfile.walk(staging):
        paths += [os.path.join(folder, name) for name in names]
    paths.sort(key=lambda path: os.path.basename(path) == "metrics.json")
    for path in paths:
        target = os.path.join(out_dir, os.path.relpath(path, staging))
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.rename(path, target, overwrite=True)
    tf.io.gfile.rmtree(staging)
    logging.info("moved %d files into %s", len(paths), out_dir)


def train_and_evaluate(
    train_data: DataConfig,
    eval_data: DataConfig,
    features: composites.FeatureConfig,
    classifier_config: ClassifierConfig,
    out_dir: str | None = None,
    write_images: bool = False,
    log_every: int = 50,
) -> dict[str, Any]:
    """Trains the baseline on `train_data`'s partition and scores it on `eval_data`'s.

    `train_and_evaluate_partitions` with one partition; see there.
    """
    return train_and_evaluate_partitions(
        train_data, [eval_data], features, classifier_config, [out_dir], write_images, log_every
    )[0]


def train_and_evaluate_partitions(
    train_data: DataConfig,
    eval_datas: Sequence[DataConfig],
    features: composites.FeatureConfig,
    classifier_config: ClassifierConfig,
    out_dirs: Sequence[str | None],
    write_images: bool = False,
    log_every: int = 50,
) -> list[dict[str, Any]]:
    """Trains the baseline on `train_data`'s partition once and scores it on each of `eval_datas`.

    Args:
      train_data: the training tiles (usually partition 'train' of a fold).
      eval_datas: the tiles to score ('train', 'test' or 'eval'), one DataConfig per partition.
      features: how pixels become features.
      classifier_config: the classifier and its training sample.
      out_dirs: per entry of `eval_datas`, where to write the files of `mtlcc_tf.evaluate` (each
        written whole, metrics.json last); None writes nothing.
      write_images: also write per-tile prediction images (needs out_dirs).
      log_every: progress line every this many tiles.

    Returns:
      Per entry of `eval_datas`, `evaluate_lib.evaluate`'s summary with a `baseline` entry:
      description, settings, numbers of training pixels and features, cloud-mask sources and
      seconds taken.

    Raises:
      dataset_root.DatasetError: a missing or malformed dataset file, or an empty split.
      ValueError: bad settings, no labelled pixel to train on or to score.
    """
    features.validate()
    classifier_config.validate()
    if len(out_dirs) != len(eval_datas):
        raise ValueError(f"{len(eval_datas)} partitions to score but {len(out_dirs)} out_dirs")
    for config in (train_data, *eval_datas):
        config.validate()
        input_pipeline.list_split_files(config)  # fail on a bad split before the long work
    if write_images and None in out_dirs:
        raise ValueError("write_images needs an out_dir")
    train_classes = dataset_root.read_classes(train_data.root)
    for eval_data in eval_datas:
        if train_data.root != eval_data.root:
            tile_predictions.check_classes(
                train_classes, dataset_root.read_classes(eval_data.root),
                os.path.join(train_data.root, "classes.txt"),
                os.path.join(eval_data.root, "classes.txt"),
            )  # fmt: skip
    start = time.perf_counter()
    pixels, labels, train_statistics = pixel_features.collect_training_pixels(
        train_data, features, classifier_config.max_train_pixels, classifier_config.seed, log_every
    )
    feature_seconds = time.perf_counter() - start
    classifier = fit(pixels, labels, classifier_config)
    fit_seconds = time.perf_counter() - start - feature_seconds
    train_statistics["feature_seconds"] = round(feature_seconds, 3)
    common = {
        "description": describe(features, classifier_config),
        **dataclasses.asdict(features),
        **dataclasses.asdict(classifier_config),
        "num_features": pixels.shape[1],
        "num_training_pixels": len(labels),
        "num_training_pixels_available": train_statistics.pop("num_training_pixels_available"),
        "num_training_tiles": train_statistics.pop("num_tiles"),
        "train_seconds": round(feature_seconds + fit_seconds, 3),  # features and fit
        "fit_seconds": round(fit_seconds, 3),
        "train": train_statistics,
        "train_data": evaluate_lib.data_settings(train_data),
        "sklearn_version": sklearn.__version__,
        "feature_names": composites.feature_names(features.windows),
    }
    summaries = []
    for eval_data, out_dir in zip(eval_datas, out_dirs, strict=True):
        eval_statistics: dict[str, Any] = {}
        baseline = {**common, "evaluation": eval_statistics}  # filled in while predicting
        class_table = dataset_root.read_classes(eval_data.root)
        staging = None if out_dir is None else os.path.join(out_dir, f".staging-{os.getpid()}")
        tiles = predict_tiles(
            classifier, eval_data, features, classifier_config, class_table.num_classes,
            eval_statistics, log_every,
        )  # fmt: skip
        try:
            # predict_tiles fills in eval_statistics (inside `baseline`) after its last tile,
            # before score_tiles writes metrics.json.
            summary = evaluate_lib.score_tiles(
                tiles, eval_data, class_table, out_dir=staging, write_images=write_images,
                metadata={"baseline": baseline},
            )  # fmt: skip
            if staging is not None:
                _move_into(staging, out_dir)
        finally:
            if staging is not None and tf.io.gfile.exists(staging):
                tf.io.gfile.rmtree(staging)
        logging.info(
            "%s: %s %s, overall accuracy %.4f, kappa %.4f, macro F1 %.4f (%.0f s)",
            eval_data.partition, features.variant, classifier_config.classifier,
            summary["overall_accuracy"], summary["kappa"], summary["macro_f1"],
            time.perf_counter() - start,
        )  # fmt: skip
        summaries.append(summary)
    return summaries
