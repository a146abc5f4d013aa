"""Cut a layer's crossbar matrix into square tiles and put it back together (docs/protocol.md section 4.2).

A crossbar matrix has one row per input (word line) and one column per output (bit line).
It is padded with `pad_value` at the bottom and on the right up to multiples of the tile
size, then cut into a grid of (grid_rows, grid_cols) tiles stored in row-major order:
tile t = a * grid_cols + b covers rows a*size ... (a+1)*size - 1 and columns
b*size ... (b+1)*size - 1 of the padded matrix.
"""

from __future__ import annotations

import numpy as np


def tile_grid(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Number of tiles (grid_rows, grid_cols) = (ceil(rows / size), ceil(cols / size)) for a matrix of `shape`."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (rows, cols) with rows, cols >= 1, got {tuple(shape)!r}")
    if size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    return -(-shape[0] // size), -(-shape[1] // size)


def to_tiles(matrix: np.ndarray, size: int, pad_value: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad `matrix` (rows, cols) with `pad_value` to multiples of `size`; return tiles (n, size, size) and the grid."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D (rows, cols), got shape {matrix.shape}")
    gr, gc = tile_grid(matrix.shape, size)
    padded = np.full((gr * size, gc * size), pad_value, dtype=matrix.dtype)
    padded[: matrix.shape[0], : matrix.shape[1]] = matrix
    tiles = padded.reshape(gr, size, gc, size).transpose(0, 2, 1, 3).reshape(gr * gc, size, size)
    return tiles, (gr, gc)


def from_tiles(tiles: np.ndarray, grid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `to_tiles`: assemble tiles (n, size, size) in row-major `grid` order and cut to `shape`."""
    tiles = np.asarray(tiles)
    gr, gc = grid
    if tiles.ndim != 3 or tiles.shape[0] != gr * gc or tiles.shape[1] != tiles.shape[2]:
        raise ValueError(f"tiles must have shape ({gr * gc}, size, size) for grid {grid}, got {tiles.shape}")
    size = tiles.shape[1]
    if tile_grid(shape, size) != (gr, gc):
        raise ValueError(f"shape {tuple(shape)} does not fit grid {grid} of {size}x{size} tiles")
    full = tiles.reshape(gr, gc, size, size).transpose(0, 2, 1, 3).reshape(gr * size, gc * size)
    return full[: shape[0], : shape[1]]
