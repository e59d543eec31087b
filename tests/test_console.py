"""Console output: TensorFlow's INFO lines are dropped, its warnings and ours stay."""

from __future__ import annotations

import logging

from absl import logging as absl_logging

from mtlcc_tf import console


def record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_tensorflow_info_is_dropped_once_and_its_warnings_kept():
    console.quiet_tensorflow_info()
    console.quiet_tensorflow_info()
    logger = absl_logging.get_absl_logger()
    filters = [item for item in logger.filters if isinstance(item, console._NoTensorFlowInfo)]
    assert len(filters) == 1
    keep = filters[0].filter
    assert not keep(record("/site-packages/tensorflow/python/checkpoint.py", logging.INFO))
    assert not keep(record("/site-packages/keras/src/saving.py", logging.DEBUG))
    assert keep(record("/site-packages/tensorflow/python/checkpoint.py", logging.WARNING))
    assert keep(record("/work/mtlcc_tf/train_lib.py", logging.INFO))
