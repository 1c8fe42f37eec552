"""mini-vl's jittered alignment copies (`model.backbone.mini_vl.align_jitter`): brightness, contrast
and saturation scaled and pixel noise added, geometry and hue kept."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from basereward.config import load_config
from basereward.errors import ConfigError
from basereward.models.mini_vl.vision import jitter_draws, jittered


def _scene() -> Image.Image:
    arr = np.full((64, 64, 3), 200, dtype=np.uint8)
    arr[16:48, 16:48] = (200, 40, 40)  # a red square on light grey
    return Image.fromarray(arr)


def test_identity_factors_without_noise_return_the_picture():
    img = _scene()
    assert np.array_equal(np.asarray(jittered(img, (1.0, 1.0, 1.0, 0), 0.0)), np.asarray(img))


def test_brightness_scales_every_pixel_and_keeps_hue_and_geometry():
    out = np.asarray(jittered(_scene(), (0.5, 1.0, 1.0, 0), 0.0)).astype(int)
    # PIL's Brightness blends with black: each channel halves (rounded).
    assert np.abs(out[30, 30] - (100, 20, 20)).max() <= 1 and np.abs(out[2, 2] - 100).max() <= 1
    red = out[16:48, 16:48]
    assert (red[..., 0] > 2 * red[..., 1]).all() and (out[:16] == out[0, 0]).all()  # same square, same place
    hue_before = colorsys.rgb_to_hsv(200 / 255, 40 / 255, 40 / 255)[0]
    hue_after = colorsys.rgb_to_hsv(*(out[30, 30] / 255))[0]
    assert abs(hue_before - hue_after) < 0.01


def test_desaturation_moves_towards_grey_and_noise_is_seeded():
    grey = np.asarray(jittered(_scene(), (1.0, 1.0, 0.0, 0), 0.0)).astype(int)
    assert np.abs(grey[30, 30] - grey[30, 30].mean()).max() <= 1  # saturation 0: a grey square
    a = np.asarray(jittered(_scene(), (1.0, 1.0, 1.0, 7), 10.0)).astype(float)
    b = np.asarray(jittered(_scene(), (1.0, 1.0, 1.0, 7), 10.0)).astype(float)
    c = np.asarray(jittered(_scene(), (1.0, 1.0, 1.0, 8), 10.0)).astype(float)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    noise = a[:16] - 200  # unclipped region of the background
    assert 8 < noise.std() < 12 and abs(noise.mean()) < 1


def test_draws_are_seeded_and_within_strength():
    draws = jitter_draws(400, 3, 0.3)
    assert draws == jitter_draws(400, 3, 0.3) and draws != jitter_draws(400, 4, 0.3)
    f = np.array([d[:3] for d in draws])
    assert (f >= 0.7).all() and (f <= 1.3).all() and f.min() < 0.72 and f.max() > 1.28
    assert len({d[3] for d in draws}) == 400


@pytest.mark.parametrize("value", ["1", "2", "-0.1"])
def test_jitter_outside_its_range_is_refused(value):
    with pytest.raises(ConfigError, match=r"model\.backbone\.mini_vl\.align_jitter.*must be in \[0, 1\)"):
        load_config(None, [f"model.backbone.mini_vl.align_jitter={value}"])
