"""Ingests GeoTIFFs (the PyTorch port's tile folders, or a whole scene) or Level-1C products."""

from __future__ import annotations

import dataclasses
import os

from data_pipeline import dataset_root, ingest_folders, ingest_scenes
from data_pipeline.ingest_common import IngestConfig

__all__ = ["IngestConfig", "ingest"]


def ingest(config: IngestConfig) -> dict:
    """Ingests tile folders if `<input>/data/` exists, else a scene folder; returns a summary.

    The dataset is written into a staging folder beside out_dir and moved into place at the end
    (`dataset_root.staged_root`): a run that fails leaves out_dir as it was.
    """
    config.validate()
    with dataset_root.staged_root(config.out_dir, config.overwrite) as staging:
        staged = dataclasses.replace(config, out_dir=staging, overwrite=False)
        if os.path.isdir(os.path.join(config.input, "data")):
            summary = ingest_folders.ingest_tile_folders(staged)
        else:
            summary = ingest_scenes.ingest_scene(staged)
    return {**summary, "root": config.out_dir}
