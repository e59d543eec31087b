"""Build, load and switch of the fused CPU kernels (`kernels.cc`): the plugin part of `ops`.

Compiled with the machine's C++ compiler against the installed TensorFlow on first use (about
10 s) into `cache_dir()`, keyed by the source, TensorFlow's version, the compiler, its flags and
the CPU's features, and loaded from there afterwards (a damaged cached file is built again).
Where they cannot be built or loaded, `available()` is False after one warning, and the cells
use graph ops. `MTLCC_TF_FUSED=0` turns them off. Whether a run used them is recorded in its
config.json (`runtime.fused_kernels`).
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


def compiler() -> list[str] | None:
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
    command_prefix = compiler()
    if command_prefix is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    flags = _flags(command_prefix)
    key = hashlib.sha256(
        b"\0".join(
            [_SOURCE.read_bytes(), tf.__version__.encode(), _cpu_features()]
            + [part.encode() for part in command_prefix + flags]
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
        command = [
            *command_prefix,
            "-shared",
            "-fPIC",
            "-Wno-deprecated-declarations",
            str(_SOURCE),
        ]
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


def loaded():
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
