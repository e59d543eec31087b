#!/usr/bin/env bash
# Sets up mtlcc-tf on a fresh Debian/Ubuntu machine: system GDAL and g++, a .venv with the package
# (editable, CPU TensorFlow, dev tools) and GDAL's Python bindings built against the venv's numpy.
# Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# System packages, installed with apt-get where missing: GDAL, a C++ compiler (GDAL's Python
# bindings and the fused kernels of mtlcc_tf/ops are compiled) and venv for Debian's Python.
packages=()
command -v gdal-config >/dev/null 2>&1 || packages+=(libgdal-dev gdal-bin)
command -v g++ >/dev/null 2>&1 || packages+=(g++)
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || packages+=(python3-venv)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "[setup] installing ${packages[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.mtlcc-setup-stamp
want="$(cat setup.py scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing mtlcc-tf and its dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[cpu,dev]"
  gdal_version="$(gdal-config --version)"
  if ! .venv/bin/python -c "from osgeo import gdal_array" >/dev/null 2>&1; then
    echo "[setup] building GDAL $gdal_version Python bindings against the venv's numpy"
    # Without --no-build-isolation, pip builds against a private numpy and gdal_array is missing.
    .venv/bin/python -m pip install -q --no-build-isolation --no-cache-dir "gdal==$gdal_version"
  fi
  # Quiet on success (TensorFlow prints a oneDNN banner on import); the error if it fails.
  if ! check="$(.venv/bin/python -c "from osgeo import gdal, gdal_array; import tensorflow, keras" 2>&1)"; then
    echo "$check" >&2
    echo "[setup] installation check failed" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
# The fused CPU kernels (mtlcc_tf/ops), compiled once for this machine's CPU and cached; without
# them training still works, on slower graph ops.
if ! built="$(.venv/bin/python -m mtlcc_tf.ops 2>&1)"; then
  echo "$built" | tail -n 8 >&2
  echo "[setup] warning: the fused CPU kernels did not build; the cells use graph ops" >&2
fi
echo "[setup] ready: $(.venv/bin/python -c 'import tensorflow as t, keras as k; from osgeo import gdal as g; print(f"tensorflow {t.__version__}, keras {k.__version__}, gdal {g.__version__}")' 2>/dev/null)"
