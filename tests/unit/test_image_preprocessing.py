"""mini-vl's image preprocessing: uint8 pixels resized per image, normalised per batch."""

import numpy as np
import pytest
import torch
from PIL import Image

from basereward.models.mini_vl.vision import normalise_pixels, preprocess_image, resized_pixels


def test_normalise_pixels_is_imagenet_normalisation_by_hand():
    px = torch.tensor([0, 255, 128], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = normalise_pixels(px)
    # (v / 255 - mean) / std per channel: R 0 -> -0.485/0.229, G 255 -> (1-0.456)/0.224, B 128.
    want = [-0.485 / 0.229, (1 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    for c in range(3):
        assert out[c].flatten().tolist() == pytest.approx([want[c]] * 4, abs=1e-6)


def test_a_batch_normalised_at_once_equals_each_image_on_its_own_to_the_bit():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 30 + 5 * i, 3), dtype=np.uint8)) for i in range(5)]
    raw = [resized_pixels(im, 32) for im in images]
    assert all(r.dtype == torch.uint8 and r.shape == (3, 32, 32) for r in raw)
    together = normalise_pixels(torch.stack(raw))
    for k, im in enumerate(images):
        # The float32 arithmetic numpy did before the batch path: the same values, bit for bit.
        arr = np.asarray(im.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0
        arr = (arr - np.array([0.485, 0.456, 0.406], dtype=np.float32)) / np.array([0.229, 0.224, 0.225],
                                                                                   dtype=np.float32)
        ref = torch.from_numpy(arr).permute(2, 0, 1)
        assert torch.equal(together[k], ref)
        assert torch.equal(preprocess_image(im, 32), ref)
