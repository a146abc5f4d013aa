"""Refusals that replace silent or late failures: crossbar sizes whose circuit solve cannot fit in memory, and
predictions taken from non-finite logits."""

import numpy as np
import pytest

from nxbar.crossbar.circuit import MAX_TILE_SIZE, TILE_SOLVE_LIMIT_BYTES, tile_solve_bytes, transfer_matrix
from nxbar.crossbar.config import CrossbarConfig
from nxbar.models.vgg import VGG, random_params


def test_tile_solve_estimate_and_the_largest_size():
    assert tile_solve_bytes(64) == 8 * (6 * 64**2 + 4 * 64)
    assert tile_solve_bytes(MAX_TILE_SIZE) <= TILE_SOLVE_LIMIT_BYTES < tile_solve_bytes(MAX_TILE_SIZE + 1)
    for size in (16, 32, 64, 128, MAX_TILE_SIZE):
        assert CrossbarConfig(size=size).size == size


@pytest.mark.parametrize("size", [MAX_TILE_SIZE + 1, 100_000])
def test_a_size_beyond_the_limit_is_refused_with_its_estimate(size):
    with pytest.raises(ValueError) as err:
        CrossbarConfig(size=size)
    message = str(err.value)
    assert message.startswith(f"size {size} is too large: the circuit solve of one {size}x{size} tile needs ")
    assert f"{tile_solve_bytes(size):,} bytes" in message and f"allowed sizes: 1..{MAX_TILE_SIZE}" in message


def test_the_estimate_covers_the_arrays_of_one_solve():
    """The solve's output T alone is a third of the size^2 terms; the estimate grows as size^2, like T."""
    g = np.full((1, 8, 8), 1e-5)
    t = transfer_matrix(g, 100.0, 100.0, 1.0, 1.0)
    assert tile_solve_bytes(8) >= 6 * t.nbytes  # T, the checked copy of G, K and W (3 size^2)
    assert tile_solve_bytes(200) / tile_solve_bytes(100) == pytest.approx(4, rel=0.01)


def _vgg8(scale=1.0):
    params = random_params("vgg8", num_classes=10, input_size=32)
    params = {k: v * np.float32(scale) if k.endswith(".weight") else v for k, v in params.items()}
    return VGG("vgg8", params, num_classes=10, input_size=32, mean=[0.5] * 3, std=[0.25] * 3)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_non_finite_logits_are_refused_not_counted():
    x = np.random.default_rng(0).uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)
    assert _vgg8().predict(x, batch_size=2).shape == (5,)
    huge = _vgg8(1e38)
    assert not np.isfinite(huge.forward(x)).all()
    with pytest.raises(ValueError, match=r"^5 of 5 images gave non-finite logits \(NaN or inf\).*the weights"):
        huge.predict(x, batch_size=2)  # counted over every batch
