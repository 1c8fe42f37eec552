"""mini-vl's colour histogram features (`model.backbone.mini_vl.image_colour_histogram`)."""

from __future__ import annotations

import torch

from basereward.models.mini_vl.vision import IMAGENET_MEAN, IMAGENET_STD, colour_histogram

LEVELS = 5


def _normalise(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) colours in [0, 1] -> the encoder's ImageNet-normalised input."""
    return (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _bin(r: int, g: int, b: int) -> int:
    return (r * LEVELS + g) * LEVELS + b


def test_histogram_shares_and_maxima_by_hand():
    # An 8x8 image, 2x2 grid (4x4-pixel cells). Top left: pure red; top right: white; bottom left:
    # black; bottom right: 8 black pixels and 8 of red 0.125, which lies halfway between levels 0
    # and 1 (levels at 0, 1/4, ..., 1), so each of those pixels puts 0.5 on bin (0,0,0) and 0.5
    # on bin (1,0,0).
    rgb = torch.zeros(1, 3, 8, 8)
    rgb[0, 0, :4, :4] = 1.0
    rgb[0, :, :4, 4:] = 1.0
    rgb[0, 0, 4:6, 4:] = 0.125
    out = colour_histogram(_normalise(rgb), 2, LEVELS)
    assert out.shape == (1, 2 * LEVELS ** 3, 2, 2)
    share, peak = out[0, :LEVELS ** 3], out[0, LEVELS ** 3:]
    expected_share = torch.zeros(LEVELS ** 3, 2, 2)
    expected_peak = torch.zeros(LEVELS ** 3, 2, 2)
    expected_share[_bin(4, 0, 0), 0, 0] = expected_peak[_bin(4, 0, 0), 0, 0] = 1.0
    expected_share[_bin(4, 4, 4), 0, 1] = expected_peak[_bin(4, 4, 4), 0, 1] = 1.0
    expected_share[_bin(0, 0, 0), 1, 0] = expected_peak[_bin(0, 0, 0), 1, 0] = 1.0
    expected_share[_bin(0, 0, 0), 1, 1] = 0.75 ** 0.5  # (8 x 1 + 8 x 0.5) / 16, square-rooted
    expected_share[_bin(1, 0, 0), 1, 1] = 0.25 ** 0.5  # 8 x 0.5 / 16
    expected_peak[_bin(0, 0, 0), 1, 1] = 1.0
    expected_peak[_bin(1, 0, 0), 1, 1] = 0.5
    torch.testing.assert_close(share, expected_share, atol=1e-5, rtol=0)
    torch.testing.assert_close(peak, expected_peak, atol=1e-5, rtol=0)


def test_histogram_of_a_cell_does_not_depend_on_the_shape_its_pixels_form():
    # The same number of pixels of one colour, as a square in one image and as a scattered set in
    # the other: each cell reads the same, whatever the shape.
    torch.manual_seed(0)
    background = torch.tensor([0.7, 0.72, 0.75]).view(3, 1, 1)
    colour = torch.tensor([0.9, 0.3, 0.6]).view(3, 1)
    square = background.expand(3, 16, 16).clone()
    square[:, 2:6, 2:6] = colour.view(3, 1, 1)
    scattered = background.expand(3, 16, 16).clone()
    cell = torch.zeros(64, dtype=torch.bool)
    cell[torch.randperm(64)[:16]] = True
    block = scattered[:, :8, :8].reshape(3, 64)
    block[:, cell] = colour
    scattered[:, :8, :8] = block.reshape(3, 8, 8)
    a, b = colour_histogram(_normalise(torch.stack([square, scattered])), 2, LEVELS)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not torch.equal(a[:, 0, 0], a[:, 1, 1])  # the object's cell differs from a background cell
