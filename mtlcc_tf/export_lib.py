"""SavedModel export: raw record tensors in, the dataset's label ids and probabilities out.

The `serving_default` signature takes what a record holds, so a client sends what is on disk:

  x10   float32 [batch, time, H, W, 4]      B4, B3, B2, B8 at 10 m
  x20   float32 [batch, time, H/2, W/2, 6]  B5, B6, B7, B8A, B11, B12 at 20 m
  x60   float32 [batch, time, H/6, W/6, 3]  B1, B9, B10 at 60 m
  doy   int32 [batch, time]                 day of year, 0 marks padding
  year  int32 [batch, time]

Reflectances are top-of-atmosphere reflectance x 1e4 (as stored in the records, e.g. 1234.0 for
0.1234). Batch, time, H and W are dynamic; H and W must be multiples of 6. Padding observations
(doy 0 or an all-zero x10) may sit anywhere in time: they are moved behind the real ones and
ignored. The graph checks its inputs and fails with a message naming the input (an
InvalidArgumentError) on: shapes that do not fit together, NaN or inf reflectances (send such an
observation as padding), a doy outside 0-366, a real observation's year outside 1970-2100, real
observations out of date order, or an empty time axis. An empty batch returns empty outputs.
It returns

  class_ids      int32 [batch, H, W]     the dataset's own label ids (e.g. 22 for winter wheat)
  probabilities  float32 [batch, H, W, K]  softmax over the K classes in classes.txt order
  confidence     float32 [batch, H, W]   the probability of the predicted class

The `classes` signature (no inputs) returns `ids` int32 [K] and `names` string [K]; the same table
is in `assets/classes.txt` (`id|name` lines, as in a dataset root). The `metadata` signature
returns `precision` (string: the Keras dtype policy the model computes in, `float32` or
`mixed_bfloat16`, chosen at export), `kernels` (string: `portable`, TensorFlow's own ops only, or
`fused`, see below) and `train_years` int32 [n]. `saved_model_cli show --all`
lists it; `saved_model_cli run` cannot call a signature without inputs, so print it with

  python -c "import tensorflow as tf; print(tf.saved_model.load('SAVED_MODEL')
      .signatures['metadata']())"

By default the graph holds TensorFlow's own ops only: any TensorFlow 2 server loads it. Exported
with `fused_kernels=True` (`mtlcc_tf.export --fused_kernels`), it keeps mtlcc_tf's fused CPU
kernels (`mtlcc_tf.ops`), which ran the model 2.5 times faster in bf16 on a CPU with AMX (1.3
times in float32; benchmarks/README.md); such a SavedModel loads only where those kernels are
loaded first (`load` below, which `mtlcc_tf.predict` uses), on x86-64 Linux CPUs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from data_pipeline import dataset_root, transforms
from mtlcc_tf import ops

SERVING_KEY = "serving_default"
CLASSES_KEY = "classes"
METADATA_KEY = "metadata"
BANDS = {"x10": 4, "x20": 6, "x60": 3}
PORTABLE_KERNELS, FUSED_KERNELS = "portable", "fused"


def _check_shapes(x10, x20, x60, doy, year) -> list[tf.Operation]:
    """Assertions that the inputs of one request fit together, with messages saying what is not."""
    shape10 = tf.shape(x10)
    batch, time, height, width = shape10[0], shape10[1], shape10[2], shape10[3]

    def same(actual, expected, message):
        return tf.debugging.Assert(
            tf.reduce_all(tf.equal(actual, expected)),
            [message, "got", actual, "expected", expected],
        )

    return [
        tf.debugging.Assert(
            tf.logical_and(tf.equal(height % 6, 0), tf.equal(width % 6, 0)),
            ["x10 height and width must be multiples of 6 (60 m pixels are 6 x 6 of them); got",
             height, width],
        ),  # fmt: skip
        same(tf.shape(x20)[:4], tf.stack([batch, time, height // 2, width // 2]),
             "x20 must be [batch, time, H/2, W/2, 6] for x10 [batch, time, H, W, 4]:"),
        same(tf.shape(x60)[:4], tf.stack([batch, time, height // 6, width // 6]),
             "x60 must be [batch, time, H/6, W/6, 3] for x10 [batch, time, H, W, 4]:"),
        same(tf.shape(doy), tf.stack([batch, time]), "doy must be [batch, time] like x10:"),
        same(tf.shape(year), tf.stack([batch, time]), "year must be [batch, time] like x10:"),
    ]  # fmt: skip


MIN_YEAR, MAX_YEAR = 1970, 2100  # years a real observation may have (Landsat 1 onwards)


def _check_values(x10, x20, x60, doy, year) -> list[tf.Operation]:
    """Assertions on the values: finite reflectances, days of year and years in range, dates
    in order. A NaN would otherwise turn a whole tile's probabilities into NaN, silently."""
    checks = []
    for name, value in (("x10", x10), ("x20", x20), ("x60", x60)):
        bad = tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(value)), tf.int32))
        checks.append(tf.debugging.Assert(tf.equal(bad, 0), [
            f"{name} holds NaN or inf values (count follows); send an observation without "
            "valid data as padding (doy 0) and fill gaps before serving:", bad]))  # fmt: skip
    checks.append(tf.debugging.Assert(
        tf.reduce_all((doy >= 0) & (doy <= 366)),
        ["doy must be 0 (padding) or a day of year in 1-366; got min and max", tf.reduce_min(doy),
         tf.reduce_max(doy)],
    ))  # fmt: skip
    real = doy > 0
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.logical_not(real) | ((year >= MIN_YEAR) & (year <= MAX_YEAR))),
        [f"year of a real observation must be in {MIN_YEAR}-{MAX_YEAR}; got min and max",
         tf.reduce_min(year), tf.reduce_max(year)],
    ))  # fmt: skip
    # Real observations in date order: moved to the front (as batch_model_inputs does), their
    # dates (year, doy) never decrease.
    order = tf.argsort(tf.cast(tf.logical_not(real), tf.int32), axis=1, stable=True)
    date = tf.gather(year * 400 + doy, order, axis=1, batch_dims=1)
    both_real = tf.gather(real, order, axis=1, batch_dims=1)[:, 1:]
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.logical_not(both_real) | (date[:, 1:] >= date[:, :-1])),
        ["real observations must be in date order (year, doy); padding may sit anywhere"],
    ))  # fmt: skip
    return checks


class ServingModule(tf.Module):
    """Wraps a Keras model and its class table in the signatures described in the module doc."""

    def __init__(
        self,
        model: keras.Model,
        class_table: dataset_root.ClassTable,
        classes_file: str,
        train_years: tuple[int, ...] = (),
        kernels: str = PORTABLE_KERNELS,
    ):
        super().__init__(name="mtlcc_serving")
        self.model = model
        self.precision = tf.constant(model.dtype_policy.name, tf.string, name="precision")
        self.kernels = tf.constant(kernels, tf.string, name="kernels")
        self.train_years = tf.constant(list(train_years), tf.int32, shape=[len(train_years)])
        self.class_ids = tf.constant(class_table.known_ids, tf.int32, name="class_ids")
        self.class_names = tf.constant(class_table.known_names, tf.string, name="class_names")
        self.classes_asset = tf.saved_model.Asset(classes_file)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None, BANDS["x10"]], tf.float32, name="x10"),
            tf.TensorSpec([None, None, None, None, BANDS["x20"]], tf.float32, name="x20"),
            tf.TensorSpec([None, None, None, None, BANDS["x60"]], tf.float32, name="x60"),
            tf.TensorSpec([None, None], tf.int32, name="doy"),
            tf.TensorSpec([None, None], tf.int32, name="year"),
        ]
    )
    def serve(self, x10, x20, x60, doy, year):
        """Predicts the classes of a batch of tiles; see the module docstring."""
        checks = _check_shapes(x10, x20, x60, doy, year)
        # The value checks combine doy and year elementwise: run them only on fitting shapes, so
        # that a shape error is reported as such, not as whichever op happens to fail first.
        with tf.control_dependencies(checks):
            checks += _check_values(x10, x20, x60, doy, year)
        shape = tf.shape(x10)
        checks.append(tf.debugging.Assert(
            tf.logical_or(tf.equal(shape[0], 0), shape[1] > 0),
            ["the time axis is empty: send at least one observation per tile"],
        ))  # fmt: skip
        with tf.control_dependencies(checks):
            features = transforms.batch_model_inputs(x10, x20, x60, doy, year)
        num_classes = tf.shape(self.class_ids)[0]

        def predict():
            logits = self.model(features, training=False)
            return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

        def nothing():  # an empty batch: empty outputs, without running the model
            return tf.zeros(tf.stack([0, shape[2], shape[3], num_classes]), tf.float32)

        probabilities = tf.cond(shape[0] > 0, predict, nothing)
        indices = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "class_ids": tf.gather(self.class_ids, indices),
            "probabilities": probabilities,
            "confidence": tf.reduce_max(probabilities, axis=-1),
        }

    @tf.function(input_signature=[])
    def classes(self):
        """The class table: label ids and names, in the order of the probabilities' last axis."""
        return {"ids": tf.identity(self.class_ids), "names": tf.identity(self.class_names)}

    @tf.function(input_signature=[])
    def metadata(self):
        """The compute precision the model serves in (a Keras policy name), its kernels
        (portable or fused) and the years it was trained on."""
        return {
            "precision": tf.identity(self.precision),
            "kernels": tf.identity(self.kernels),
            "train_years": tf.identity(self.train_years),
        }


def _check_model(model: keras.Model, class_table: dataset_root.ClassTable) -> None:
    try:
        output_classes = model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return
    if output_classes is not None and output_classes != class_table.num_classes:
        raise ValueError(
            f"the model outputs {output_classes} classes but its class table has "
            f"{class_table.num_classes}: {class_table.known_names}"
        )


def export(
    model: keras.Model,
    class_table: dataset_root.ClassTable,
    export_dir: str,
    overwrite: bool = False,
    train_years: tuple[int, ...] = (),
    fused_kernels: bool = False,
) -> str:
    """Writes `model` as a SavedModel with the `serving_default` and `classes` signatures.

    The SavedModel is written next to `export_dir` under a temporary name and renamed into place,
    so a reader never sees half an export.

    Args:
      model: takes {"inputs", "sequence_length"} and returns logits [batch, H, W, K].
      class_table: the classes the model was trained with (index i <-> known_ids[i]).
      export_dir: the SavedModel folder to create (local path).
      overwrite: replace an existing non-empty `export_dir`.
      train_years: the years the model was trained on, for predict's warning on scenes of other
        years (the `metadata` signature); () if unknown.
      fused_kernels: keep mtlcc_tf's fused CPU kernels in the graph (faster on CPU; loads only
        where they are loaded first, see `load`); False: TensorFlow's own ops only.

    The model serves in the precision (dtype policy) it was built with: build it under a
    `mixed_bfloat16` policy for bf16 serving (`model_restore.restore_model(precision=...)`).

    Returns:
      `export_dir`.

    Raises:
      FileExistsError: `export_dir` exists, is not empty and `overwrite` is False.
      RuntimeError: `fused_kernels` where the kernels cannot be built or loaded here.
    """
    if fused_kernels and not ops.available():
        raise RuntimeError(
            "fused kernels requested, but mtlcc_tf's kernels are not available on this machine "
            "(see the log); export without them"
        )
    export_dir = os.path.abspath(export_dir)
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} exists and is not empty; pass overwrite to replace it")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise FileExistsError(f"{export_dir} exists and is not a folder")
    _check_model(model, class_table)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        classes_file = os.path.join(temporary, "classes.txt")
        with open(classes_file, "w", encoding="utf-8") as handle:
            handle.writelines(
                f"{label_id}|{name}\n"
                for label_id, name in zip(class_table.ids, class_table.names, strict=True)
            )
        kernels = FUSED_KERNELS if fused_kernels else PORTABLE_KERNELS
        module = ServingModule(model, class_table, classes_file, train_years, kernels)
        saved = os.path.join(temporary, "saved_model")
        # Portable: graph ops only, so that a server without mtlcc_tf's kernels loads the model.
        with contextlib.nullcontext() if fused_kernels else ops.disabled():
            tf.saved_model.save(
                module,
                saved,
                signatures={
                    SERVING_KEY: module.serve.get_concrete_function(),
                    CLASSES_KEY: module.classes.get_concrete_function(),
                    METADATA_KEY: module.metadata.get_concrete_function(),
                },
            )
        _replace(saved, export_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    logging.info("exported SavedModel to %s", export_dir)
    return export_dir


def load(export_dir: str):
    """Loads a SavedModel written by `export`, with mtlcc_tf's kernels loaded first where they
    are available (a SavedModel exported with `fused_kernels` needs them).

    Raises:
      ValueError: the SavedModel needs the fused kernels and they are not available here, or
        it holds fused ops of another mtlcc_tf version than this one's.
    """
    available = ops.available()
    if available:
        ops.loaded()  # registers the kernels' ops with TensorFlow
    try:
        return tf.saved_model.load(export_dir)
    except (tf.errors.NotFoundError, ValueError) as error:
        if "Mtlcc" not in str(error):
            raise
        if available:
            raise ValueError(
                f"{export_dir}: exported with the fused kernels of another mtlcc_tf version, "
                f"whose ops differ from this version's ({error}); export it again from its model "
                "directory (mtlcc_tf.export --fused_kernels)"
            ) from error
        raise ValueError(
            f"{export_dir}: exported with fused kernels (mtlcc_tf.export --fused_kernels), which "
            "are not available on this machine (they need x86-64 Linux and a C++ compiler; see "
            "the log); export it again without --fused_kernels"
        ) from error


def _replace(source: str, destination: str) -> None:
    """Renames `source` to `destination`, moving an existing `destination` aside until done."""
    backup = None
    if os.path.exists(destination):
        backup = f"{source}.old"
        os.rename(destination, backup)
    try:
        os.rename(source, destination)
    except OSError:
        if backup is not None:
            os.rename(backup, destination)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
