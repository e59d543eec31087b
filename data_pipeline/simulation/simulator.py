"""Ties scene, phenology, spectra and clouds together into tiles of Sentinel-2 time series."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np

from data_pipeline.simulation import acquisitions, clouds, crops, phenology, spectra
from data_pipeline.simulation.noise import LatticeNoise, coverage_thresholds, make_rng
from data_pipeline.simulation.scene import Scene, make_scene

SENSOR_NOISE = 0.002  # reflectance; radiometric noise of the L1C product
_SOIL = phenology.COVERS.index("soil")


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Radiometric noise in reflectance x 1e4: float32 of `shape`, std SENSOR_NOISE * 1e4.

    The sum of two uniform random bytes (a triangular distribution) instead of Gaussian draws:
    indistinguishable after quantisation, and ten times cheaper.
    """
    raw = np.frombuffer(rng.bytes(2 * int(np.prod(shape))), np.int8).reshape(2, *shape)
    # Each int8 byte has std 256 / sqrt(12); the sum of two has sqrt(2) times that.
    scale = np.float32(SENSOR_NOISE * 1e4 / (256 / np.sqrt(6)))
    return (raw[0].astype(np.float32) + raw[1]) * scale


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: a grid of tiles over one scene, observed in several years.

    Attributes:
      num_tiles_x: tiles per row (west to east).
      num_tiles_y: tiles per column (north to south).
      pix10: tile width in 10 m pixels; a multiple of 6 (the 60 m bands).
      years: calendar years; the same parcels every year, with crops rotating.
      nobs: time steps per record; shorter years are zero-padded at the end.
      cloud_rate: scales the seasonal cloud cover (0: no clouds, haze or shadows).
      seed: random seed; everything is deterministic for it.
      num_observations: real observations per year (default: random in 30-46, at most nobs).
    """

    num_tiles_x: int = 16
    num_tiles_y: int = 12
    pix10: int = 24
    years: tuple[int, ...] = (2016, 2017)
    nobs: int = 46
    cloud_rate: float = 1.0
    seed: int = 0
    num_observations: int | None = None

    def validate(self) -> SimulationConfig:
        """Raises ValueError naming the bad setting; returns self."""
        if self.num_tiles_x < 1 or self.num_tiles_y < 1:
            raise ValueError(f"need at least one tile, got {self.num_tiles_x}x{self.num_tiles_y}")
        if self.pix10 < 6 or self.pix10 % 6:
            raise ValueError(f"pix10={self.pix10} must be a positive multiple of 6 (24, 48)")
        if not self.years or len(set(self.years)) != len(self.years):
            raise ValueError(f"years={self.years} must be distinct and not empty")
        if self.nobs < 1:
            raise ValueError(f"nobs={self.nobs} must be positive")
        if self.num_observations is not None and not 1 <= self.num_observations <= self.nobs:
            raise ValueError(f"num_observations={self.num_observations} not in [1, nobs]")
        if self.cloud_rate < 0:
            raise ValueError(f"cloud_rate={self.cloud_rate} must be >= 0")
        return self

    @property
    def height(self) -> int:
        return self.num_tiles_y * self.pix10

    @property
    def width(self) -> int:
        return self.num_tiles_x * self.pix10


@dataclasses.dataclass
class SimulatedTile:
    """One tile of one year, shaped like `records.Tile` (padded to nobs), plus its grid cell."""

    tileid: str
    row: int
    column: int
    x10: np.ndarray  # uint16 [nobs, pix10, pix10, 4]
    x20: np.ndarray  # uint16 [nobs, pix10/2, pix10/2, 6]
    x60: np.ndarray  # uint16 [nobs, pix10/6, pix10/6, 3]
    doy: np.ndarray  # int16 [nobs], 0 = padding
    year: np.ndarray  # int16 [nobs], 0 = padding
    labels: np.ndarray  # uint16 [pix10, pix10] label ids
    cloud_mask: np.ndarray  # uint8 [nobs, pix10, pix10]


class YearSimulator:
    """Everything drawn once per year (dates, parcel phenology, atmosphere, snow, clouds);
    `tile_row` then renders one row of tiles at a time, so memory does not grow with the scene.
    """

    def __init__(self, scene: Scene, config: SimulationConfig, year_index: int):
        self.scene, self.config, self.year_index = scene, config, year_index
        seed, year = config.seed, config.years[year_index]
        height, width = scene.height, scene.width
        count = config.num_observations
        self.doy = acquisitions.acquisition_dates(
            year,
            make_rng(seed, "dates", year),
            min_count=count or min(acquisitions.MIN_OBSERVATIONS, config.nobs),
            max_count=count or min(acquisitions.MAX_OBSERVATIONS, config.nobs),
        )
        num_dates = len(self.doy)
        self.params = phenology.unit_parameters(
            scene, year_index, make_rng(seed, "phenology", year)
        )
        self.albedo = crops.profile_table()["albedo"][scene.profiles[year_index]]
        surface_rng = make_rng(seed, "surface", year)
        self.atmosphere = spectra.sample_atmosphere(self.doy, surface_rng)
        self.moisture = surface_rng.uniform(0.85, 1.05, num_dates).astype(np.float32)
        # Smooth per-pixel variation within parcels (this year's): phenology delay, vigour, soil
        # brightness, sealed share in settlements.
        self.pixel_noise = LatticeNoise.create(
            make_rng(seed, "pixels", year), 4, height, width, (24.0, 6.0), (1.0, 0.6)
        )
        snow_rng = make_rng(seed, "snow", year)
        snow_cover = spectra.snow_coverage(self.doy, snow_rng)
        self.snow_noise = LatticeNoise.create(
            snow_rng, num_dates, height, width, (150.0, 40.0), (1.0, 0.4)
        )
        self.snow_threshold = coverage_thresholds(self.snow_noise, snow_cover, height, width)
        self.clouds = None
        if config.cloud_rate > 0:
            cloud_rng = make_rng(seed, "clouds", year)
            coverage = clouds.sample_coverage(self.doy, config.cloud_rate, cloud_rng)
            self.clouds = clouds.sample_cloud_layers(
                self.doy, coverage, min(config.cloud_rate, 1.0), height, width, cloud_rng
            )

    def _fractions(self, first_row: int, num_rows: int) -> np.ndarray:
        """Weighted cover fractions of some full-width rows: float32 [time, rows, width, K]."""
        config, width = self.config, self.scene.width
        units = self.scene.unit_map[first_row : first_row + num_rows].ravel()
        rng = make_rng(config.seed, "pixel-jitter", config.years[self.year_index], first_row)
        noise = self.pixel_noise.evaluate(first_row, 0, num_rows, width).reshape(4, -1)
        shift = 2.5 * noise[0] + rng.normal(0.0, 1.0, units.size)
        vigour = 1.0 + 0.07 * noise[1] + rng.normal(0.0, 0.03, units.size)
        urban = np.clip(1.0 + 0.35 * noise[3], 0.0, 1.5)
        covers = phenology.cover_fractions(self.params, units, self.doy, shift, vigour, urban)
        covers[..., _SOIL] *= (1.0 + 0.1 * noise[2])[None, :] * self.moisture[:, None]
        snow = np.zeros((len(self.doy), units.size, 1), np.float32)
        snowy = np.flatnonzero(np.isfinite(self.snow_threshold))
        if snowy.size:
            field = self.snow_noise.evaluate(first_row, 0, num_rows, width, channels=snowy)
            field = field.reshape(len(snowy), -1, 1) - self.snow_threshold[snowy, None, None]
            snow[snowy] = np.clip(field / 0.5, 0.0, 1.0)
        weighted = np.concatenate([covers * (1.0 - snow), snow], axis=-1)
        weighted *= self.albedo[units][None, :, None]
        return weighted.reshape(len(self.doy), num_rows, width, -1)

    def tile_row(self, row: int) -> list[SimulatedTile]:
        """Renders the tiles of one row of the tile grid."""
        config, pix10 = self.config, self.config.pix10
        first_row, width = row * pix10, self.scene.width
        fractions = self._fractions(first_row, pix10)
        # 60 m from 20 m from 10 m: each step averages fewer values.
        fractions20 = spectra.block_mean(fractions, 2)
        fractions60 = spectra.block_mean(fractions20, 3)
        reflectance = {
            group: spectra.top_of_atmosphere(values, self.atmosphere, group)
            for group, values in zip(
                spectra.GROUPS, (fractions, fractions20, fractions60), strict=True
            )
        }
        num_dates = len(self.doy)
        mask = np.zeros((num_dates, pix10, width), np.uint8)
        if self.clouds is not None:
            fields = clouds.cloud_fields(self.clouds, first_row, 0, pix10, width)
            clouded = clouds.apply_clouds(reflectance, fields, self.clouds)
            mask = clouds.cloud_mask(fields, self.clouds, reflectance, clouded)
            reflectance = clouded
        rng = make_rng(config.seed, "sensor", config.years[self.year_index], row)
        quantised = {}
        for group, values in reflectance.items():
            values = values * np.float32(1e4) + _sensor_noise(rng, values.shape)
            quantised[group] = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
        labels = self.scene.label_map(self.year_index, slice(first_row, first_row + pix10))
        doy = np.zeros(config.nobs, np.int16)
        doy[:num_dates] = self.doy
        year = np.where(doy > 0, config.years[self.year_index], 0).astype(np.int16)

        def cut(values: np.ndarray, column: int, factor: int = 1) -> np.ndarray:
            size = pix10 // factor
            padded = np.zeros((config.nobs, size, size, *values.shape[3:]), values.dtype)
            padded[:num_dates] = values[:, :, column * size : (column + 1) * size]
            return padded

        tiles = []
        for column in range(config.num_tiles_x):
            tiles.append(
                SimulatedTile(
                    tileid=str(row * config.num_tiles_x + column),
                    row=row,
                    column=column,
                    x10=cut(quantised["x10"], column),
                    x20=cut(quantised["x20"], column, 2),
                    x60=cut(quantised["x60"], column, 6),
                    doy=doy.copy(),
                    year=year.copy(),
                    labels=labels[:, column * pix10 : (column + 1) * pix10].astype(np.uint16),
                    cloud_mask=cut(mask, column),
                )
            )
        return tiles


def simulate_scene(config: SimulationConfig) -> Scene:
    """The parcels and crops of the whole tile grid."""
    config.validate()
    return make_scene(config.height, config.width, len(config.years), config.seed)


def simulate_tiles(
    config: SimulationConfig, scene: Scene | None = None
) -> Iterator[tuple[int, SimulatedTile]]:
    """Yields (year, tile) for every year and tile, year by year, row by row."""
    scene = scene if scene is not None else simulate_scene(config)
    for year_index, year in enumerate(config.years):
        simulator = YearSimulator(scene, config, year_index)
        for row in range(config.num_tiles_y):
            for tile in simulator.tile_row(row):
                yield year, tile


def __getattr__(name: str):
    # `simulate_dataset` lives in writer.py (it writes TFRecords, so it imports TensorFlow);
    # importing it on first use keeps in-memory simulation free of TensorFlow.
    if name == "simulate_dataset":
        from data_pipeline.simulation.writer import simulate_dataset

        return simulate_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def measure_tiles_per_second(
    pix10: int = 24, num_observations: int = 46, num_tiles: int = 64, seed: int = 0
) -> float:
    """Simulated tiles per CPU second of this process (one year, clouds on, no writing).

    CPU time rather than wall time: on a single thread that is one core's throughput, and other
    processes sharing the machine do not distort it. Run with one BLAS/OpenMP thread
    (OMP_NUM_THREADS=1, as `benchmarks/simulator.py` does); extra threads would only add CPU
    time. The grid is as square as `num_tiles` allows; scene generation counts too.
    """
    num_tiles_x = int(np.ceil(np.sqrt(num_tiles)))
    num_tiles_y = int(np.ceil(num_tiles / num_tiles_x))
    config = SimulationConfig(
        num_tiles_x=num_tiles_x,
        num_tiles_y=num_tiles_y,
        pix10=pix10,
        years=(2016,),
        nobs=num_observations,
        seed=seed,
        num_observations=num_observations,
    )
    start = time.process_time()
    count = sum(1 for _ in simulate_tiles(config))
    return count / (time.process_time() - start)
