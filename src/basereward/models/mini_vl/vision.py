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
    HIST_LEVELS = 5  # colour histogram: levels per RGB channel (0, 1/4, ..., 1), 125 bins

    def __init__(self, grid: int, multiscale: bool = True, tap_max_pool: bool = False,
                 colour_histogram: bool = False, bf16: bool = False, semantic: bool = True) -> None:
        super().__init__()
        if not semantic and not multiscale:
            raise ValueError("an encoder without its semantic map needs the earlier stages (multiscale)")
        self.bf16 = bf16  # run the CNN under bf16 autocast (mini_vl.image_encoder_dtype)
        # channels_last runs the depthwise convolutions ~30% faster on CPU. BatchNorm stays as it
        # ships: folding it into the convolutions (benchmarks/image_encoder.py) encodes 1.06-1.42x faster
        # under bf16 but moves the bf16 features as much as bf16 itself does, and that alone took
        # the demo's seed-42 model from 69.8% to 67.2% on the held-out distribution.
        self.net = efficientnet_lite0().to(memory_format=torch.channels_last)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        # A cell's average dilutes a small object with the background around it; the maximum of the
        # early (colour, edge) channels keeps it.
        self.max_pool = nn.AdaptiveMaxPool2d(grid) if multiscale and tap_max_pool else None
        self.multiscale = multiscale
        # Without the semantic map the CNN stops after the last tapped block.
        self.semantic = semantic
        blocks = [1280] if semantic else []
        if multiscale:
            for i in self.TAPS:
                blocks += [self.net._blocks[i]._project_conv.out_channels] * (2 if self.max_pool is not None else 1)
        self.with_colour_histogram = colour_histogram
        if colour_histogram:
            blocks.append(2 * self.HIST_LEVELS ** 3)
        self.channel_blocks: tuple[int, ...] = tuple(blocks)
        """Sizes of the feature's channel blocks, in order: the semantic map, each tap's average (and
        maximum), the colour histogram (`projector_norm: per_block` normalises each on its own)."""
        self.out_channels = sum(blocks)

    # On a CPU the CNN runs a few pictures per pass: a pass over 64 pictures at 320x320 spills its
    # activations out of the cores' caches, and 4 at a time encode ~3x faster (2-core EPYC Zen 4,
    # bf16 and float32: benchmarks/image_encoder.py), with the same features bit for bit (each
    # picture's arithmetic does not depend on the others in its pass). On a GPU the batch runs whole.
    CPU_PICTURES_PER_PASS = 4

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device.type == "cpu" and len(pixels) > self.CPU_PICTURES_PER_PASS:
            return torch.cat([self._one_pass(p) for p in pixels.split(self.CPU_PICTURES_PER_PASS)])
        return self._one_pass(pixels)

    def _one_pass(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.bf16:
            with torch.autocast(pixels.device.type, dtype=torch.bfloat16):
                return self._features(pixels).float()
        return self._features(pixels)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixels.contiguous(memory_format=torch.channels_last))))
        parts = []  # (B, c, g, g) blocks in `channel_blocks` order
        last = len(net._blocks) - 1 if self.semantic else max(self.TAPS)
        for idx, block in enumerate(net._blocks[: last + 1]):
            x = block(x)  # drop-connect is off in eval mode
            if self.multiscale and idx in self.TAPS:
                parts.append(self.pool(x))
                if self.max_pool is not None:
                    parts.append(self.max_pool(x))
        if self.semantic:
            x = net._swish(net._bn1(net._conv_head(x)))  # (B, 1280, 7, 7)
            parts.insert(0, self.pool(x))
        if self.with_colour_histogram:
            parts.append(colour_histogram(pixels, self.pool.output_size, self.HIST_LEVELS).to(parts[0].dtype))
        feats = torch.cat(parts, dim=1)  # (B, C, g, g)
        return feats.flatten(2).transpose(1, 2)  # (B, g*g, C)


def colour_histogram(pixels: torch.Tensor, grid: int, levels: int) -> torch.Tensor:
    """(B, 3, S, S) ImageNet-normalised pixels -> (B, 2 * levels**3, grid, grid): per cell and bin of
    an RGB grid with `levels` levels per channel, the share of the cell's pixels in the bin
    (square-rooted, so that a small object's few pixels still count), then the bin's largest
    pixel weight in the cell (does the cell hold that colour at all). Each pixel is spread over its
    8 nearest bins by trilinear weights, so a colour near a bin edge does not jump.

    The CNN's features mix colour with shape: a projector trained on them reads the colour of a
    colour/shape combination it never saw worse than that of a familiar one. These features carry
    colour and nothing else, the same for every shape."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    pos = (pixels.float() * std + mean).clamp(0, 1) * (levels - 1)
    # Undoing the normalisation leaves ~1e-7 of rounding, which the square root would lift to ~3e-4.
    pos = torch.round(pos * 1e4) / 1e4
    low = pos.floor().clamp(max=levels - 2)
    w_high = pos - low
    weights = []
    for c in range(3):  # per channel: (B, levels, S, S), the pixel's weight on each level
        w = torch.zeros(pos.shape[0], levels, *pos.shape[2:], device=pos.device)
        idx = low[:, c:c + 1].long()
        w.scatter_(1, idx, 1 - w_high[:, c:c + 1])
        w.scatter_add_(1, idx + 1, w_high[:, c:c + 1])
        weights.append(w)
    hist = torch.einsum("bihw,bjhw,bkhw->bijkhw", *weights).flatten(1, 3)
    share = nn.functional.adaptive_avg_pool2d(hist, grid).sqrt()
    return torch.cat([share, nn.functional.adaptive_max_pool2d(hist, grid)], dim=1)


def resized_pixels(image: Any, size: int) -> torch.Tensor:
    """PIL image or path -> its (3, size, size) uint8 pixels, resized (bicubic): what the CNN reads,
    before `normalise_pixels`."""
    from PIL import Image

    from ..common import load_image

    img = load_image(image).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, S, S) -> ImageNet-normalised float32, a whole batch in one pass (the
    same float32 arithmetic, value for value, as normalising each image on its own)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((pixels.float() / 255.0 - mean) / std).contiguous()


def preprocess_image(image: Any, size: int) -> torch.Tensor:
    """PIL image or path -> ImageNet-normalised (3, size, size) float tensor."""
    return normalise_pixels(resized_pixels(image, size))


def pixel_batch(images: Sequence[Any], size: int) -> torch.Tensor:
    """PIL images or paths -> (N, 3, size, size) ImageNet-normalised pixels, normalised at once."""
    return normalise_pixels(torch.stack([resized_pixels(img, size) for img in images]))


def image_key(image: Any) -> str | None:
    """The feature-cache key of an image file (its real path); None for an in-memory image."""
    return os.path.realpath(image) if isinstance(image, (str, os.PathLike)) else None


def _encode_batches(encoder: ImageEncoder, items: Sequence[Any], pixels_of: Any, batch_size: int, progress: bool,
                    desc: str) -> torch.Tensor:
    """(N, cells, C) features of `items` on the CPU, `pixels_of(item)` giving each one's (3, S, S)
    uint8 pixels (`resized_pixels`), in batches of `batch_size` under one progress bar; each batch
    is normalised in one pass."""
    from tqdm.auto import tqdm

    param = next(encoder.parameters())
    out = []
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress or not items)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pixels = normalise_pixels(torch.stack([pixels_of(item) for item in chunk]))
        with torch.no_grad():
            out.append(encoder(pixels.to(param.device, param.dtype)).cpu())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(out) if out else torch.empty(0)


def encode_into_cache(encoder: ImageEncoder, cache: dict[str, torch.Tensor], images: Sequence[Any], size: int,
                      batch_size: int = 64, progress: bool = True, desc: str = "encode images") -> torch.Tensor:
    """Encode the image files not yet in `cache` (key: real path) with the frozen encoder, each once,
    and store their features on the CPU. Returns the features of `images` in order, (N, cells, C)."""
    from ...data.pairs import open_image

    keys = [os.path.realpath(img) for img in images]
    todo = sorted({k for k in keys if k not in cache})
    feats = _encode_batches(encoder, todo, lambda k: resized_pixels(open_image(k), size), batch_size, progress, desc)
    for k, f in zip(todo, feats):
        cache[k] = f
    return torch.stack([cache[k] for k in keys]) if keys else torch.empty(0)


# The five non-identity orders of the R, G, B channels (the alignment's colour-permuted copies).
CHANNEL_PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def encode_channel_permuted(encoder: ImageEncoder, images: Sequence[Any], size: int, seed: int,
                            batch_size: int = 64, progress: bool = True,
                            desc: str = "align: encode colour-permuted copies") -> tuple[torch.Tensor, list[int]]:
    """Features of each image with its colour channels reordered (one of CHANNEL_PERMUTATIONS per
    image, drawn from a generator seeded with `seed`; the global RNG is not drawn from):
    ((N, cells, C) features, the permutation index of each image). Not cached: the feature cache
    holds the images as they are."""
    from PIL import Image

    from ..common import load_image

    rng = np.random.default_rng([seed, 0xC01])
    perms = [int(i) for i in rng.integers(len(CHANNEL_PERMUTATIONS), size=len(images))]

    def permuted(item: tuple[Any, int]) -> torch.Tensor:
        img, k = item
        arr = np.asarray(load_image(img))[..., list(CHANNEL_PERMUTATIONS[k])]
        return resized_pixels(Image.fromarray(np.ascontiguousarray(arr)), size)

    feats = _encode_batches(encoder, list(zip(images, perms)), permuted, batch_size, progress, desc)
    return feats, perms


def zoom_draws(n: int, seed: int, min_scale: float) -> list[tuple[float, float, float]]:
    """(scale, left, top) of `n` zoomed-out copies, as fractions of the canvas side: the scale
    uniform in [min_scale, 1), the placement uniform over the canvas (seeded; the global RNG is
    not drawn from)."""
    rng = np.random.default_rng([seed, 0x200])
    out = []
    for _ in range(n):
        s = float(rng.uniform(min_scale, 1.0))
        out.append((s, float(rng.uniform(0.0, 1.0 - s)), float(rng.uniform(0.0, 1.0 - s))))
    return out


def zoomed_out(image: Any, draw: tuple[float, float, float]) -> Any:
    """The image shrunk by `draw`'s scale and pasted at its (left, top) on a canvas of the same size
    filled with the image's border colour (the median of its edge pixels)."""
    from PIL import Image

    from ..common import load_image

    img = load_image(image)
    s, left, top = draw
    w, h = img.size
    arr = np.asarray(img)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    canvas = Image.new("RGB", (w, h), tuple(int(v) for v in np.median(edge, axis=0)))
    small = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC)
    canvas.paste(small, (round(left * w), round(top * h)))
    return canvas


def encode_zoomed_out(encoder: ImageEncoder, images: Sequence[Any], draws: Sequence[tuple[float, float, float]],
                      size: int, batch_size: int = 64, progress: bool = True,
                      desc: str = "align: encode zoomed-out copies") -> torch.Tensor:
    """(N, cells, C) features of each image zoomed out by its draw (`zoomed_out`); not cached."""
    return _encode_batches(encoder, list(zip(images, draws)), lambda item: resized_pixels(zoomed_out(*item), size),
                           batch_size, progress, desc)


def jitter_draws(n: int, seed: int, strength: float) -> list[tuple[float, float, float, int]]:
    """(brightness, contrast, saturation, noise seed) of `n` jittered copies: each factor uniform in
    [1 - strength, 1 + strength] (seeded; the global RNG is not drawn from)."""
    rng = np.random.default_rng([seed, 0x717])
    lo, hi = 1.0 - strength, 1.0 + strength
    return [(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)),
             int(rng.integers(2**31))) for _ in range(n)]


def jittered(image: Any, draw: tuple[float, float, float, int], noise_std: float) -> Any:
    """The image with brightness, contrast and saturation scaled by `draw`'s factors (PIL's
    ImageEnhance) and Gaussian noise of `noise_std` grey levels added; same size, same hue."""
    from PIL import Image, ImageEnhance

    from ..common import load_image

    brightness, contrast, saturation, noise_seed = draw
    img = load_image(image)
    img = ImageEnhance.Brightness(img).enhance(brightness)
    img = ImageEnhance.Contrast(img).enhance(contrast)
    img = ImageEnhance.Color(img).enhance(saturation)
    if noise_std <= 0:
        return img
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + np.random.default_rng(noise_seed).normal(0.0, noise_std, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


# Pixel noise of the jittered copies at strength 1, in grey levels of 255.
JITTER_NOISE = 24.0


def encode_jittered(encoder: ImageEncoder, images: Sequence[Any], draws: Sequence[tuple[float, float, float, int]],
                    strength: float, size: int, batch_size: int = 64, progress: bool = True,
                    desc: str = "align: encode jittered copies") -> torch.Tensor:
    """(N, cells, C) features of each image jittered by its draw (`jittered`); not cached."""
    noise = JITTER_NOISE * strength
    return _encode_batches(encoder, list(zip(images, draws)),
                           lambda item: resized_pixels(jittered(item[0], item[1], noise), size),
                           batch_size, progress, desc)
