"""Field parcels between roads, forest and settlements on the 10 m grid, with crops per year."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipeline.simulation import crops
from data_pipeline.simulation.noise import make_rng

# Share of road-bounded blocks by land use; the rest is farmland cut into parcels.
FOREST_SHARE = 0.12
SETTLEMENT_SHARE = 0.07
# Share of farmland parcels without a declared crop (fallow, other crops): label 0.
UNDECLARED_SHARE = 0.06
# Slivers smaller than this (pixels) where blocks cut strips are left undeclared.
MIN_PARCEL_PIXELS = 6
# Share of rotating parcels that change crop from one year to the next.
ROTATION_SHARE = 0.7
_FIELD, _FOREST, _SETTLEMENT = 0, 1, 2
_ROAD_KEY, _TRACK_KEY = -1, -2
_ROW_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class Scene:
    """Land units on a canvas: each pixel belongs to one unit (a parcel, a block, roads, tracks).

    Attributes:
      unit_map: int32 [height, width] unit index of every pixel.
      is_field: bool [units] whether a unit is a farmland parcel.
      labels: int16 [years, units] label id per year (0 = unknown).
      profiles: int16 [years, units] index into `crops.PROFILES` of the phenology a unit follows.
    """

    unit_map: np.ndarray
    is_field: np.ndarray
    labels: np.ndarray
    profiles: np.ndarray

    @property
    def height(self) -> int:
        return self.unit_map.shape[0]

    @property
    def width(self) -> int:
        return self.unit_map.shape[1]

    def label_map(self, year_index: int, rows: slice = slice(None)) -> np.ndarray:
        """Label ids of the pixels of some rows in one year: int16 [rows, width]."""
        return self.labels[year_index][self.unit_map[rows]]


def _blocks(height: int, width: int, spacing: float, rng: np.random.Generator, road_width: float):
    """Road-bounded blocks: Voronoi cells of one jittered seed per `spacing`-sized grid cell.

    Returns the seed positions [cells, 2], the block of every pixel [height, width] and a road
    mask (pixels within about road_width / 2 of a cell border).
    """
    grid_rows, grid_columns = height // spacing + 3, width // spacing + 3
    jitter = rng.uniform(0.15, 0.85, (grid_rows, grid_columns, 2))
    cells = np.stack(np.meshgrid(np.arange(grid_rows), np.arange(grid_columns), indexing="ij"), -1)
    seeds = ((cells - 1 + jitter) * spacing).reshape(-1, 2)
    block = np.empty((height, width), np.int64)
    road = np.empty((height, width), bool)
    x = np.arange(width) + 0.5
    cell_x = (x // spacing).astype(np.int64) + 1
    # Worley search: the nearest seeds lie in the 3 x 3 neighbouring grid cells.
    offsets = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    for start in range(0, height, _ROW_CHUNK):
        y = np.arange(start, min(start + _ROW_CHUNK, height)) + 0.5
        cell_y = (y // spacing).astype(np.int64) + 1
        candidates = (cell_y[:, None, None] + offsets[:, 0]) * grid_columns + (
            cell_x[None, :, None] + offsets[:, 1]
        )  # [rows, width, 9]
        distance = np.hypot(
            y[:, None, None] - seeds[candidates, 0], x[None, :, None] - seeds[candidates, 1]
        )
        order = np.argsort(distance, axis=-1)[..., :2]
        nearest = np.take_along_axis(distance, order, -1)
        block[start : start + len(y)] = np.take_along_axis(candidates, order[..., :1], -1)[..., 0]
        road[start : start + len(y)] = nearest[..., 1] - nearest[..., 0] < road_width
    return seeds, block, road


def _parcel_keys(block, seeds, rng, spacing, widths, lengths, track_share):
    """A key per pixel naming its parcel: strips of varied width across a per-block direction,
    cut into segments of varied length along it; plus a mask of farm tracks between strips."""
    height, width = block.shape
    num_blocks = len(seeds)
    reach = 2.0 * spacing  # farther than any pixel from its block's seed
    num_strips = int(np.ceil(2 * reach / widths[1])) + 2
    angle = rng.uniform(0, np.pi, num_blocks)
    strip_width = np.clip(rng.lognormal(np.log(widths[0]), 0.45, (num_blocks, num_strips)),
                          widths[1], widths[2])  # fmt: skip
    strip_length = np.clip(rng.lognormal(np.log(lengths[0]), 0.5, (num_blocks, num_strips)),
                           lengths[1], lengths[2])  # fmt: skip
    phase = rng.uniform(0, 1, (num_blocks, num_strips)) * strip_length
    has_track = rng.random((num_blocks, num_strips)) < track_share
    # Offsetting each block's coordinate by a multiple of `span` turns the per-block strip
    # borders into one sorted array: one searchsorted finds the strip of every pixel.
    span = 4 * reach
    borders = -reach - rng.uniform(0, widths[0], (num_blocks, 1)) + np.cumsum(strip_width, 1)
    borders = (borders + span * np.arange(num_blocks)[:, None]).ravel()
    keys = np.empty((height, width), np.int64)
    track = np.empty((height, width), bool)
    for start in range(0, height, _ROW_CHUNK):  # bounded memory on large canvases
        rows = slice(start, min(start + _ROW_CHUNK, height))
        chunk = block[rows]
        y, x = np.mgrid[rows, 0:width] + 0.5
        dy, dx = y - seeds[chunk, 0], x - seeds[chunk, 1]
        cos, sin = np.cos(angle[chunk]), np.sin(angle[chunk])
        along, across = dx * cos + dy * sin, dy * cos - dx * sin + span * chunk
        strip = np.minimum(np.searchsorted(borders, across), len(borders) - 1)
        segment = np.floor((along + reach + phase.ravel()[strip]) / strip_length.ravel()[strip])
        keys[rows] = strip * 4096 + segment.astype(np.int64)
        track[rows] = has_track.ravel()[strip] & (borders[strip] - across < 0.5)
    return keys, track


def _assign_crops(num_fields: int, rng: np.random.Generator) -> np.ndarray:
    """Label ids for `num_fields` parcels by quota: counts follow FREQUENCIES, and every class
    gets at least a few parcels when there are enough parcels (rare classes stay present)."""
    num_classes = len(crops.CLASS_IDS)
    minimum = 3 if num_fields >= 8 * num_classes else 1 if num_fields >= 2 * num_classes else 0
    counts = np.maximum(np.floor(crops.FREQUENCIES * num_fields).astype(int), minimum)
    while counts.sum() > num_fields:  # take the excess from the most frequent classes
        counts[np.argmax(counts)] -= 1
    remainder = num_fields - counts.sum()
    counts += rng.multinomial(remainder, crops.FREQUENCIES) if remainder > 0 else 0
    return rng.permutation(np.repeat(np.array(crops.CLASS_IDS, np.int16), counts))


def _rotate(previous: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Next year's crops: perennials stay, a share of the others swap crops among themselves
    (a permutation keeps every class's parcel count, so rare classes stay present)."""
    labels = previous.copy()
    arable = (labels != crops.UNKNOWN_ID) & ~np.isin(labels, crops.PERENNIAL_IDS)
    moving = np.flatnonzero(arable & (rng.random(len(labels)) < ROTATION_SHARE))
    labels[moving] = labels[rng.permutation(moving)]
    return labels


def make_scene(
    height: int,
    width: int,
    num_years: int,
    seed: int,
    block_spacing: int = 64,
    strip_widths: tuple[float, float, float] = (11.0, 4.0, 30.0),
    strip_lengths: tuple[float, float, float] = (32.0, 10.0, 100.0),
    road_width: float = 1.2,
    track_share: float = 0.25,
) -> Scene:
    """Draws a scene of field parcels, roads, forest and settlements, and crops for each year.

    Args:
      height: canvas height in 10 m pixels.
      width: canvas width in 10 m pixels.
      num_years: years of crop labels (crops rotate between years).
      seed: random seed.
      block_spacing: mean distance between road-bounded blocks in pixels.
      strip_widths: (median, min, max) parcel width in pixels.
      strip_lengths: (median, min, max) parcel length in pixels.
      road_width: roads between blocks, in pixels.
      track_share: share of parcel borders with a farm track (label 0).
    """
    rng = make_rng(seed, "scene")
    seeds, block, road = _blocks(height, width, block_spacing, rng, road_width)
    use = rng.choice(
        3, len(seeds), p=[1 - FOREST_SHARE - SETTLEMENT_SHARE, FOREST_SHARE, SETTLEMENT_SHARE]
    )
    keys, track = _parcel_keys(
        block, seeds, rng, block_spacing, strip_widths, strip_lengths, track_share
    )
    # Non-negative keys are parcels; forest and settlement blocks are one unit each.
    keys = np.where(use[block] == _FIELD, keys, -10 - 3 * block - use[block])
    keys = np.where(track & (use[block] == _FIELD), _TRACK_KEY, keys)
    keys = np.where(road, _ROAD_KEY, keys)
    unit_keys, unit_map = np.unique(keys, return_inverse=True)
    unit_map = unit_map.reshape(height, width).astype(np.int32)

    is_field = unit_keys >= 0
    other = np.full(len(unit_keys), crops.other_profile_index(crops.ROAD), np.int16)
    other[unit_keys == _TRACK_KEY] = crops.other_profile_index(crops.TRACK)
    block_use = (-10 - unit_keys) % 3
    other[(unit_keys <= -10) & (block_use == _FOREST)] = crops.other_profile_index(crops.FOREST)
    other[(unit_keys <= -10) & (block_use == _SETTLEMENT)] = crops.other_profile_index(
        crops.SETTLEMENT
    )
    fields = np.flatnonzero(is_field)
    area = np.bincount(unit_map.ravel(), minlength=len(unit_keys))[fields]
    declared = (rng.random(len(fields)) >= UNDECLARED_SHARE) & (area >= MIN_PARCEL_PIXELS)
    field_labels = np.zeros(len(fields), np.int16)
    field_labels[declared] = _assign_crops(int(declared.sum()), rng)

    labels = np.zeros((num_years, len(unit_keys)), np.int16)
    profiles = np.repeat(other[None], num_years, axis=0)
    index_of = {label_id: crops.profile_index(label_id) for label_id in crops.CLASS_IDS}
    lookup = np.zeros(max(crops.CLASS_IDS) + 1, np.int16)
    lookup[list(index_of)] = list(index_of.values())
    for year_index in range(num_years):
        if year_index:
            field_labels = _rotate(field_labels, rng)
        labels[year_index, fields] = field_labels
        # Undeclared parcels still grow something: a random crop's phenology, but label 0.
        random_profiles = rng.integers(0, len(crops.CLASS_IDS), len(fields))
        profiles[year_index, fields] = np.where(
            declared, lookup[field_labels], random_profiles
        ).astype(np.int16)
    return Scene(unit_map=unit_map, is_field=is_field, labels=labels, profiles=profiles)
