"""Tile records: the original MTLCC int64 schema and our compact schema, one parser for both."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from data_pipeline import files

# `format/version` is absent from the original records, so it parses as 0 there.
ORIGINAL = "original"
COMPACT = "compact"
SCHEMA_VERSIONS = {ORIGINAL: 0, COMPACT: 2}
SCHEMA_NAMES = {version: name for name, version in SCHEMA_VERSIONS.items()}
BANDS10 = ("B4", "B3", "B2", "B8")
BANDS20 = ("B5", "B6", "B7", "B8A", "B11", "B12")
BANDS60 = ("B1", "B9", "B10")
# Values of the per-observation cloud mask.
CLEAR, CLOUD, SHADOW = 0, 1, 2
MAX_REFLECTANCE = 65535  # reflectance x 1e4 stored as uint16 in the compact schema

_RASTERS = ("x10", "x20", "x60")
# Compact-schema dtypes of every `*/data` feature; the original stores int64 everywhere.
_COMPACT_DTYPES = {
    "x10": np.uint16,
    "x20": np.uint16,
    "x60": np.uint16,
    "dates/doy": np.int16,
    "dates/year": np.int16,
    "labels": np.uint16,
    "cloud": np.uint8,
}


class RecordError(ValueError):
    """A tile record is malformed; the message names the record's file or tile."""


@dataclasses.dataclass
class Tile:
    """One tile's time series in numpy, as written to and read from a record.

    Shapes: x10 [time, pix10, pix10, 4], x20 [time, pix10/2, pix10/2, 6],
    x60 [time, pix10/6, pix10/6, 3], doy and year [time] (doy 0 marks padding),
    labels [pix10, pix10] raw label ids, cloud_mask [time, pix10, pix10] (CLEAR/CLOUD/SHADOW).
    Reflectances are top-of-atmosphere x 1e4.
    """

    tileid: str
    x10: np.ndarray
    x20: np.ndarray
    x60: np.ndarray
    doy: np.ndarray
    year: np.ndarray
    labels: np.ndarray
    cloud_mask: np.ndarray | None = None

    @property
    def num_observations(self) -> int:
        """Real (non-padding) observations."""
        return int(np.count_nonzero(self.doy))

    def validate(self) -> None:
        """Raises RecordError naming the tile if shapes or values are inconsistent."""
        name = f"tile {self.tileid!r}"
        time, height, width = self.x10.shape[:3]
        expected = {
            "x10": (time, height, width, len(BANDS10)),
            "x20": (time, height // 2, width // 2, len(BANDS20)),
            "x60": (time, height // 6, width // 6, len(BANDS60)),
            "doy": (time,),
            "year": (time,),
            "labels": (height, width),
        }
        if self.cloud_mask is not None:
            expected["cloud_mask"] = (time, height, width)
        if self.x10.ndim != 4 or height != width or height % 6:
            raise RecordError(f"{name}: x10 shape {self.x10.shape} is not [time, pix10, pix10, 4]")
        for field, shape in expected.items():
            value = getattr(self, field)
            if tuple(value.shape) != shape:
                raise RecordError(f"{name}: {field} has shape {value.shape}, expected {shape}")
        for field in _RASTERS:
            value = getattr(self, field)
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                raise RecordError(f"{name}: {field} holds NaN or infinite reflectances")
            if value.size and (value.min() < 0 or value.max() > MAX_REFLECTANCE):
                raise RecordError(
                    f"{name}: {field} reflectances outside [0, {MAX_REFLECTANCE}] "
                    f"(min {value.min()}, max {value.max()}); expected reflectance x 1e4"
                )
        if np.any((self.doy < 0) | (self.doy > 366)):
            raise RecordError(f"{name}: day of year outside [0, 366]")
        if self.labels.min(initial=0) < 0:
            raise RecordError(f"{name}: negative label ids")


def no_data(x10: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels of x10 [dates, H, W, bands] that are 0 in every band and date.

    The readers turn a raster's NoData (and NaN) into 0, so such pixels had no data at all.
    """
    return ~np.any(x10 != 0, axis=(0, -1))


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def encode(tile: Tile, schema: str = COMPACT) -> bytes:
    """Serialises a tile as a `tf.train.Example` in the given schema.

    The original schema is written the way the original code wrote it: every `*/data` a raw
    little-endian int64 array and the label map repeated for every time step; it has no cloud mask.
    """
    tile.validate()
    if schema not in SCHEMA_VERSIONS:
        raise ValueError(f"unknown schema {schema!r}; expected one of {tuple(SCHEMA_VERSIONS)}")
    compact = schema == COMPACT

    def data(key: str, array: np.ndarray) -> bytes:
        dtype = _COMPACT_DTYPES[key] if compact else np.int64
        return np.ascontiguousarray(array).astype(np.dtype(dtype).newbyteorder("<")).tobytes()

    time = tile.x10.shape[0]
    features = {}
    for key in _RASTERS:
        array = getattr(tile, key)
        features[f"{key}/data"] = _bytes_feature(data(key, array))
        features[f"{key}/shape"] = _int64_feature(array.shape)
    features["dates/doy"] = _bytes_feature(data("dates/doy", tile.doy))
    features["dates/year"] = _bytes_feature(data("dates/year", tile.year))
    features["dates/shape"] = _int64_feature([time])
    labels = tile.labels if compact else np.broadcast_to(tile.labels, (time, *tile.labels.shape))
    features["labels/data"] = _bytes_feature(data("labels", labels))
    features["labels/shape"] = _int64_feature(labels.shape)
    if compact:
        features["format/version"] = _int64_feature([SCHEMA_VERSIONS[COMPACT]])
        features["tile/id"] = _bytes_feature(tile.tileid.encode("utf-8"))
        if tile.cloud_mask is not None:
            features["cloud/data"] = _bytes_feature(data("cloud", tile.cloud_mask))
            features["cloud/shape"] = _int64_feature(tile.cloud_mask.shape)
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def write_tile(
    path: str, tile: Tile, schema: str = COMPACT, compression: str | None = "GZIP"
) -> int:
    """Writes one tile as a one-record TFRecord file, atomically; returns the file's size."""
    serialized = encode(tile, schema)
    with files.atomic_path(path) as temporary:
        with tf.io.TFRecordWriter(temporary, options=compression or "") as writer:
            writer.write(serialized)
    return os.path.getsize(path)


def compression_of(path: str) -> str:
    """TFRecord compression by file name: GZIP for `.gz`, none otherwise."""
    return "GZIP" if path.endswith(".gz") else ""


_FEATURE_SPEC = {
    "format/version": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "tile/id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    **{f"{key}/data": tf.io.FixedLenFeature([], tf.string) for key in _RASTERS},
    **{f"{key}/shape": tf.io.FixedLenFeature([4], tf.int64) for key in _RASTERS},
    "dates/doy": tf.io.FixedLenFeature([], tf.string),
    "dates/year": tf.io.FixedLenFeature([], tf.string),
    "dates/shape": tf.io.FixedLenFeature([1], tf.int64),
    "labels/data": tf.io.FixedLenFeature([], tf.string),
    "labels/shape": tf.io.VarLenFeature(tf.int64),
    "cloud/data": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "cloud/shape": tf.io.VarLenFeature(tf.int64),
}


def _check(condition: tf.Tensor, message: str, *data) -> tf.Operation:
    """An assertion whose error message holds `message` and `data` (e.g. the file name)."""
    return tf.debugging.Assert(condition, [message, *data], summarize=16)


def _decode_array(raw, compact_dtype, is_original, shape, source, what):
    """Decodes raw bytes (int64 in the original schema) into an int32 tensor of `shape`."""
    values = tf.cond(
        is_original,
        lambda: tf.cast(tf.io.decode_raw(raw, tf.int64, little_endian=True), tf.int32),
        lambda: tf.cast(tf.io.decode_raw(raw, compact_dtype, little_endian=True), tf.int32),
    )
    shape = tf.cast(shape, tf.int32)
    check = _check(
        tf.equal(tf.size(values), tf.reduce_prod(shape)),
        f"{what}: the number of values disagrees with the shape feature (values, shape):",
        source, tf.size(values), shape,
    )  # fmt: skip
    with tf.control_dependencies([check]):
        return tf.reshape(values, shape)


def decode(serialized: tf.Tensor, source: tf.Tensor | str = "") -> dict[str, tf.Tensor]:
    """Parses one serialised record of either schema into the same tensors.

    Args:
      serialized: scalar string, a serialised `tf.train.Example`.
      source: the record's file name, used in error messages.

    Returns:
      A dict with x10 [T, H, W, 4], x20 [T, H/2, W/2, 6], x60 [T, H/6, W/6, 3] as float32
      reflectance x 1e4, doy and year int32 [T], labels int32 [H, W] (raw label ids),
      cloud_mask uint8 [T, H, W] (zeros if the record has none), has_cloud_mask bool,
      schema_version int32, tileid and source strings.
    """
    source = tf.convert_to_tensor(source, tf.string)
    parsed = tf.io.parse_single_example(serialized, _FEATURE_SPEC)
    version = tf.cast(parsed["format/version"], tf.int32)
    is_original = tf.equal(version, SCHEMA_VERSIONS[ORIGINAL])
    known = _check(
        version <= max(SCHEMA_VERSIONS.values()),
        "record has a newer format/version than this package reads:", source, version,
    )  # fmt: skip
    with tf.control_dependencies([known]):
        out = {"schema_version": tf.identity(version), "source": source}
    for key in _RASTERS:
        values = _decode_array(
            parsed[f"{key}/data"], _COMPACT_DTYPES[key], is_original, parsed[f"{key}/shape"],
            source, key,
        )  # fmt: skip
        check = _check(tf.reduce_all(values >= 0), f"{key}: negative reflectances in", source)
        with tf.control_dependencies([check]):
            out[key] = tf.cast(values, tf.float32)
    for key in ("doy", "year"):
        out[key] = _decode_array(
            parsed[f"dates/{key}"], _COMPACT_DTYPES[f"dates/{key}"], is_original,
            parsed["dates/shape"], source, f"dates/{key}",
        )  # fmt: skip
    labels = _decode_array(
        parsed["labels/data"], _COMPACT_DTYPES["labels"], is_original,
        tf.sparse.to_dense(parsed["labels/shape"]), source, "labels",
    )  # fmt: skip
    # The original repeats the label map for every time step; the first one is used.
    out["labels"] = tf.reshape(
        tf.cond(tf.rank(labels) == 3, lambda: labels[0], lambda: labels), tf.shape(out["x10"])[1:3]
    )
    cloud_shape = tf.sparse.to_dense(parsed["cloud/shape"])
    has_cloud_mask = tf.size(cloud_shape) > 0
    out["has_cloud_mask"] = has_cloud_mask
    out["cloud_mask"] = tf.cond(
        has_cloud_mask,
        lambda: tf.reshape(
            tf.io.decode_raw(parsed["cloud/data"], tf.uint8), tf.shape(out["x10"])[:3]
        ),
        lambda: tf.zeros(tf.shape(out["x10"])[:3], tf.uint8),
    )
    out["tileid"] = parsed["tile/id"]
    return out


def op_error_message(error: Exception) -> str:
    """The readable part of a TensorFlow op error, without its function-node and op decorations."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:\w+\].*$", "", message, flags=re.DOTALL)
    return " ".join(message.split())


def read_record(path: str) -> dict[str, tf.Tensor]:
    """Reads and decodes the first record of a file eagerly (see `decode` for the tensors).

    Raises:
      RecordError: naming the file, if it is missing, unreadable, truncated or malformed.
    """
    if not os.path.isfile(path):
        raise RecordError(f"{path}: no such file")
    try:
        dataset = tf.data.TFRecordDataset(path, compression_type=compression_of(path))
        serialized = next(iter(dataset), None)
        if serialized is None:
            raise RecordError(f"{path}: holds no record (empty file)")
        return decode(serialized, path)
    except tf.errors.OpError as error:
        message = op_error_message(error)
        raise RecordError(f"{path}: unreadable or malformed record: {message}") from error


def read_tile(path: str) -> tuple[Tile, str]:
    """Reads the first record of a file into numpy; returns the tile and its schema name."""
    arrays = {key: value.numpy() for key, value in read_record(path).items()}
    tileid = arrays["tileid"].decode("utf-8") or os.path.basename(path).split(".")[0]
    tile = Tile(
        tileid=tileid,
        x10=arrays["x10"].astype(np.int32),
        x20=arrays["x20"].astype(np.int32),
        x60=arrays["x60"].astype(np.int32),
        doy=arrays["doy"],
        year=arrays["year"],
        labels=arrays["labels"],
        cloud_mask=arrays["cloud_mask"] if arrays["has_cloud_mask"] else None,
    )
    return tile, SCHEMA_NAMES[int(arrays["schema_version"])]
