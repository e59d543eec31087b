"""Spatial block split of a tile grid into folds and eval, with margin tiles between blocks."""

from __future__ import annotations

import numpy as np

from data_pipeline.simulation.noise import make_rng

MARGIN = -1  # group of a tile that belongs to no split
DEFAULT_NUM_FOLDS = 5
MAX_BLOCK_SIZE = 4  # tiles; 960 m blocks at 24 px
EVAL_GROUP_SHARE = 0.2


def block_groups(
    num_tiles_y: int, num_tiles_x: int, num_folds: int, block_size: int, seed: int
) -> np.ndarray:
    """Group of every tile: fold 0..num_folds-1, num_folds for eval, or MARGIN.

    The grid is cut into `block_size` x `block_size` blocks of tiles; about a fifth of the blocks
    go to eval and the rest are dealt out to the folds. Where two blocks of different groups
    touch (also diagonally), the tiles along the border of the later block become margin, so
    that no pixel of one split lies next to a pixel of another.

    Returns:
      int [num_tiles_y, num_tiles_x].

    Raises:
      ValueError: if there are fewer blocks than folds + 1, or margins empty a group.
    """
    if num_folds < 1 or block_size < 1:
        raise ValueError(f"need num_folds >= 1 and block_size >= 1, got {num_folds}, {block_size}")
    block_rows = -(-num_tiles_y // block_size)
    block_columns = -(-num_tiles_x // block_size)
    num_blocks = block_rows * block_columns
    if num_blocks < num_folds + 1:
        raise ValueError(
            f"{num_tiles_x}x{num_tiles_y} tiles in blocks of {block_size}x{block_size} make "
            f"{num_blocks} blocks, fewer than {num_folds} folds + eval; use more tiles, smaller "
            "blocks or fewer folds"
        )
    rng = make_rng(seed, "splits")
    order = rng.permutation(num_blocks)
    num_eval = max(1, int(round(EVAL_GROUP_SHARE * num_blocks)))
    groups = np.empty(num_blocks, np.int64)
    groups[order[:num_eval]] = num_folds
    groups[order[num_eval:]] = np.arange(num_blocks - num_eval) % num_folds
    rows, columns = np.mgrid[0:num_tiles_y, 0:num_tiles_x]
    block = (rows // block_size) * block_columns + columns // block_size
    tile_groups = groups[block]
    margin = np.zeros_like(tile_groups, bool)
    padded_block = np.pad(block, 1, constant_values=-1)
    padded_group = np.pad(tile_groups, 1, constant_values=-1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            neighbour = (slice(1 + dy, 1 + dy + num_tiles_y), slice(1 + dx, 1 + dx + num_tiles_x))
            other_block = padded_block[neighbour]
            margin |= (
                (other_block >= 0)
                & (other_block < block)
                & (padded_group[neighbour] != tile_groups)
            )
    tile_groups = np.where(margin, MARGIN, tile_groups)
    empty = sorted(set(range(num_folds + 1)) - set(np.unique(tile_groups).tolist()))
    if empty:
        raise ValueError(
            f"margins leave no tile in group(s) {empty} (eval is group {num_folds}); use more "
            "tiles or blocks of at least 2 x 2 tiles"
        )
    return tile_groups


def choose_block_size(
    num_tiles_y: int, num_tiles_x: int, num_folds: int, seed: int, largest: int = 4
) -> int:
    """The largest block size up to `largest` that gives every fold and eval some tiles.

    Raises:
      ValueError: if even single-tile blocks cannot (too few tiles for the folds).
    """
    for block_size in range(largest, 0, -1):
        try:
            block_groups(num_tiles_y, num_tiles_x, num_folds, block_size, seed)
            return block_size
        except ValueError as error:
            last_error = error
    raise ValueError(
        f"{num_tiles_x}x{num_tiles_y} tiles cannot make {num_folds} folds: {last_error}"
    )


def split_tileids(groups: np.ndarray, num_folds: int) -> dict[str, list[str]]:
    """Tile id lists by name: `train_fold{k}`, `test_fold{k}` and `eval` (ids row-major)."""
    tileids = np.arange(groups.size).astype(str)
    flat = groups.ravel()
    splits = {}
    for fold in range(num_folds):
        splits[f"train_fold{fold}"] = list(
            tileids[(flat >= 0) & (flat < num_folds) & (flat != fold)]
        )
        splits[f"test_fold{fold}"] = list(tileids[flat == fold])
    splits["eval"] = list(tileids[flat == num_folds])
    return splits
