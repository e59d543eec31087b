"""Exports a trained model as a SavedModel that takes raw record tensors (see export_lib).

python -m mtlcc_tf.export --model_dir=runs/convgru --export_dir=runs/convgru/export
saved_model_cli show --dir runs/convgru/export --all
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from mtlcc_tf import hardware, model_dir

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Model directory written by mtlcc_tf.train.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "SavedModel folder to create.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "'best', 'last', or the path of a checkpoint (prefix of its .index)."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --export_dir.")
_PRECISION = flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16", "auto"],
    "Precision the SavedModel computes in (its `metadata` signature says which): float32 serves "
    "the same everywhere; mixed_bfloat16 is faster on CPUs with AMX or AVX512_BF16 and GPUs with "
    "bf16 tensor cores (and emulated, very slow, elsewhere); auto: what this machine runs "
    "fastest.",
)
_FUSED_KERNELS = flags.DEFINE_bool(
    "fused_kernels",
    False,
    "Keep mtlcc_tf's fused CPU kernels in the SavedModel: about 2.5x faster on CPU in bf16, 1.3x "
    "in float32, but it loads only where mtlcc_tf loads them first (mtlcc_tf.predict does; a bare "
    "TensorFlow server does not). Off: TensorFlow's own ops, loads anywhere.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    directory = _MODEL_DIR.value
    # The model directory is checked before TensorFlow loads (seconds).
    try:
        model_dir.read_run_config(directory)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"export: {error}")
    from mtlcc_tf import export_lib, model_restore  # noqa: PLC0415 - after the check above

    try:
        precision = hardware.resolve_serving_precision(_PRECISION.value)
        model, run_config, checkpoint = model_restore.restore_for_inference(
            directory, _CHECKPOINT.value, precision
        )
        logging.info(
            "exporting %s (step %s)", checkpoint, model_restore.checkpoint_step(checkpoint)
        )
        train_years = model_dir.read_runtime_record(directory).get("train_years", ())
        export_lib.export(
            model,
            run_config.classes,
            _EXPORT_DIR.value,
            _OVERWRITE.value,
            tuple(train_years),
            fused_kernels=_FUSED_KERNELS.value,
        )
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        sys.exit(f"export: {error}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "export_dir"])
    app.run(main)
