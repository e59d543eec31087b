"""Trains a model: `python -m mtlcc_tf.train --flagfile=experiments/<name>.flags [--flag=value]`.

Flags live only here. They are turned into frozen, validated configs, checked against the
dataset root (before anything heavy is built), written to `<model_dir>/flags.txt` and handed to
`train_lib.train_and_evaluate`. Running again on the same `--model_dir` resumes the run;
`--flagfile=<model_dir>/flags.txt` repeats it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import NoReturn

from absl import app, flags, logging

from data_pipeline import dataset_root, files
from data_pipeline.data_config import DataConfig
from mtlcc_tf import console, model_config, train_config
from mtlcc_tf import model_dir as model_dir_lib

# Exit status after SIGTERM: a checkpoint was saved, the run is unfinished (128 + SIGTERM).
EXIT_STOPPED = 143

# Data: the original's flag names where it had them.
flags.DEFINE_string("datadir", None, "Dataset root (dataset.ini, classes.txt, tileids/, ...).")
flags.DEFINE_list(
    "train_on", [], "Years (dataset.ini sections) to train on, e.g. 2016,2017; empty: all."
)
flags.DEFINE_list("eval_on", [], "Years to validate on; empty: those of --train_on.")
flags.DEFINE_integer("fold", 0, "Fold of the train/test tile id lists.", lower_bound=0)
flags.DEFINE_enum(
    "eval_partition",
    "test",
    ["test", "eval"],
    "Validation split (the paper's numbers come from 'eval': keep it for the end).",
)
flags.DEFINE_integer(
    "temporal_samples",
    30,
    "Observations drawn at random per training tile (0: all). Validation uses all of them.",
    lower_bound=0,
)
flags.DEFINE_bool("augment", True, "Random flips and 90 degree rotations while training.")
flags.DEFINE_float(
    "cloud_injection",
    0.0,
    "Fraction of training observations that get simulated clouds.",
    lower_bound=0.0,
    upper_bound=1.0,
)
flags.DEFINE_bool("skip_corrupt", False, "Skip unreadable records instead of failing.")
flags.DEFINE_bool(
    "deterministic",
    False,
    "Reproducible runs: a fixed order of training tiles for --data_seed and deterministic ops "
    "(somewhat slower input).",
)
flags.DEFINE_integer(
    "batchsize", 4, "Global training batch size (split across replicas).", lower_bound=1
)
flags.DEFINE_integer("eval_batchsize", 0, "Validation batch size; 0: --batchsize.", lower_bound=0)
flags.DEFINE_integer("data_seed", 0, "Seed of shuffling, subsampling and augmentation.")

# Model (see mtlcc_tf.model_config.ModelConfig).
flags.DEFINE_enum("convcell", "lstm", list(model_config.CONVCELLS), "Recurrent cell.")
flags.DEFINE_integer("convrnn_filters", 64, "Hidden channels per direction.", lower_bound=1)
flags.DEFINE_integer("convrnn_kernel", 3, "Recurrent kernel size (odd).", lower_bound=1)
flags.DEFINE_integer("convrnn_layers", 1, "Stacked recurrent layers.", lower_bound=1)
flags.DEFINE_bool("bidirectional", True, "Add a backward direction with its own weights.")
flags.DEFINE_bool("normalization", True, "Layer-normalise the gate pre-activations.")
flags.DEFINE_enum(
    "normalization_scope",
    "tile",
    list(model_config.NORMALIZATION_SCOPES),
    "Layer-normalisation statistics: over the tile's height x width x channels (the original) "
    "or over each pixel's channels.",
)
flags.DEFINE_enum("padding", "reflect", list(model_config.PADDINGS), "Spatial padding.")
flags.DEFINE_bool("peepholes", False, "LSTM peephole connections.")
flags.DEFINE_enum(
    "aggr_strat",
    "state",
    list(model_config.AGGREGATION_STRATEGIES),
    "How the sequence becomes one feature map.",
)
flags.DEFINE_enum(
    "head",
    "original",
    list(model_config.HEADS),
    "Classification head: 'original' (conv, batch norm, leaky ReLU), 'logits' (one conv), "
    "'hidden' (a 64-channel hidden layer with ReLU first; not in the original).",
)
flags.DEFINE_integer(
    "date_harmonics",
    0,
    "Append sin/cos of 2*pi*k*doy/365, k=1..N, to every observation in the model; 0: off.",
    lower_bound=0,
)
flags.DEFINE_bool("pixelwise", False, "Per-pixel baseline: 1x1 kernels, no spatial context.")
flags.DEFINE_float("dropout", 0.0, "Dropout on the input of every recurrent layer.")
flags.DEFINE_bool("unroll", True, "Unroll the time loop (static number of steps).")
flags.DEFINE_integer(
    "tile_size", 0, "Static tile size (needed by keras_convlstm); 0: any.", lower_bound=0
)
flags.DEFINE_list(
    "attention_widths", [],
    "utae: encoder channels per resolution level (each halves it); empty: --convrnn_filters "
    "and twice that. U-TAE's published setting: 64,64,64,128.",
)  # fmt: skip
flags.DEFINE_list(
    "attention_decoder_widths", [],
    "utae: decoder channels per level, last = the encoder's; empty: --attention_widths. "
    "U-TAE's: 32,32,64,128.",
)  # fmt: skip
flags.DEFINE_integer(
    "attention_heads", 4, "utae, tsvit: attention heads (U-TAE's: 16, TSViT's: 4).", lower_bound=1
)
flags.DEFINE_integer(
    "attention_key_dim", 8, "utae, tsvit: size of each head's keys (U-TAE's: 4, TSViT's: 64).",
    lower_bound=1,
)  # fmt: skip
flags.DEFINE_integer(
    "patch_size", 2, "tsvit: side of its square patches in pixels (TSViT's: 2).", lower_bound=1
)
flags.DEFINE_integer(
    "attention_d_model", 0,
    "utae: attention width (a projection of the lowest level); 0: that level's width, no "
    "projection. U-TAE's: 256.",
    lower_bound=0,
)  # fmt: skip

# Optimisation (see train_config.TrainConfig).
flags.DEFINE_enum("optimizer", "adam", list(train_config.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate.")
flags.DEFINE_float("adam_epsilon", 1e-7, "Adam epsilon (Keras default; the original used 0.9).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (adamw only).")
flags.DEFINE_float("clipnorm", 0.0, "Clip gradients per variable to this norm; 0: off.")
flags.DEFINE_float(
    "class_weight_power",
    0.0,
    "Weight each class in the loss by (its share of training pixels)^-P, mean 1 per pixel; "
    "0: off (the original), 0.5: inverse square-root frequency, 1: inverse frequency.",
)
flags.DEFINE_float(
    "ema_decay",
    0.0,
    "Validate, and keep as the best checkpoint, an exponential moving average of the weights "
    "with this decay per step (e.g. 0.999); 0: off, the weights themselves (the original).",
)
flags.DEFINE_enum("schedule", "constant", list(train_config.SCHEDULES), "Learning rate schedule.")
flags.DEFINE_integer("warmup_steps", 0, "Linear learning rate warm-up steps.", lower_bound=0)
flags.DEFINE_float("decay_rate", 0.5, "Exponential schedule: factor per --decay_steps.")
flags.DEFINE_integer(
    "decay_steps", 0, "Exponential schedule: steps per factor; 0: one epoch.", lower_bound=0
)
flags.DEFINE_integer(
    "epochs", 30, "Training epochs (training tiles // batchsize steps each).", lower_bound=1
)
flags.DEFINE_integer(
    "steps_per_epoch", 0, "Steps per epoch; 0: training tiles // batchsize.", lower_bound=0
)
flags.DEFINE_integer(
    "train_steps", 0, "Total training steps; overrides --epochs; 0: unused.", lower_bound=0
)
flags.DEFINE_integer("seed", 0, "Seed of the weight initialisation.")
flags.DEFINE_bool(
    "standardize_bands", False,
    "Standardise each band inside the model by the training tiles' mean and std, measured at "
    "the start of a new run (off: reflectances x 1e-4, the original).",
)  # fmt: skip

# Runtime.
flags.DEFINE_string("model_dir", None, "Output folder; an existing run there is resumed.")
flags.DEFINE_enum(
    "strategy",
    "auto",
    list(train_config.STRATEGIES),
    "auto: all GPUs if several, else default; multi_worker reads TF_CONFIG.",
)
flags.DEFINE_integer(
    "cpu_devices", 1,
    "Split the CPU into this many logical devices: with --strategy=mirrored and no GPU, one "
    "replica each (to try data-parallel training on a CPU; they share its cores).",
    lower_bound=1,
)  # fmt: skip
flags.DEFINE_float(
    "connect_timeout", 600,
    "--strategy=multi_worker: seconds to wait for every task of TF_CONFIG to start before "
    "exiting with status 1 (names the missing tasks).",
    lower_bound=0,
)  # fmt: skip
flags.DEFINE_enum(
    "precision",
    "auto",
    list(train_config.PRECISIONS),
    "Compute precision; auto: mixed_bfloat16 on CPUs with AMX and GPUs with bf16 tensor cores "
    "(measured faster there), float32 elsewhere. The choice is logged and kept in config.json.",
)
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step (slow on CPU).")
flags.DEFINE_integer(
    "profile",
    0,
    "Record a TensorBoard profile of this many training steps into <model_dir>/profile, after "
    f"{train_config.PROFILE_WARMUP_STEPS} warm-up steps; 0: none.",
    lower_bound=0,
)
flags.DEFINE_integer(
    "checkpoint_every", 0, "Also checkpoint every N steps; 0: at epoch ends.", lower_bound=0
)
flags.DEFINE_integer("eval_every", 0, "Validate every N steps; 0: at epoch ends.", lower_bound=0)
flags.DEFINE_integer("summary_every", 50, "Training scalars every N steps.", lower_bound=1)
flags.DEFINE_integer("max_eval_batches", 0, "Validate on at most N batches; 0: all.", lower_bound=0)
flags.DEFINE_integer("num_image_tiles", 4, "Validation tiles shown in TensorBoard.", lower_bound=0)
flags.DEFINE_integer("keep_checkpoints", 3, "Last checkpoints kept.", lower_bound=1)

flags.mark_flags_as_required(["datadir", "model_dir"])
FLAGS = flags.FLAGS


def _optional(value):
    """0 (or 0.0) means "not set" on the command line; None in the configs."""
    return value or None


def _integers(name: str, values: list[str]) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in values)
    except ValueError as error:
        raise ValueError(f"--{name}={','.join(values)}: integers expected") from error


def configs_from_flags(values: flags.FlagValues, num_classes: int):
    """Turns parsed flags into (model, train data, eval data, train, runtime) configs."""
    train_data = DataConfig(
        root=values.datadir,
        years=tuple(values.train_on),
        partition="train",
        fold=values.fold,
        temporal_samples=_optional(values.temporal_samples),
        batch_size=values.batchsize,
        training=True,
        augment=values.augment,
        skip_corrupt=values.skip_corrupt,
        cloud_injection=values.cloud_injection,
        seed=values.data_seed,
        deterministic=values.deterministic,
    )
    eval_data = dataclasses.replace(
        train_data,
        years=tuple(values.eval_on or values.train_on),
        partition=values.eval_partition,
        temporal_samples=None,  # as the original: validate on all observations
        batch_size=values.eval_batchsize or values.batchsize,
        training=False,
        augment=False,
        cloud_injection=0.0,
    )
    model = model_config.ModelConfig(
        num_classes=num_classes,
        convcell=values.convcell,
        convrnn_filters=values.convrnn_filters,
        convrnn_kernel=values.convrnn_kernel,
        convrnn_layers=values.convrnn_layers,
        bidirectional=values.bidirectional,
        normalization=values.normalization,
        normalization_scope=values.normalization_scope,
        padding=values.padding,
        peepholes=values.peepholes,
        aggr_strat=values.aggr_strat,
        head=values.head,
        date_harmonics=values.date_harmonics,
        pixelwise=values.pixelwise,
        dropout=values.dropout,
        unroll=values.unroll,
        tile_size=_optional(values.tile_size),
        attention_widths=_integers("attention_widths", values.attention_widths),
        attention_decoder_widths=_integers(
            "attention_decoder_widths", values.attention_decoder_widths
        ),
        attention_heads=values.attention_heads,
        attention_key_dim=values.attention_key_dim,
        attention_d_model=values.attention_d_model,
        patch_size=values.patch_size,
    )
    train = train_config.TrainConfig(
        optimizer=values.optimizer,
        learning_rate=values.learning_rate,
        adam_epsilon=values.adam_epsilon,
        weight_decay=values.weight_decay,
        clipnorm=_optional(values.clipnorm),
        class_weight_power=values.class_weight_power,
        ema_decay=values.ema_decay,
        schedule=values.schedule,
        warmup_steps=values.warmup_steps,
        decay_rate=values.decay_rate,
        decay_steps=_optional(values.decay_steps),
        epochs=values.epochs,
        steps_per_epoch=_optional(values.steps_per_epoch),
        train_steps=_optional(values.train_steps),
        eval_every=_optional(values.eval_every),
        checkpoint_every=_optional(values.checkpoint_every),
        summary_every=values.summary_every,
        max_eval_batches=_optional(values.max_eval_batches),
        num_image_tiles=values.num_image_tiles,
        keep_checkpoints=values.keep_checkpoints,
        seed=values.seed,
        standardize_bands=values.standardize_bands,
    )
    runtime = train_config.RuntimeConfig(
        strategy=values.strategy,
        precision=values.precision,
        jit_compile=values.jit_compile,
        profile_steps=values.profile,
    )
    for config in (model, train_data, eval_data, train, runtime):
        config.validate()
    return model, train_data, eval_data, train, runtime


def write_flags(path: str) -> None:
    """Writes the resolved flags of this module (not absl's or TensorFlow's) as a flagfile."""
    module_flags = FLAGS.get_flags_for_module(sys.modules[__name__])
    lines = sorted(flag.serialize() for flag in module_flags if flag.value is not None)
    header = "# Resolved flags of this run: python -m mtlcc_tf.train --flagfile=<this file>\n"
    files.write_text(path, header + "\n".join(line for line in lines if line) + "\n")


def _usage_exit(error: Exception) -> NoReturn:
    # One line, not absl's usage text (every flag of the module) above it.
    sys.exit(f"train: {error}\n(python -m mtlcc_tf.train --helpfull lists every flag)")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags need --name=value")
    # Fail fast: the flags, the dataset root and the model directory are checked before
    # TensorFlow loads (seconds), the records before the strategy and the data are built.
    try:
        root = dataset_root.read_root(FLAGS.datadir)  # dataset.ini and classes.txt, read once
        classes = root.classes
        model, train_data, eval_data, train, runtime = configs_from_flags(
            FLAGS, classes.num_classes
        )
        if os.path.exists(FLAGS.model_dir) and not os.path.isdir(FLAGS.model_dir):
            raise ValueError(f"--model_dir={FLAGS.model_dir} is a file, not a folder")
        # Before flags.txt is replaced: a model directory holds one model.
        if train.standardize_bands:
            model = model_dir_lib.with_run_band_statistics(FLAGS.model_dir, model)
        model_dir_lib.check_resumable(FLAGS.model_dir, model, classes)
    except (ValueError, dataset_root.DatasetError) as error:
        _usage_exit(error)
    import tensorflow as tf  # noqa: PLC0415 - after the checks above

    from data_pipeline import input_pipeline  # noqa: PLC0415
    from mtlcc_tf import distribute, train_lib  # noqa: PLC0415

    try:
        distribute.split_cpu(FLAGS.cpu_devices)  # before any TensorFlow op
        splits = (
            input_pipeline.list_split_files(train_data, root),
            input_pipeline.list_split_files(eval_data, root),
        )
        samples, nobs = train_data.temporal_samples, splits[0].time_steps
        if samples is not None and samples > nobs:
            if FLAGS["temporal_samples"].present:
                raise ValueError(
                    f"--temporal_samples={samples} exceeds the {nobs} time steps per record of "
                    f"{FLAGS.datadir} (nobs in dataset.ini); use at most that, or 0 for all"
                )
            # The default asks for more steps than the records hold: take them all.
            logging.info("the records hold %d time steps: training on all of them", nobs)
            train_data = dataclasses.replace(train_data, temporal_samples=None)
        if runtime.strategy == "multi_worker":
            distribute.check_tf_config()
    except (ValueError, dataset_root.DatasetError) as error:
        _usage_exit(error)
    if runtime.strategy == "multi_worker":
        try:
            distribute.wait_for_peers(FLAGS.connect_timeout)
        except distribute.PeersMissingError as error:
            sys.exit(f"train: {error} (or raise --connect_timeout)")
        except ValueError as error:
            sys.exit(f"train: {error}")
    # TensorFlow's INFO lines (one per checkpoint and per all-reduce) drown the progress.
    console.quiet_tensorflow_info()
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()

    try:
        result = train_lib.train_and_evaluate(
            model,
            train_data,
            eval_data,
            train,
            runtime,
            FLAGS.model_dir,
            splits=splits,
            # Once the run has started or resumed: a resume that fails keeps the old flags.txt.
            on_start=lambda: write_flags(os.path.join(FLAGS.model_dir, "flags.txt")),
        )
    except (ValueError, FloatingPointError) as error:
        # E.g. a checkpoint that cannot be restored, or a non-finite loss; the message names it.
        sys.exit(f"train: {error}")
    if result.stopped:
        logging.warning(
            "stopped at step %d of %d; run again to resume", result.step, result.total_steps
        )
        sys.exit(EXIT_STOPPED)
    logging.info("finished at step %d; best checkpoint in %s/best", result.step, FLAGS.model_dir)


if __name__ == "__main__":
    app.run(main)
