"""tf.data input: record files of a split -> parsed, checked, subsampled, normalised batches."""

from __future__ import annotations

import dataclasses
import sys
from typing import NamedTuple

import tensorflow as tf
from absl import logging

from data_pipeline import dataset_root, records, transforms
from data_pipeline.data_config import DataConfig

AUTOTUNE = tf.data.AUTOTUNE
UNREADABLE = "unreadable record (truncated or corrupt TFRecord/GZIP data, or an empty file):"
# Keys of a batch; `inputs` and `sequence_length` are the model's inputs.
MODEL_KEYS = ("inputs", "sequence_length")


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    """The record files of one split and what the dataset root says about them."""

    files: tuple[str, ...]
    # Per file, from its dataset.ini section: (pix10, nobs, nbands10, nbands20, nbands60).
    expected_shapes: tuple[tuple[int, int, int, int, int], ...]
    sections: tuple[dataset_root.DatasetSection, ...]
    classes: dataset_root.ClassTable
    missing: tuple[str, ...]  # "<section>/<tileid>" listed in tileids/ without a record file

    @property
    def time_steps(self) -> int:
        return max(section.nobs for section in self.sections)


def list_split_files(config: DataConfig, root: dataset_root.RootInfo | None = None) -> SplitFiles:
    """Finds the record files of `config`'s partition, fold and years.

    Args:
      config: the split to find.
      root: `dataset_root.read_root(config.root)`, if the caller has read it already.

    Raises:
      dataset_root.DatasetError: a missing file or key, an unknown year, or an empty split.
    """
    if root is None or root.path != config.root:
        root = dataset_root.read_root(config.root)
    sections, classes = root.sections, root.classes
    names = config.years or tuple(sections)
    unknown = [name for name in names if name not in sections]
    if unknown:
        raise dataset_root.DatasetError(
            f"{config.root}/dataset.ini: no section for {unknown}; it has {list(sections)}"
        )
    chosen = [sections[name] for name in names]
    if len({section.pix10 for section in chosen}) > 1:
        raise dataset_root.DatasetError(
            f"{config.root}/dataset.ini: sections {list(names)} have different pix10 values; "
            "batches need one tile size, so train on one of them at a time"
        )
    tileids = dataset_root.read_tileids(config.root, config.partition, config.fold)
    files, expected_shapes, missing = [], [], []
    for section in chosen:
        found, absent = dataset_root.find_tile_files(config.root, section, tileids)
        files += found
        shape = (section.pix10, section.nobs, section.nbands10, section.nbands20, section.nbands60)
        expected_shapes += [shape] * len(found)
        missing += [f"{section.name}/{tileid}" for tileid in absent]
    split = dataset_root.tileids_filename(config.partition, config.fold)
    if not files:
        raise dataset_root.DatasetError(
            f"{config.root}/tileids/{split}: empty split: none of its {len(tileids)} tile ids has "
            f"a record in {[section.datadir for section in chosen]}"
        )
    if missing:
        logging.info(
            "%s: %d of %d listed tiles have no record file (using the %d that exist)",
            split, len(missing), len(missing) + len(files), len(files),
        )  # fmt: skip
    return SplitFiles(tuple(files), tuple(expected_shapes), tuple(chosen), classes, tuple(missing))


def _read_first_record(path: tf.Tensor) -> tf.data.Dataset:
    """One element per file: its first record and whether it could be read at all.

    TFRecordDataset's own errors do not name the file, so read errors are caught here and turned
    into an `ok=False` element that `_check_readable` reports with the file name.
    """
    compression = tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")
    readable = tf.data.TFRecordDataset(path, compression_type=compression)
    readable = readable.map(lambda record: (record, True)).ignore_errors()
    failed = tf.data.Dataset.from_tensors((tf.constant(""), False))
    return readable.concatenate(failed).take(1)


def check_tile(features: dict, expected_shape) -> dict:
    """Asserts that a decoded tile has the shapes its dataset.ini section promises.

    Args:
      features: a decoded tile (`records.decode`).
      expected_shape: int [5], (pix10, nobs, nbands10, nbands20, nbands60) of its section.
    """
    pix10, nobs, nbands10, nbands20, nbands60 = tf.unstack(tf.cast(expected_shape, tf.int32))
    expected = {
        "x10": [nobs, pix10, pix10, nbands10],
        "x20": [nobs, pix10 // 2, pix10 // 2, nbands20],
        "x60": [nobs, pix10 // 6, pix10 // 6, nbands60],
        "doy": [nobs],
        "labels": [pix10, pix10],
    }
    checks = []
    for key, shape in expected.items():
        actual = tf.shape(features[key])
        matches = tf.logical_and(
            tf.size(actual) == len(shape), tf.reduce_all(tf.equal(actual, tf.stack(shape)))
        )
        checks.append(
            tf.debugging.Assert(
                matches,
                [
                    f"{key} shape disagrees with dataset.ini",
                    features["source"],
                    "got",
                    actual,
                    "expected",
                    tf.stack(shape),
                ],
            )  # fmt: skip
        )
    with tf.control_dependencies(checks):
        return {key: tf.identity(value) for key, value in features.items()}


def _keep_readable(record, ok, source, expected_shape):
    """Filter predicate for skip_corrupt: drops unreadable files, saying which on stderr."""

    def report():
        with tf.control_dependencies(
            [tf.print("skipping", UNREADABLE, source, output_stream=sys.stderr)]
        ):
            return tf.constant(False)

    return tf.cond(ok, lambda: True, report)


def _check_readable(record, ok, source):
    check = tf.debugging.Assert(ok, [UNREADABLE, source])
    with tf.control_dependencies([check]):
        return tf.identity(record)


class LabelCensus(NamedTuple):
    """What `label_census` counts: labelled pixels per class index, tiles, tiles with labels."""

    counts: tuple[int, ...]
    tiles: int
    labelled_tiles: int


def count_labels(config: DataConfig, split: SplitFiles | None = None) -> tuple[int, ...]:
    """Labelled pixels per class index over `config`'s split (see `label_census`)."""
    return label_census(config, split).counts


def label_census(config: DataConfig, split: SplitFiles | None = None) -> LabelCensus:
    """Labelled pixels per class index over `config`'s split (every file once, unknown skipped),
    the number of tiles and of tiles with at least one labelled pixel.

    Reads only what the labels need; unreadable records raise (or are skipped with
    `skip_corrupt`) as in `build_dataset`. `split`: `list_split_files(config)`, if known.
    """
    split = split or list_split_files(config)
    lookup = transforms.label_lookup_table(split.classes.known_ids)
    num_classes = split.classes.num_classes

    def read(path):
        return _read_first_record(path).map(lambda record, ok: (record, ok, path))

    def labels_of(record, ok, path):
        features = records.decode(_check_readable(record, ok, path), path)
        labels = transforms.map_labels(features, lookup)["labels"]
        known = tf.boolean_mask(labels, labels >= 0)
        return tf.math.bincount(known, minlength=num_classes, maxlength=num_classes, dtype=tf.int64)

    dataset = tf.data.Dataset.from_tensor_slices(list(split.files)).interleave(
        read, cycle_length=4, num_parallel_calls=AUTOTUNE
    )
    if config.skip_corrupt:
        dataset = dataset.filter(lambda record, ok, path: ok)
    dataset = dataset.map(labels_of, num_parallel_calls=AUTOTUNE)
    if config.skip_corrupt:
        dataset = dataset.ignore_errors()
    totals = dataset.reduce(
        (tf.zeros([num_classes], tf.int64), tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        lambda total, count: (
            total[0] + count,
            total[1] + 1,
            total[2] + tf.cast(tf.reduce_sum(count) > 0, tf.int64),
        ),
    )
    counts, tiles, labelled = (value.numpy() for value in totals)
    return LabelCensus(tuple(int(count) for count in counts), int(tiles), int(labelled))


def build_dataset(
    config: DataConfig,
    input_context: tf.distribute.InputContext | None = None,
    split: SplitFiles | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline of `config`.

    files -> shuffle (training) -> repeat (training) -> interleave(read) -> parse and check ->
    labels to class indices -> skip tiles without a labelled pixel (training) -> choose
    observations -> inject clouds (optional) -> model inputs -> augment (training) -> batch ->
    prefetch. Training needs at least one labelled tile (`label_census` tells), else it waits
    forever.

    Elements are dicts: inputs float32 [batch, T, H, W, 15], sequence_length int32 [batch],
    labels int32 [batch, H, W] (class index, -1 unknown), cloud_mask uint8 [batch, T, H, W],
    has_cloud_mask bool [batch], doy and year int32 [batch, T], tileid and source strings [batch].
    T is `temporal_samples` or, without it, the largest `nobs` of the chosen sections.

    Args:
      config: what to read.
      input_context: given by `strategy.distribute_datasets_from_function`; shards files across
        input pipelines and turns the global batch size into the per-replica one.
      split: `list_split_files(config)`, if the caller has it (the dataset root is then not
        read again).
    """
    config.validate()
    split = split or list_split_files(config)
    lookup = transforms.label_lookup_table(split.classes.known_ids)
    time_steps = config.temporal_samples or split.time_steps
    batch_size = config.batch_size
    seed = config.seed
    ordered = not config.training or config.deterministic
    files = tf.data.Dataset.from_tensor_slices((list(split.files), list(split.expected_shapes)))
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(config.batch_size)
        if input_context.num_input_pipelines > 1:
            files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        seed += 7919 * input_context.input_pipeline_id
    if config.training:
        files = files.shuffle(len(split.files), seed=seed, reshuffle_each_iteration=True).repeat()

    def read(path, expected_shape):
        return _read_first_record(path).map(lambda record, ok: (record, ok, path, expected_shape))

    dataset = files.interleave(
        read, cycle_length=4, num_parallel_calls=AUTOTUNE, deterministic=ordered
    )
    if config.skip_corrupt:
        dataset = dataset.filter(_keep_readable)

    pix10 = split.sections[0].pix10  # the same for all chosen sections

    def parse(record, ok, path, expected_shape):
        record = _check_readable(record, ok, path)
        features = check_tile(records.decode(record, path), expected_shape)
        # Static tile sizes let later stages (and the model) see [.., pix10, pix10, ..].
        for key, size in (("x10", pix10), ("x20", pix10 // 2), ("x60", pix10 // 6)):
            features[key] = tf.ensure_shape(features[key], [None, size, size, None])
        features["labels"] = tf.ensure_shape(features["labels"], [pix10, pix10])
        features["cloud_mask"] = tf.ensure_shape(features["cloud_mask"], [None, pix10, pix10])
        return transforms.map_labels(features, lookup)

    dataset = dataset.map(parse, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    if config.skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)
    if config.training:  # loss 0 and no gradient: such tiles would only dilute the batches
        dataset = dataset.filter(lambda features: tf.reduce_any(features["labels"] >= 0))
    dataset = dataset.enumerate()

    def prepare(index, features):
        index = tf.cast(index, tf.int32)
        subsample_seed = tf.stack([seed, 2 * index])
        augment_seed = tf.stack([seed, 2 * index + 1])
        features = transforms.select_observations(
            features,
            time_steps,
            num_samples=config.temporal_samples,
            seed=subsample_seed if config.training else None,
        )
        if config.cloud_injection > 0:
            # Seeded by the file (datadir/name, not where the root lives), not the position, so a
            # tile gets the same clouds in every run and in every copy of the dataset.
            relative = tf.strings.regex_replace(features["source"], r"^.*?([^/]+/[^/]+)$", r"\1")
            tile_key = tf.strings.to_hash_bucket_fast(relative, 2**31 - 1)
            inject_seed = tf.stack([config.seed, tf.cast(tile_key, tf.int32)])
            features = transforms.inject_clouds(features, config.cloud_injection, inject_seed)
        features = transforms.to_model_inputs(features)
        if config.training and config.augment:
            features = transforms.augment(features, augment_seed)
        return {key: features[key] for key in BATCH_KEYS}

    dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    drop_remainder = config.drop_remainder or config.training or input_context is not None
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(AUTOTUNE)


BATCH_KEYS = (
    "inputs", "sequence_length", "labels", "cloud_mask", "has_cloud_mask", "doy", "year",
    "tileid", "source",
)  # fmt: skip


def band_statistics(
    config: DataConfig, max_tiles: int = 64, split: SplitFiles | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation of the model's reflectance channels (x 1e-4, 20 m
    and 60 m bands resized as the model sees them) over every real observation and pixel of up
    to `max_tiles` tiles of `config`'s split, spread evenly over its files. Clouds included:
    these are the statistics of what the model is fed.

    Returns:
        (means, stds), one per band (`transforms.NUM_REFLECTANCE_CHANNELS`).

    Raises:
        ValueError: the tiles hold no real observation.
    """
    split = split or list_split_files(config)
    count = min(max_tiles, len(split.files))
    chosen = sorted({round(i * (len(split.files) - 1) / max(count - 1, 1)) for i in range(count)})
    subset = dataclasses.replace(
        split,
        files=tuple(split.files[i] for i in chosen),
        expected_shapes=tuple(split.expected_shapes[i] for i in chosen),
    )
    plain = dataclasses.replace(
        config, training=False, augment=False, temporal_samples=None, deterministic=True
    )
    bands = transforms.NUM_REFLECTANCE_CHANNELS
    total = tf.zeros([bands], tf.float64)
    squares = tf.zeros([bands], tf.float64)
    count = tf.constant(0.0, tf.float64)
    for batch in build_dataset(plain, split=subset):
        real = tf.sequence_mask(batch["sequence_length"], tf.shape(batch["inputs"])[1])
        values = tf.cast(tf.boolean_mask(batch["inputs"], real)[..., :bands], tf.float64)
        values = tf.reshape(values, [-1, bands])
        total += tf.reduce_sum(values, axis=0)
        squares += tf.reduce_sum(tf.square(values), axis=0)
        count += tf.cast(tf.shape(values)[0], tf.float64)
    if count.numpy() == 0:
        raise ValueError(f"{config.root}: the {len(chosen)} tiles read hold no real observation")
    mean = total / count
    std = tf.sqrt(tf.maximum(squares / count - tf.square(mean), 0.0))
    return (
        tuple(round(float(value), 6) for value in mean.numpy()),
        tuple(max(round(float(value), 6), 1e-6) for value in std.numpy()),
    )
