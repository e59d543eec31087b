"""What the machine offers for training speed: CPU instruction sets, GPUs, and the precision to use.

`--precision=auto` (the default) resolves here. The choice follows measurements, not data
sheets (benchmarks/train_step.py, figures in benchmarks/README.md):

- CPUs with AMX (amx_bf16; Intel Sapphire Rapids and later): `mixed_bfloat16` trained our
  ConvLSTM 2.17x faster than float32 (13.76 vs 6.33 samples/s).
- CPUs with AVX512_BF16 but no AMX differ: bf16 trained at 0.62x float32 on such a Xeon, but at
  2.4x on an AMD EPYC (Zen 4). There `auto` measures: a recurrent-sized convolution, forward
  and backward, in both precisions (about a second), cached per CPU and TensorFlow version in
  `$MTLCC_TF_CACHE`; bf16 is chosen when it is at least 1.3x faster.
- CPUs with neither (AVX2 only): bf16 is emulated, 0.06x float32.
- GPUs of compute capability 8.0 and later (A100, H100, H200, RTX 30xx and later) have bf16
  tensor cores: `mixed_bfloat16`, which needs no loss scaling. Older GPUs: float32 (their
  tensor cores take float16: `--precision=mixed_float16` is the manual choice there).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from absl import logging

from data_pipeline import files
from mtlcc_tf.train_config import RuntimeConfig

AUTO = "auto"
# CPU flags (as /proc/cpuinfo spells them) that decide the precision.
SPEED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
# The first GPU generation with bfloat16 tensor cores (Ampere).
BFLOAT16_COMPUTE_CAPABILITY = (8, 0)
# bf16 must be this much faster than float32 in the probe to be chosen (the probe times the
# convolutions only; the rest of a step stays float32).
PROBE_SPEEDUP = 1.3

# CPU kinds, from the fastest bf16 path to none.
CPU_AMX = "amx"
CPU_AVX512_BF16 = "avx512_bf16"
CPU_AVX2 = "avx2"
CPU_OTHER = "other"


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and its instruction-set flags (lower case, as in /proc/cpuinfo)."""

    model: str
    flags: frozenset[str]

    @property
    def kind(self) -> str:
        """'amx', 'avx512_bf16', 'avx2' or 'other': what decides bf16's speed here."""
        if "amx_bf16" in self.flags:
            return CPU_AMX
        if "avx512_bf16" in self.flags:
            return CPU_AVX512_BF16
        if "avx2" in self.flags:
            return CPU_AVX2
        return CPU_OTHER

    def speed_flags(self) -> dict[str, bool]:
        """{flag: present} for the flags that decide the precision (for logs and benchmarks)."""
        return {flag: flag in self.flags for flag in SPEED_FLAGS}


def parse_cpuinfo(text: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's entries)."""
    model, flags = "unknown CPU", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags)


def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CpuInfo; an unknown CPU without flags where /proc/cpuinfo is missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_cpuinfo(handle.read())
    except OSError:
        return CpuInfo("unknown CPU", frozenset())


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible GPUs ((0, 0) where TensorFlow does not say)."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


@dataclasses.dataclass(frozen=True)
class Precision:
    """A resolved precision: the Keras policy name, what was asked for and why it was chosen."""

    policy: str
    requested: str
    reason: str


def resolve_precision(
    requested: str,
    cpu: CpuInfo,
    gpu_capabilities: Sequence[tuple[int, int]],
    probe: Callable[[], float] | None = None,
) -> Precision:
    """Turns `auto` into the precision measured to train fastest here; keeps any other value.

    Args:
        requested: 'auto' or a Keras policy ('float32', 'mixed_float16', 'mixed_bfloat16').
        cpu: The CPU (only used when no GPU is visible).
        gpu_capabilities: Compute capabilities of the visible GPUs; empty on CPU.
        probe: Returns bf16's speed-up over float32 on this CPU; called only for CPUs with
            AVX512_BF16 and no AMX. None: such CPUs get float32 without measuring.
    """
    if requested != AUTO:
        return Precision(requested, requested, "set explicitly")
    if gpu_capabilities:
        oldest = min(tuple(capability) for capability in gpu_capabilities)
        if oldest >= BFLOAT16_COMPUTE_CAPABILITY:
            return Precision(
                "mixed_bfloat16", AUTO, f"GPU with bf16 tensor cores (compute capability {oldest})"
            )
        return Precision(
            "float32",
            AUTO,
            f"GPU of compute capability {oldest} has no bf16 tensor cores "
            "(--precision=mixed_float16 may be faster there)",
        )
    if cpu.kind == CPU_AMX:
        return Precision(
            "mixed_bfloat16", AUTO, "CPU with AMX (bf16 measured 2.2x float32 on such a CPU)"
        )
    if cpu.kind == CPU_AVX512_BF16 and probe is not None:
        speedup = probe()
        measured = (
            f"CPU with AVX512_BF16, no AMX: bf16 convolutions measured {speedup:.2f}x float32"
        )
        if speedup >= PROBE_SPEEDUP:
            return Precision("mixed_bfloat16", AUTO, measured)
        return Precision("float32", AUTO, measured)
    slower = {
        CPU_AVX512_BF16: "CPU with AVX512_BF16 but no AMX (bf16 measured 0.6x float32 on a Xeon)",
        CPU_AVX2: "CPU without bf16 instructions (bf16 is emulated: 0.06x float32)",
    }
    return Precision("float32", AUTO, slower.get(cpu.kind, "CPU without bf16 instructions"))


def speed_warning(
    precision: str,
    jit_compile: bool,
    cpu: CpuInfo,
    gpu_capabilities: Iterable[tuple[int, int]],
    auto: str | None = None,
) -> str | None:
    """A warning for settings measured to slow training down on this machine, or None.

    On GPUs nothing is flagged (both reduced precision and XLA are what makes them fast). On
    CPUs: float16; a precision other than what `auto` chose by measuring; bf16 on CPUs that
    emulate it; float32 on CPUs with AMX; and XLA.

    Args:
        precision: The Keras policy the run uses.
        jit_compile: Whether the training step is XLA-compiled.
        cpu: This machine's CPU.
        gpu_capabilities: Compute capabilities of the visible GPUs; empty on CPU.
        auto: The precision `auto` resolves to here, where known.
    """
    if list(gpu_capabilities):
        return None
    slow = []
    if precision == "mixed_float16":
        slow.append("precision mixed_float16 (CPUs have no fast float16 convolutions)")
    elif auto is not None and precision != auto:
        slow.append(f"precision {precision} (--precision=auto measured {auto} faster here)")
    elif precision == "mixed_bfloat16" and cpu.kind not in (CPU_AMX, CPU_AVX512_BF16):
        slow.append(
            "precision mixed_bfloat16 (measured 0.06x the float32 speed on a CPU without bf16 "
            "instructions, like this one)"
        )
    elif precision == "float32" and cpu.kind == CPU_AMX:
        slow.append(
            "precision float32 on a CPU with AMX (mixed_bfloat16 measured 2.2x faster: "
            "--precision=auto picks it)"
        )
    if jit_compile:
        slow.append("jit_compile (XLA made a ConvLSTM training step ~20x slower on CPU)")
    if not slow:
        return None
    return "training on CPU with " + " and ".join(slow)


def _probe_cache_path(cpu: CpuInfo) -> str:
    import tensorflow as tf

    from mtlcc_tf import ops

    key = hashlib.sha256(
        json.dumps([cpu.model, sorted(cpu.flags), tf.__version__]).encode()
    ).hexdigest()[:16]
    return os.path.join(str(ops.cache_dir()), f"bf16-probe-{key}.json")


def measure_bfloat16_speedup(repeats: int = 5) -> float:
    """bf16's speed-up over float32 for a ConvLSTM-sized convolution, forward and backward.

    The shape is a 64-filter LSTM's recurrent convolution at the reference tile size: batch 4,
    24 x 24 px, 15 + 64 input channels, 3 x 3 kernel, 256 output channels. Best of `repeats`.
    """
    import tensorflow as tf

    def timed(dtype: tf.DType) -> float:
        inputs = tf.random.stateless_uniform([4, 26, 26, 79], [1, 2], dtype=tf.float32)
        kernel = tf.random.stateless_uniform([3, 3, 79, 256], [3, 4], dtype=tf.float32)

        @tf.function
        def step():
            x, k = tf.cast(inputs, dtype), tf.cast(kernel, dtype)
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                y = tf.nn.conv2d(x, k, 1, "VALID")
                loss = tf.reduce_sum(tf.cast(y, tf.float32))
            return tape.gradient(loss, [x, k])

        step()  # trace and warm up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(3):
                [gradient.numpy() for gradient in step()]
            best = min(best, time.perf_counter() - start)
        return best

    return timed(tf.float32) / timed(tf.bfloat16)


def cached_bfloat16_speedup(cpu: CpuInfo) -> float:
    """`measure_bfloat16_speedup`, measured once per CPU and TensorFlow version and cached."""
    path = _probe_cache_path(cpu)
    try:
        with open(path, encoding="utf-8") as handle:
            return float(json.load(handle)["bfloat16_speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speedup = measure_bfloat16_speedup()
    try:
        files.write_json(path, {"cpu": cpu.model, "bfloat16_speedup": speedup}, indent=None)
    except OSError:
        pass  # a read-only cache measures again next time
    return speedup


def resolve_runtime(runtime_config: RuntimeConfig) -> tuple[RuntimeConfig, dict[str, Any]]:
    """Resolves `precision='auto'` for this machine, logs the choice and warns of slow settings.

    Returns:
        The runtime config with a concrete precision, and what config.json keeps of the machine
        and of how that precision was chosen (informational).
    """
    cpu = cpu_info()
    gpus = gpu_compute_capabilities()
    probe = functools.partial(cached_bfloat16_speedup, cpu)
    precision = resolve_precision(runtime_config.precision, cpu, gpus, probe)
    where = f"{len(gpus)} GPU(s)" if gpus else f"CPU {cpu.model!r} ({cpu.kind})"
    logging.info("precision %s on %s: %s", precision.policy, where, precision.reason)
    auto = precision.policy
    if precision.requested != AUTO:  # the probe is measured once per CPU and cached
        auto = resolve_precision(AUTO, cpu, gpus, probe).policy
    warning = speed_warning(precision.policy, runtime_config.jit_compile, cpu, gpus, auto=auto)
    if warning:
        logging.warning(warning)
    record = {
        "precision": precision.policy,
        "precision_requested": precision.requested,
        "precision_reason": precision.reason,
        "cpu": cpu.model,
        "cpu_flags": cpu.speed_flags(),
        "gpu_compute_capabilities": [list(capability) for capability in gpus],
        # Results differ in the last digits with and without the fused kernels.
        "fused_kernels": _fused_kernels_in_use(),
    }
    return dataclasses.replace(runtime_config, precision=precision.policy), record


def resolve_serving_precision(requested: str) -> str:
    """`requested` ('auto', 'float32' or 'mixed_bfloat16') as a Keras policy for inference on
    this machine (`auto` as for training: `resolve_precision`); logs the choice."""
    cpu = cpu_info()
    gpus = gpu_compute_capabilities()
    probe = functools.partial(cached_bfloat16_speedup, cpu)
    precision = resolve_precision(requested, cpu, gpus, probe)
    logging.info("inference precision %s: %s", precision.policy, precision.reason)
    return precision.policy


def _fused_kernels_in_use() -> bool:
    from mtlcc_tf import ops

    return ops.use_fused()
