"""mini-vl's frozen image encoder: preprocessing, multi-scale CNN features, and the feature cache."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .weights import efficientnet_lite0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(nn.Module):
    """Frozen CNN -> (B, grid*grid, C) features.

    Besides the final 1280-channel map (semantic, 7x7), the outputs of two earlier stages (40
    channels at 28x28, 112 at 14x14) are pooled to the same grid and concatenated: ImageNet's last
    layer keeps little colour and position detail, which the earlier stages still have.
    """

    TAPS = (4, 10)  # block indices whose outputs are tapped (ends of the 40- and 112-channel stages)

    def __init__(self, grid: int, multiscale: bool = True, tap_max_pool: bool = False) -> None:
        super().__init__()
        # channels_last runs the depthwise convolutions ~30% faster on CPU.
        self.net = efficientnet_lite0().to(memory_format=torch.channels_last)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        # A cell's average dilutes a small object with the background around it; the maximum of the
        # early (colour, edge) channels keeps it.
        self.max_pool = nn.AdaptiveMaxPool2d(grid) if multiscale and tap_max_pool else None
        self.multiscale = multiscale
        tap_channels = sum(self.net._blocks[i]._project_conv.out_channels for i in self.TAPS) if multiscale else 0
        self.out_channels = 1280 + tap_channels * (2 if self.max_pool is not None else 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels.contiguous(memory_format=torch.channels_last))))
        taps = []
        for idx, block in enumerate(net._blocks):
            x = block(x)  # drop-connect is off in eval mode
            if self.multiscale and idx in self.TAPS:
                taps.append(self.pool(x))
                if self.max_pool is not None:
                    taps.append(self.max_pool(x))
        x = net._swish(net._bn1(net._conv_head(x)))  # (B, 1280, 7, 7)
        feats = torch.cat([self.pool(x), *taps], dim=1)  # (B, C, g, g)
        return feats.flatten(2).transpose(1, 2)  # (B, g*g, C)


def preprocess_image(image: Any, size: int) -> torch.Tensor:
    """PIL image or path -> ImageNet-normalised (3, size, size) float tensor."""
    from PIL import Image

    from ..common import load_image

    img = load_image(image).resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def image_key(image: Any) -> str | None:
    """The feature-cache key of an image file (its real path); None for an in-memory image."""
    return os.path.realpath(image) if isinstance(image, (str, os.PathLike)) else None


def encode_into_cache(encoder: ImageEncoder, cache: dict[str, torch.Tensor], images: Sequence[Any], size: int,
                      batch_size: int = 64, progress: bool = True, desc: str = "encode images") -> torch.Tensor:
    """Encode the image files not yet in `cache` (key: real path) with the frozen encoder, each once,
    and store their features on the CPU. Returns the features of `images` in order, (N, cells, C)."""
    from tqdm.auto import tqdm

    from ...data.pairs import open_image

    keys = [os.path.realpath(img) for img in images]
    todo = sorted({k for k in keys if k not in cache})
    param = next(encoder.parameters())
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        pixels = torch.stack([preprocess_image(open_image(k), size) for k in chunk])
        with torch.no_grad():
            feats = encoder(pixels.to(param.device, param.dtype)).cpu()
        for k, f in zip(chunk, feats):
            cache[k] = f
        bar.update(len(chunk))
    bar.close()
    return torch.stack([cache[k] for k in keys]) if keys else torch.empty(0)
