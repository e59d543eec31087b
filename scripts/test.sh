#!/usr/bin/env bash
# Sets up (scripts/setup.sh), lints with ruff, and runs the test suite. Extra arguments go to pytest.
# The suite runs in MTLCC_TEST_WORKERS pytest-xdist processes (default 2, CI's core count): most
# tests start entry points in fresh Python processes, whose single-threaded TensorFlow import
# (about 9 s on a 2-core AVX2 EPYC) overlaps with another test's work. MTLCC_TEST_WORKERS=0 runs
# them in this process, one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check + format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] pytest"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
.venv/bin/python -m pytest -q -n "${MTLCC_TEST_WORKERS:-2}" --dist worksteal "$@"
