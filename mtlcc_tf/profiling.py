"""A TensorBoard profile of a few training steps, after a short warm-up (`--profile`)."""

from __future__ import annotations

import os

import tensorflow as tf

from mtlcc_tf.train_config import PROFILE_WARMUP_STEPS


class Profiler:
    """Records a TensorBoard profile of `num_steps` training steps after a short warm-up."""

    def __init__(self, model_dir: str, initial_step: int, num_steps: int, progress, chief: bool):
        self.directory = os.path.join(model_dir, "profile")
        self.start_step = initial_step + PROFILE_WARMUP_STEPS
        self.stop_step = self.start_step + num_steps
        self.enabled = bool(num_steps) and chief
        self.progress = progress
        self.running = False

    def before_step(self, step: int) -> None:
        if self.enabled and step == self.start_step and not self.running:
            tf.profiler.experimental.start(self.directory)
            self.running = True

    def after_step(self, step: int) -> None:
        if self.running and step >= self.stop_step:
            self.stop()

    def stop(self) -> None:
        if self.running:
            tf.profiler.experimental.stop()
            self.running = False
            self.progress.message(
                f"profile of steps {self.start_step + 1}-{self.stop_step} in {self.directory} "
                "(TensorBoard's Profile tab; pip install tensorboard-plugin-profile)"
            )
