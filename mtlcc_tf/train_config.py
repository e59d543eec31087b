"""TrainConfig and RuntimeConfig: how to optimise and where to run; frozen and validated."""

from __future__ import annotations

import dataclasses
import math

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
# Steps a profile waits for after the start (or resume) of training: tracing is not profiled.
PROFILE_WARMUP_STEPS = 3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule and the frequencies of checkpoints, evaluations and summaries.

    Attributes:
        optimizer: 'adam' (the original), 'adamw' or 'sgd' (with momentum 0.9).
        learning_rate: Peak learning rate (the original: 1e-2 with Adam).
        adam_epsilon: Adam's epsilon (the original set 0.9; Keras's default is 1e-7).
        weight_decay: Decoupled weight decay (adamw only).
        clipnorm: Clip each gradient to this norm; None for no clipping.
        class_weight_power: Weight each class's pixels in the loss by (its share of the
            training pixels)^-power, normalised to a mean of 1 per pixel: 0 is plain
            cross-entropy (the original), 0.5 inverse square-root frequency, 1 inverse frequency.
        ema_decay: Validate and keep as the best checkpoint an exponential moving average of
            the weights with this decay per step (`weight_average`); 0: off (the original),
            the model's own weights.
        schedule: 'constant', 'cosine' (to 0 at the last step) or 'exponential'.
        warmup_steps: Linear warm-up from 0 over this many steps (cosine and exponential).
        decay_rate: Factor per `decay_steps` of the exponential schedule.
        decay_steps: Steps per `decay_rate` factor; None means one epoch.
        epochs: Training epochs, unless `train_steps` is given.
        steps_per_epoch: Steps per epoch; None means training tiles // global batch size.
        train_steps: Total training steps; overrides `epochs`.
        eval_every: Evaluate every this many steps; None means at the end of every epoch.
        checkpoint_every: Also save the last checkpoint every this many steps; None means at
            the end of every epoch only.
        summary_every: Write training scalars every this many steps.
        max_eval_batches: Evaluate on at most this many batches; None for the whole split.
        num_image_tiles: Validation tiles shown as image panels in TensorBoard (0: none).
        keep_checkpoints: How many last checkpoints to keep.
        seed: Seed of the weight initialisation (the data has its own in DataConfig).
        standardize_bands: At the start of a new run, measure the per-band mean and standard
            deviation of the training tiles (`input_pipeline.band_statistics`) and put them in
            the model's `band_mean` / `band_std`, so the model standardises its reflectances
            (a resumed run keeps those it started with). Off: the model sees reflectances
            x 1e-4, as the original.
    """

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-7
    weight_decay: float = 0.0
    clipnorm: float | None = None
    class_weight_power: float = 0.0
    ema_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_rate: float = 0.5
    decay_steps: int | None = None
    epochs: int = 30
    steps_per_epoch: int | None = None
    train_steps: int | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    summary_every: int = 50
    max_eval_batches: int | None = None
    num_image_tiles: int = 4
    keep_checkpoints: int = 3
    seed: int = 0
    standardize_bands: bool = False

    def validate(self) -> TrainConfig:
        """Raises ValueError naming the first bad field; returns self for chaining."""

        def require(condition: bool, field: str, why: str) -> None:
            if not condition:
                raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r} is invalid: {why}")

        require(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        require(self.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
        for field in (
            "learning_rate",
            "adam_epsilon",
            "weight_decay",
            "class_weight_power",
            "ema_decay",
        ):
            require(math.isfinite(getattr(self, field)), field, "must be a finite number")
        require(self.clipnorm is None or math.isfinite(self.clipnorm), "clipnorm", "must be finite")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.adam_epsilon > 0, "adam_epsilon", "must be > 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(
            self.weight_decay == 0 or self.optimizer == "adamw",
            "weight_decay",
            "needs optimizer='adamw'",
        )
        require(self.clipnorm is None or self.clipnorm > 0, "clipnorm", "must be > 0 or None")
        require(self.class_weight_power >= 0, "class_weight_power", "must be >= 0")
        require(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(0 < self.decay_rate <= 1, "decay_rate", "must be in (0, 1]")
        for field in ("decay_steps", "steps_per_epoch", "train_steps", "eval_every"):
            value = getattr(self, field)
            require(value is None or value >= 1, field, "must be >= 1 or None")
        require(
            self.checkpoint_every is None or self.checkpoint_every >= 1,
            "checkpoint_every",
            "must be >= 1 or None",
        )
        require(
            self.max_eval_batches is None or self.max_eval_batches >= 1,
            "max_eval_batches",
            "must be >= 1 or None",
        )
        require(self.epochs >= 1, "epochs", "must be >= 1")
        require(self.summary_every >= 1, "summary_every", "must be >= 1")
        require(self.num_image_tiles >= 0, "num_image_tiles", "must be >= 0")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        return self


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the computation runs.

    Attributes:
        strategy: 'auto' (MirroredStrategy over all GPUs if there are several, else the
            default strategy), 'default', 'one_device' (the first GPU, else the CPU),
            'mirrored' (all local GPUs, or all logical CPUs) or 'multi_worker'
            (MultiWorkerMirroredStrategy; reads the cluster from TF_CONFIG).
        precision: 'auto' (the precision measured to train fastest on this machine, see
            `mtlcc_tf.hardware.resolve_precision`: mixed_bfloat16 on CPUs with AMX and on GPUs
            with bf16 tensor cores, float32 elsewhere), 'float32', 'mixed_float16' (with
            dynamic loss scaling) or 'mixed_bfloat16'.
        jit_compile: XLA-compile the forward and backward pass (slow on CPU: off by default).
        profile_steps: Record a TensorBoard profile (`model_dir/profile`) of this many training
            steps, after `PROFILE_WARMUP_STEPS` steps of warm-up (tracing); 0: no profile.
    """

    strategy: str = "auto"
    precision: str = "auto"
    jit_compile: bool = False
    profile_steps: int = 0

    def validate(self) -> RuntimeConfig:
        """Raises ValueError naming the first bad field; returns self for chaining."""
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"RuntimeConfig.strategy={self.strategy!r}: expected one of {STRATEGIES}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"RuntimeConfig.precision={self.precision!r}: expected one of {PRECISIONS}"
            )
        if self.profile_steps < 0:
            raise ValueError(f"RuntimeConfig.profile_steps={self.profile_steps}: must be >= 0")
        return self
