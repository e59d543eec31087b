"""Custom CPU kernels of mtlcc-tf, compiled on first use and cached.

- `ln_lstm_cell` fuses the elementwise part of a layer-normalised ConvLSTM step (gate
  normalisation, activations, cell update and cell normalisation) into one forward and one
  backward kernel: as graph ops that part is about thirty memory-bound passes over gate-sized
  tensors per step, and it made our cell slower than the stock `keras.layers.ConvLSTM2D`,
  which normalises nothing (benchmarks/README.md).
- `ln_gru_gates` and `ln_gru_output` do the same for the two elementwise parts of a
  layer-normalised ConvGRU step (its candidate convolution of r * h sits between them).
- `reflect_pad` is the original's reflect padding of the convolutions' inputs as a copy,
  several times faster than TensorFlow's MirrorPad and its gradient.

The kernels (`kernels.cc`) are built with the machine's C++ compiler against the installed
TensorFlow the first time they are needed (about 10 s), into `$MTLCC_TF_CACHE` (default
`~/.cache/mtlcc_tf`), keyed by the source, TensorFlow's version, the compiler and its flags and
the CPU's features, and loaded from there afterwards (a damaged cached file is built again).
Where they cannot be built (no compiler, other platform) `available()` is False, a warning says
why, and the cells use graph ops, which compute the same. `MTLCC_TF_FUSED=0` turns them off.
"""

import contextlib
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys

import tensorflow as tf

from data_pipeline import files

_SOURCE = pathlib.Path(__file__).with_name("kernels.cc")
# -march=native: the cache lives on the machine that compiled it. Eigen's AVX512-FP16 code
# does not build with GCC 12, and this kernel has no half-precision code anyway.
_OPTIMIZATION_FLAGS = ["-O3", "-march=native", "-mno-avx512fp16"]


def cache_dir() -> pathlib.Path:
    """Where built kernels and measured facts about this machine are cached."""
    root = os.environ.get("MTLCC_TF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mtlcc_tf"
    )
    return pathlib.Path(root)


_COMPILE_TIMEOUT_SECONDS = 600


def _compiler() -> list[str] | None:
    """The compiler's command: $CXX (may hold arguments, e.g. 'ccache g++'), g++ or c++."""
    if os.environ.get("CXX"):
        return shlex.split(os.environ["CXX"])
    found = shutil.which("g++") or shutil.which("c++")
    return [found] if found else None


def _cpu_features() -> bytes:
    """The CPU's feature flags: with -march=native, a library is only for CPUs like this one
    (a cache shared between machines must not hand one CPU's build to another)."""
    try:
        with open("/proc/cpuinfo", "rb") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(b"flags")), b"")
    except OSError:
        return platform.processor().encode()


def _flags(compiler: list[str]) -> list[str]:
    flags = list(_OPTIMIZATION_FLAGS)
    try:
        probe = subprocess.run(
            [*compiler, "-mno-avx512fp16", "-x", "c++", "-E", "-", "-o", os.devnull],
            input=b"",
            capture_output=True,
            check=False,
            timeout=_COMPILE_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(
            f"cannot run the C++ compiler {shlex.join(compiler)!r}: {error}"
        ) from error
    if probe.returncode != 0:  # a compiler that does not know the option
        flags.remove("-mno-avx512fp16")
    return flags + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()


def build(verbose: bool = False, rebuild: bool = False) -> pathlib.Path:
    """Compiles the kernel library unless the cache has it; returns the library's path.

    Args:
        verbose: Say on stderr when compiling.
        rebuild: Compile even if the cache has the library (e.g. a damaged one).

    Raises:
        RuntimeError: No compiler, an unsupported platform, or the compiler failed (its output
            is in the message).
    """
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(
            f"fused kernels are built on x86-64 Linux only, not {platform.platform()}"
        )
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    flags = _flags(compiler)
    key = hashlib.sha256(
        b"\0".join(
            [_SOURCE.read_bytes(), tf.__version__.encode(), _cpu_features()]
            + [part.encode() for part in compiler + flags]
        )
    ).hexdigest()[:16]
    library = cache_dir() / f"kernels-{key}.so"
    if library.exists() and not rebuild:
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(
            f"[mtlcc_tf.ops] compiling {_SOURCE.name} into {library} (about 10 s)", file=sys.stderr
        )
    # Compile to a temporary name and rename: concurrent processes never load a partial file.
    with files.atomic_path(str(library)) as partial:
        command = [*compiler, "-shared", "-fPIC", "-Wno-deprecated-declarations", str(_SOURCE)]
        command += ["-o", partial] + flags
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                check=False,
                timeout=_COMPILE_TIMEOUT_SECONDS,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"compiling {_SOURCE} failed: {error}") from error
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling {_SOURCE} failed:\n{shlex.join(command)}\n{result.stderr[-4000:]}"
            )
    return library


@functools.cache
def _module():
    """The loaded op library, or None (with one warning) where it cannot be built or loaded."""
    if os.environ.get("MTLCC_TF_FUSED", "1") == "0":
        return None
    try:
        library = build(verbose=True)
        try:
            return tf.load_op_library(str(library))
        except (OSError, tf.errors.OpError):  # a damaged cached file: build it again, once
            return tf.load_op_library(str(build(verbose=True, rebuild=True)))
    except (RuntimeError, OSError, tf.errors.OpError) as error:
        logging.getLogger(__name__).warning(
            "fused CPU kernels unavailable, using graph ops (slower): %s", error
        )
        return None


def _loaded():
    """The op library; RuntimeError where it is not available."""
    module = _module()
    if module is None:
        raise RuntimeError("the fused kernels are not available (see the log)")
    return module


def available() -> bool:
    """Whether the fused kernels are built and loaded (builds them on the first call)."""
    return _module() is not None


_disabled_depth = 0


@contextlib.contextmanager
def disabled():
    """Within this context, cells traced or run use graph ops, not the fused kernels.

    For graphs that must not contain custom ops, such as exported SavedModels (a server would
    need this library loaded; `mtlcc_tf.export` saves inside this context, a bare
    `tf.saved_model.save` of a model does not), and for second-order gradients (the backward
    kernels have no gradients themselves). Only functions traced inside the context are
    affected: a `tf.function` traced before keeps the kernels. The switch is process-wide, not
    per thread.
    """
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


def _tracing_for_xla() -> bool:
    """Whether the graph being built is XLA-compiled (`tf.function(jit_compile=True)`)."""
    if tf.executing_eagerly():
        return False
    try:  # TensorFlow's own test for it; private, so fail open to graph ops.
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):
        return True


@functools.cache
def _gpu_visible() -> bool:
    # Asked once per step while tracing (and every step in eager mode); fixed once TF runs.
    return bool(tf.config.list_logical_devices("GPU"))


def use_fused() -> bool:
    """Whether cells should call the fused kernels now.

    True when the kernels are built, no GPU is visible, nothing is XLA-compiled (no XLA kernel)
    and no `disabled()` context is open.
    """
    return _disabled_depth == 0 and not _gpu_visible() and not _tracing_for_xla() and available()


def ln_lstm_cell(
    gates: tf.Tensor,
    cell: tf.Tensor,
    gate_scale: tf.Tensor,
    gate_offset: tf.Tensor,
    cell_scale: tf.Tensor,
    cell_offset: tf.Tensor,
    epsilon: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One layer-normalised ConvLSTM step after its convolutions, fused (CPU only).

    Computes what `ConvLSTMCell.step` computes with normalisation and without peepholes from
    the gate pre-activations: i, f, g, o = LN(gates) per gate; c = LN(f * cell + i * g);
    h = o * tanh(c). Differentiable (first order) in every input.

    Args:
        gates: [batch, height, width, 4 * filters] float32, input, forget, candidate, output.
        cell: [batch, height, width, filters] float32, the previous cell state.
        gate_scale: [4 * filters] per-channel scale of the normalised gates.
        gate_offset: [4 * filters] per-channel offset of the normalised gates.
        cell_scale: [filters] per-channel scale of the normalised cell.
        cell_offset: [filters] per-channel offset of the normalised cell.
        epsilon: Added to the variances.

    Returns:
        The new hidden and cell states, [batch, height, width, filters] float32.
    """
    module = _loaded()

    @tf.custom_gradient
    def fused(gates, cell_prev, gate_scale, gate_offset, cell_scale, cell_offset):
        hidden, cell, activations, stats = module.mtlcc_ln_lstm_forward(
            gates, cell_prev, gate_scale, gate_offset, cell_scale, cell_offset, epsilon=epsilon
        )

        def gradient(grad_hidden, grad_cell):
            grad_hidden = tf.zeros_like(hidden) if grad_hidden is None else grad_hidden
            grad_cell = tf.zeros_like(cell) if grad_cell is None else grad_cell
            return module.mtlcc_ln_lstm_backward(
                grad_hidden,
                grad_cell,
                gates,
                cell_prev,
                gate_scale,
                cell_scale,
                activations,
                cell,
                stats,
            )

        return (hidden, cell), gradient

    return fused(gates, cell, *_tensors(gate_scale, gate_offset, cell_scale, cell_offset))


def _tensors(*values) -> list[tf.Tensor]:
    # Variables are read outside the tf.custom_gradient functions, which would otherwise want
    # their gradients through a `variables` argument.
    return [tf.convert_to_tensor(value) for value in values]


def ln_gru_gates(
    gates: tf.Tensor, hidden: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor, epsilon: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """The gates of a layer-normalised ConvGRU step, fused (CPU only).

    r, u = sigmoid(LN(gates)) per gate, as `ConvGRUCell.step` with normalisation.

    Args:
        gates: [batch, height, width, 2 * filters] float32 pre-activations, reset then update.
        hidden: [batch, height, width, filters] float32, the previous state h.
        scale: [2 * filters] per-channel scale of the normalised gates.
        offset: [2 * filters] per-channel offset of the normalised gates.
        epsilon: Added to the variances.

    Returns:
        The update gate u and r * h, both [batch, height, width, filters].
    """
    module = _loaded()

    @tf.custom_gradient
    def fused(gates, hidden, scale, offset):
        update, reset_hidden, reset, stats = module.mtlcc_ln_gru_gates_forward(
            gates, hidden, scale, offset, epsilon=epsilon
        )

        def gradient(grad_update, grad_reset_hidden):
            grad_update = tf.zeros_like(update) if grad_update is None else grad_update
            if grad_reset_hidden is None:
                grad_reset_hidden = tf.zeros_like(reset_hidden)
            return module.mtlcc_ln_gru_gates_backward(
                grad_update, grad_reset_hidden, gates, hidden, scale, reset, update, stats
            )

        return (update, reset_hidden), gradient

    return fused(gates, hidden, *_tensors(scale, offset))


def ln_gru_output(
    candidate: tf.Tensor,
    hidden: tf.Tensor,
    update: tf.Tensor,
    scale: tf.Tensor,
    offset: tf.Tensor,
    epsilon: float,
) -> tf.Tensor:
    """The new state of a layer-normalised ConvGRU step, fused (CPU only).

    u * h + (1 - u) * tanh(LN(candidate)), as `ConvGRUCell.step` with normalisation.

    Args:
        candidate: [batch, height, width, filters] float32 candidate pre-activation.
        hidden: [batch, height, width, filters] float32, the previous state h.
        update: The update gate u from `ln_gru_gates`.
        scale: [filters] per-channel scale of the normalised candidate.
        offset: [filters] per-channel offset of the normalised candidate.
        epsilon: Added to the variance.

    Returns:
        The new hidden state, [batch, height, width, filters].
    """
    module = _loaded()

    @tf.custom_gradient
    def fused(candidate, hidden, update, scale, offset):
        new_hidden, tanh_candidate, stats = module.mtlcc_ln_gru_output_forward(
            candidate, hidden, update, scale, offset, epsilon=epsilon
        )

        def gradient(grad_new_hidden):
            return module.mtlcc_ln_gru_output_backward(
                grad_new_hidden, candidate, hidden, update, scale, tanh_candidate, stats
            )

        return new_hidden, gradient

    return fused(candidate, hidden, update, *_tensors(scale, offset))


def reflect_pad(inputs: tf.Tensor, border: int) -> tf.Tensor:
    """`tf.pad` of height and width by `border` pixels with mode 'REFLECT', as one CPU kernel.

    TensorFlow's MirrorPad and its gradient are several times slower than these two copies
    (a traced ConvLSTM direction in benchmarks/cell_costs.py).

    Args:
        inputs: [batch, height, width, channels] float32, height and width above `border`.
        border: Pixels added on each side.

    Returns:
        [batch, height + 2 * border, width + 2 * border, channels].
    """
    module = _loaded()

    @tf.custom_gradient
    def pad(inputs):
        def gradient(grad):
            return module.mtlcc_reflect_pad_grad(grad, border=border)

        return module.mtlcc_reflect_pad(inputs, border=border), gradient

    return pad(inputs)
