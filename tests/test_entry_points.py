"""One command-line convention for every entry point (README "Command lines").

Exit status 0 on success and 1 on a usage error or bad input, with a message that names the flag
or the file; only training has a third status (143: stopped by a signal, rerun to resume).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.test_train import REPOSITORY, subprocess_env

MISSING = "no_such_thing"

# module -> arguments that point it at a missing file or folder (joined under tmp_path)
BAD_INPUT = {
    "data_pipeline.synthesize": None,  # needs a non-empty --out_dir; built in the test
    "data_pipeline.inspect": ["{missing}"],
    "data_pipeline.ingest": ["--input={missing}", "--out_dir={tmp}/out"],
    "data_pipeline.tfrecord2tif": ["--record={missing}/3.tfrecord.gz", "--out_dir={tmp}/out"],
    "mtlcc_tf.train": ["--datadir={missing}", "--model_dir={tmp}/run"],
    "mtlcc_tf.evaluate": ["--model_dir={missing}"],
    "mtlcc_tf.export": ["--model_dir={missing}", "--export_dir={tmp}/export"],
    "mtlcc_tf.predict": ["--model={missing}", "--input={tmp}", "--output={tmp}/map.tif"],
    "mtlcc_tf.classical": ["--datadir={missing}", "--out_dir={tmp}/out"],
    "mtlcc_tf.experiment": ["--datadir={missing}", "--out_dir={tmp}/out", "--variant=a"],
    "mtlcc_tf.cloud_coverage": ["--datadir={missing}", "--out_dir={tmp}/out", "--classical=a=raw"],
    "mtlcc_tf.cloud_cells": ["--datadir={tmp}", "--out_dir={tmp}/out", "--model=a={missing}/*"],
}


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPOSITORY, env=subprocess_env(),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@pytest.mark.parametrize("module", sorted(BAD_INPUT))
def test_bad_input_exits_1_naming_what_is_wrong(module, tmp_path):
    missing = str(tmp_path / MISSING)
    if BAD_INPUT[module] is None:
        os.makedirs(tmp_path / "full")
        open(tmp_path / "full" / "keep.txt", "w").close()
        args, expected = [f"--out_dir={tmp_path}/full"], "not empty"
    else:
        args = [arg.format(missing=missing, tmp=tmp_path) for arg in BAD_INPUT[module]]
        expected = MISSING
    done = run(module, *args)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert expected in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("module", ["mtlcc_tf.evaluate", "data_pipeline.synthesize"])
def test_unknown_flags_exit_1_naming_the_flag(module):
    done = run(module, "--batch_size=4")
    assert done.returncode == 1 and "Unknown command line flag 'batch_size'" in done.stderr


# Entry points whose usage errors are reported before TensorFlow is imported (seconds).
FAST_USAGE_ERRORS = {
    "mtlcc_tf.train": (["--datadir={missing}", "--model_dir={tmp}/run"], MISSING),
    "mtlcc_tf.evaluate": (["--model_dir={missing}"], MISSING),
    "mtlcc_tf.export": (["--model_dir={missing}", "--export_dir={tmp}/e"], MISSING),
    "data_pipeline.inspect": (["{missing}"], MISSING),
    "mtlcc_tf.experiment": (["--datadir={missing}", "--out_dir={tmp}/o", "--variant=a"], MISSING),
}
# Runs the module as `python -m` would, with `import tensorflow` (and keras) failing.
WITHOUT_TENSORFLOW = (
    "import runpy, sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
    "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize("module", sorted(FAST_USAGE_ERRORS))
def test_usage_errors_need_no_tensorflow(module, tmp_path):
    arguments, expected = FAST_USAGE_ERRORS[module]
    args = [a.format(missing=tmp_path / MISSING, tmp=tmp_path) for a in arguments]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, module, *args], cwd=REPOSITORY,
        env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_train_flag_errors_need_no_tensorflow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "mtlcc_tf.train", "--convcell=nonsense"],
        cwd=REPOSITORY, env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "--convcell=nonsense" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
