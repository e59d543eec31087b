"""Simulated Sentinel-2 L1C crop-mapping datasets: parcels, phenology, spectra and clouds."""

# `simulate_dataset` writes TFRecords, so it (and TensorFlow) is imported on first use only:
# simulating tiles in memory needs numpy alone.

from data_pipeline.simulation.crops import CLASS_IDS, CLASS_NAMES
from data_pipeline.simulation.simulator import (
    SimulatedTile,
    SimulationConfig,
    measure_tiles_per_second,
    simulate_scene,
    simulate_tiles,
)

__all__ = [
    "CLASS_IDS",
    "CLASS_NAMES",
    "SimulatedTile",
    "SimulationConfig",
    "measure_tiles_per_second",
    "simulate_dataset",
    "simulate_scene",
    "simulate_tiles",
]


def __getattr__(name: str):
    if name == "simulate_dataset":
        from data_pipeline.simulation.writer import simulate_dataset

        return simulate_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
