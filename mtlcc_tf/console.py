"""Console output of the entry points: progress and results, not TensorFlow's INFO chatter."""

from __future__ import annotations

import logging as python_logging
import os

from absl import logging


class _NoTensorFlowInfo(python_logging.Filter):
    """Drops INFO (and DEBUG) records logged from TensorFlow's or Keras's own code."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        if record.levelno > python_logging.INFO:
            return True
        path = record.pathname.replace(os.sep, "/")
        return not any(f"/{package}/" in path for package in ("tensorflow", "keras"))


def quiet_tensorflow_info() -> None:
    """Keeps the console to progress and results: TensorFlow's INFO lines (for example one
    'Sharding callback duration' per checkpoint, logged through absl) are dropped; its warnings
    and errors stay."""
    python_logging.getLogger("tensorflow").setLevel(python_logging.WARNING)
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(item, _NoTensorFlowInfo) for item in absl_logger.filters):
        absl_logger.addFilter(_NoTensorFlowInfo())
