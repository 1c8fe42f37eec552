"""mini-vl's zoomed-out alignment copies (`model.backbone.mini_vl.align_zoom`): the picture shrunk and
moved on a canvas of its border colour, its grounded boxes moved with it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from basereward.config import load_config
from basereward.data.regions import GroundedImage, Region, zoomed_regions
from basereward.errors import ConfigError
from basereward.models.mini_vl.vision import zoom_draws, zoomed_out


def test_regions_move_with_the_picture():
    item = GroundedImage("/x.png", (Region((0.1, 0.2, 0.5, 0.6), "red star"), Region((0.0, 0.0, 1.0, 1.0), "sky")))
    out = zoomed_regions(item, (0.5, 0.25, 0.1))
    assert out.image == "/x.png" and [r.text for r in out.regions] == ["red star", "sky"]
    np.testing.assert_allclose(out.regions[0].box, (0.3, 0.2, 0.5, 0.4))
    np.testing.assert_allclose(out.regions[1].box, (0.25, 0.1, 0.75, 0.6))


def test_the_picture_is_shrunk_onto_its_border_colour():
    arr = np.full((100, 100, 3), 120, dtype=np.uint8)
    arr[40:60, 40:60] = (220, 30, 30)  # a red square in the middle
    out = np.asarray(zoomed_out(Image.fromarray(arr), (0.5, 0.0, 0.5)))
    assert out.shape == (100, 100, 3)
    # Shrunk to 50x50 at (0, 50): the square now covers x 20-30, y 70-80.
    assert (out[72:78, 22:28] == (220, 30, 30)).all()
    # Everything outside the pasted picture is its border colour; inside, the grey around the square.
    assert (out[:50] == 120).all() and (out[:, 50:] == 120).all()
    red = (out == (220, 30, 30)).all(-1)
    ys, xs = np.nonzero(red)
    assert 69 <= ys.min() and ys.max() <= 80 and 19 <= xs.min() and xs.max() <= 30


def test_draws_are_seeded_and_keep_the_picture_on_the_canvas():
    draws = zoom_draws(500, 3, 0.5)
    assert draws == zoom_draws(500, 3, 0.5) and draws != zoom_draws(500, 4, 0.5)
    s, left, top = np.array(draws).T
    assert (0.5 <= s).all() and (s < 1).all() and s.min() < 0.52 and s.max() > 0.98
    assert (left >= 0).all() and (top >= 0).all() and (left + s <= 1).all() and (top + s <= 1).all()


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1"])
def test_zoom_outside_its_range_is_refused(value):
    with pytest.raises(ConfigError, match=r"model\.backbone\.mini_vl\.align_zoom.*must be in \[0, 1\)"):
        load_config(None, [f"model.backbone.mini_vl.align_zoom={value}"])
