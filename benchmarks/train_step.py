"""Training-step throughput of the encoders against the stock ConvLSTM2D and the matmul peak.

Run from the repository root, e.g.
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_step.py
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_step.py --steps 3 --warmup 1
On a GPU, at one of the paper's shapes, with mixed precision and XLA:
    python benchmarks/train_step.py --cells gru --size 24 --filters 128 \
        --precisions float32,mixed_float16,mixed_bfloat16 --jit-compile both --matmul-size 8192
The last printed line is one JSON object with every figure.
"""

import argparse
import dataclasses
import json
import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
import train_step_figures  # benchmarks/, beside this script

from mtlcc_tf import hardware, ops
from mtlcc_tf.layers import ClassificationHead
from mtlcc_tf.model_config import ModelConfig
from mtlcc_tf.models import build_model

# Encoders without recurrence, timed like the cells (samples/s, no FLOP formula).
ATTENTION_CELLS = ("utae", "tsvit")
# Gates per cell: convolution output channels = gates * filters.
GATES = {
    "lstm": 4,
    "lstm_graph_ops": 4,
    "lstm_stock_math": 4,
    "gru": 3,
    "keras_convlstm": 4,
    "keras_convlstm_unmasked": 4,
}
# The dtype of each policy's matmul peak.
MATMUL_DTYPES = {
    "float32": tf.float32,
    "mixed_bfloat16": tf.bfloat16,
    "mixed_float16": tf.float16,
}
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, by the first
# name that occurs in the device's name (SXM parts; the H100 PCIe card is slower).
NOMINAL_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
FLOP_FORMULA = (
    "train FLOPs/sample = directions * time * 2*H*W*k^2*gates*filters*(2*channels + 3*filters)"
    " + 3 * 2*H*W*3^2*(directions*filters)*classes; gates: lstm 4, gru 3; a convolution costs"
    " its forward FLOPs 3 times in training (forward, input and weight gradients), except over"
    " the inputs, whose gradient is not computed (2 times); elementwise work not counted"
)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--time", type=int, default=30)
    parser.add_argument("--size", type=int, default=24, help="tile height and width")
    parser.add_argument("--channels", type=int, default=15)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=17)
    parser.add_argument(
        "--cells",
        default="lstm,gru,keras_convlstm,lstm_graph_ops,lstm_stock_math,keras_convlstm_unmasked",
    )
    parser.add_argument(
        "--precisions",
        default="float32,mixed_bfloat16",
        help="comma-separated Keras dtype policies: float32, mixed_float16, mixed_bfloat16",
    )
    parser.add_argument(
        "--jit-compile",
        choices=("off", "on", "both"),
        default="off",
        help="XLA-compile the forward and backward pass (as `--jit_compile` of mtlcc_tf.train);"
        " 'both' times every model with and without (XLA is ~20x slower on CPU)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="8192 to reach a large GPU's peak"
    )
    parser.add_argument(
        "--nominal-bf16-tflops",
        type=float,
        default=None,
        help="the accelerator's dense bf16 peak from its data sheet (default: looked up by"
        f" name for {', '.join(NOMINAL_BF16_TFLOPS)})",
    )
    args = parser.parse_args()
    unknown = set(args.precisions.split(",")) - set(MATMUL_DTYPES)
    if unknown:
        parser.error(f"--precisions: unknown {sorted(unknown)}; known: {sorted(MATMUL_DTYPES)}")
    unknown = set(args.cells.split(",")) - set(GATES) - set(ATTENTION_CELLS)
    if unknown:
        known = sorted([*GATES, *ATTENTION_CELLS])
        parser.error(f"--cells: unknown {sorted(unknown)}; known: {known}")
    return args


def gpu_name() -> str | None:
    """The first visible GPU's name, or None without one."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


def time_calls(function, repeats: int) -> list[float]:
    """Wall times of `repeats` calls of `function()`, which must block until it is done."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def make_matmul(size: int, dtype: tf.DType):
    """A blocking square matmul; its best GFLOP/s is the practical peak for `dtype`."""
    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    matmul = tf.function(tf.matmul)
    return lambda: matmul(a, b).numpy()


def train_flops_per_sample(args: argparse.Namespace, cell: str) -> float | None:
    """FLOPs of one training sample of a recurrent cell (FLOP_FORMULA); None for the attention
    encoders ('utae', 'tsvit'), whose cost the formula does not describe (samples/s only)."""
    if cell not in GATES:
        return None
    directions = 2
    pixels = args.size * args.size
    # Per step and direction: forward and weight gradient over [x_t, h], input gradient over h
    # only (the inputs are data; TensorFlow prunes their gradient).
    recurrent = (
        2
        * pixels
        * args.kernel**2
        * GATES[cell]
        * args.filters
        * (2 * args.channels + 3 * args.filters)
    )
    head = 2 * pixels * 9 * directions * args.filters * args.num_classes
    return directions * args.time * recurrent + 3 * head


def build_benchmark_model(args: argparse.Namespace, cell: str) -> keras.Model:
    """The model of `build_model` for `cell`, or a named variant.

    'lstm_graph_ops' is `lstm` (run without mtlcc_tf.ops' fused kernels by `make_train_step`),
    'lstm_stock_math' is our ConvLSTM doing the stock layer's math (no normalisation, zero
    padding); 'keras_convlstm_unmasked' is the bare stock layer without sequence lengths.
    """
    if cell == "keras_convlstm_unmasked":
        # The stock layer at its fastest: no mask, so it ignores sequence lengths.
        inputs = keras.Input((args.time, args.size, args.size, args.channels), name="inputs")
        recurrent = keras.layers.ConvLSTM2D(args.filters, args.kernel, padding="same", unroll=True)
        features = keras.layers.Bidirectional(recurrent)(inputs)
        logits = ClassificationHead(args.num_classes, padding="same")(features)
        return keras.Model({"inputs": inputs}, logits)
    config = ModelConfig(
        num_classes=args.num_classes,
        input_channels=args.channels,
        convcell="lstm" if cell in ("lstm_graph_ops", "lstm_stock_math") else cell,
        convrnn_filters=args.filters,
        convrnn_kernel=args.kernel,
    )
    if cell in ("keras_convlstm", "lstm_stock_math"):
        # The stock layer's math: no normalisation, zero padding.
        config = dataclasses.replace(config, normalization=False, padding="same")
    if cell == "keras_convlstm":
        config = dataclasses.replace(config, tile_size=args.size)
    if cell == "tsvit":
        # --filters is its token width; two temporal and two spatial blocks, logits head.
        config = dataclasses.replace(config, convrnn_layers=2, head="logits")
    return build_model(config)


def make_train_step(args: argparse.Namespace, cell: str, precision: str, jit_compile: bool):
    """A compiled training step (forward, backward, Adam) for one cell and dtype policy.

    As in `mtlcc_tf.train`: under `mixed_float16` the loss is scaled (`LossScaleOptimizer`),
    and `jit_compile` XLA-compiles the forward and backward pass, not the optimizer's update.
    """
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_benchmark_model(args, cell)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    optimizer = keras.optimizers.Adam(1e-3)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_and_gradients(features, labels):
        features = {name: features[name] for name in model.input}
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(features, training=True))
            scaled_loss = optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, model.trainable_variables)

    if jit_compile:
        loss_and_gradients = tf.function(loss_and_gradients, jit_compile=True)

    @tf.function
    def train_step(features, labels):
        loss, gradients = loss_and_gradients(features, labels)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    if cell == "lstm_graph_ops":

        def graph_ops_train_step(features, labels):
            with ops.disabled():  # traced (on the first call) without the fused kernels
                return train_step(features, labels)

        return graph_ops_train_step
    return train_step


def time_variants(args: argparse.Namespace, variants: list[tuple[str, str, bool]]):
    """Seconds per training step of every variant and per matmul of every dtype.

    A variant is (cell, precision, jit_compile); the matmuls are those of float32, bfloat16
    and every other precision of the variants.
    """
    rng = np.random.default_rng(0)
    shape = (args.batch, args.time, args.size, args.size, args.channels)
    features = {
        "inputs": tf.constant(rng.random(shape, dtype=np.float32)),
        "sequence_length": tf.fill([args.batch], args.time),
    }
    labels = tf.constant(rng.integers(0, args.num_classes, shape[:1] + shape[2:4]))
    steps = {}
    for variant in variants:
        steps[variant] = make_train_step(args, *variant)
        for _ in range(args.warmup):
            steps[variant](features, labels).numpy()
    precisions = ["float32", "mixed_bfloat16"]
    precisions += [p for _, p, _ in variants if p not in precisions]
    matmuls = {p: make_matmul(args.matmul_size, MATMUL_DTYPES[p]) for p in precisions}
    # Rounds interleave the peak and the variants so that load from other processes on a
    # shared machine hits them alike.
    step_seconds = {variant: [] for variant in variants}
    matmul_seconds = {name: [] for name in matmuls}
    for _ in range(args.rounds):
        for name, matmul in matmuls.items():
            matmul()
            matmul_seconds[name] += time_calls(matmul, 5)
        for variant, step in steps.items():
            step_seconds[variant] += time_calls(
                lambda step=step: step(features, labels).numpy(), args.steps
            )
    return step_seconds, matmul_seconds


def main() -> None:
    args = parse_arguments()
    tf.get_logger().setLevel("ERROR")  # one tf.function per variant is traced on purpose
    jit = {"off": [False], "on": [True], "both": [False, True]}[args.jit_compile]
    variants = [
        (cell, precision, jit_compile)
        for cell in args.cells.split(",")
        for precision in args.precisions.split(",")
        for jit_compile in jit
    ]
    accelerator = gpu_name()
    nominal_bf16 = args.nominal_bf16_tflops
    if nominal_bf16 is None and accelerator:
        nominal_bf16 = next(
            (tflops for name, tflops in NOMINAL_BF16_TFLOPS.items() if name in accelerator), None
        )
    step_seconds, matmul_seconds = time_variants(args, variants)

    # The fastest call is the least disturbed estimate on a shared machine.
    peak = {
        name: 2 * args.matmul_size**3 / min(times) / 1e9 for name, times in matmul_seconds.items()
    }
    results = {}
    for (cell, precision, jit_compile), seconds in step_seconds.items():
        samples_per_second = args.batch / min(seconds)
        name = f"{cell}/{precision}" + ("+xla" if jit_compile else "")
        flops = train_flops_per_sample(args, cell)
        if flops is None:
            results[name] = {
                "samples_per_second": round(samples_per_second, 3),
                "median_samples_per_second": round(args.batch / statistics.median(seconds), 3),
            }
            print(f"{name:>38}: {samples_per_second:8.3f} samples/s")
            continue
        gflops = flops * samples_per_second / 1e9
        results[name] = {
            "samples_per_second": round(samples_per_second, 3),
            "median_samples_per_second": round(args.batch / statistics.median(seconds), 3),
            "gflops_per_second": round(gflops, 1),
            "fraction_of_float32_matmul_peak": round(gflops / peak["float32"], 3),
            "fraction_of_own_dtype_matmul_peak": round(gflops / peak[precision], 3),
            "fraction_of_bfloat16_matmul_peak": round(gflops / peak["mixed_bfloat16"], 3),
        }
        if nominal_bf16:
            results[name]["fraction_of_nominal_bf16_peak"] = round(gflops / nominal_bf16 / 1e3, 4)
        print(
            f"{name:>38}: {samples_per_second:8.3f} samples/s, {gflops:8.1f} GFLOP/s"
            f" ({gflops / peak['float32']:.0%} of fp32, {gflops / peak['mixed_bfloat16']:.0%}"
            " of bf16 matmul peak)"
        )
    figures = train_step_figures.ratios(results)
    cpu = hardware.cpu_info()
    targets = train_step_figures.targets_met(
        figures, cpu.kind == hardware.CPU_AMX and not accelerator
    )
    print("matmul peak, GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()))
    if nominal_bf16:
        print(f"nominal dense bf16 peak of {accelerator or 'the device'}: {nominal_bf16} TFLOP/s")
    print(f"FLOP count: {FLOP_FORMULA}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu.model,
        "cpu_flags": cpu.speed_flags(),
        "auto_precision": hardware.resolve_precision(
            "auto",
            cpu,
            hardware.gpu_compute_capabilities(),
            lambda: hardware.cached_bfloat16_speedup(cpu),
        ).policy,
        "cpu_count": os.cpu_count(),
        "gpu": accelerator,
        "nominal_bf16_tflops": nominal_bf16,
        "jit_compile": args.jit_compile,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "fused_kernels": ops.available() and not accelerator,  # CPU only
        "shape": dict(
            batch=args.batch,
            time=args.time,
            size=args.size,
            channels=args.channels,
            filters=args.filters,
            kernel=args.kernel,
            bidirectional=True,
        ),
        "steps": args.steps,
        "rounds": args.rounds,
        "matmul_peak_gflops": {key: round(value, 1) for key, value in peak.items()},
        "results": results,
        "ratios": figures,
        "targets_met": targets,
        "flop_formula": FLOP_FORMULA,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
