"""Rendering: shape scenes on plain or lightly textured backgrounds, bar charts, and real photos.

Every function takes the pair's `rng` and draws from it in a fixed order: that order is part of
the data set (the same seed must give the same bytes), so reordering draws changes the data.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from basereward.data.synthetic.base import pick, plural

# Colours far apart in RGB (min pairwise distance ~80, yellow/orange) so a pixel names its colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "purple": (130, 50, 170),
    "orange": (250, 135, 20),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
    "pink": (250, 120, 190),
    "brown": (125, 75, 30),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# No rotated square: a square turned 45 degrees would be a diamond. Diamonds are narrow instead.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "pentagon", "cross")
PLURAL = {s: plural(s) for s in SHAPES}

# Mid-light backgrounds so both the white and the black shapes stand out.
_BACKGROUNDS = ((185, 185, 185), (200, 190, 165), (170, 185, 200), (180, 195, 175), (190, 180, 200))
_TEXTURES = ("plain", "shaded", "striped", "checkered", "mottled")


# ----------------------------------------------------------------------------------------------
# Shape scenes


def shape_polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Vertices of a shape with bounding radius ~r; `rot` (radians) only applies to the n-gons/star."""

    def ring(k: int, radius: float, start: float) -> list[tuple[float, float]]:
        angles = [start + 2 * math.pi * i / k for i in range(k)]
        return [(cx + radius * math.cos(t), cy + radius * math.sin(t)) for t in angles]

    up = -math.pi / 2
    if shape == "square":
        h = 0.8 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.62 * r, cy), (cx, cy + r), (cx - 0.62 * r, cy)]
    if shape == "triangle":
        # Centroid at (cx, cy); a circumradius a bit over r keeps it from looking much smaller.
        return ring(3, 1.1 * r, up + rot)
    if shape == "pentagon":
        return ring(5, r, up + rot)
    if shape == "hexagon":
        return ring(6, r, rot)
    if shape == "star":
        outer, inner = ring(5, 1.1 * r, up + rot), ring(5, 0.48 * r, up + rot + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, w = r, 0.36 * r
        pts = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w)]
        pts += [(-x, -y) for x, y in pts]  # the other half by point symmetry
        return [(cx + x, cy + y) for x, y in pts]
    raise ValueError(shape)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A (size, size, 3) uint8 background: a plain tint or a low-contrast texture, and its name.

    Textures are smooth or periodic so the PNGs stay small; amplitudes stay well below the
    distance between palette colours.
    """
    base = np.array(pick(rng, _BACKGROUNDS), dtype=np.float32)
    texture = pick(rng, _TEXTURES)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if texture == "plain":
        delta = np.zeros((size, size), np.float32)
    elif texture == "shaded":
        angle = rng.uniform(0, 2 * math.pi)
        delta = 24 * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    elif texture == "striped":
        period = rng.uniform(0.05, 0.12)
        axis = xx if rng.random() < 0.5 else yy
        delta = np.where((axis / period) % 1.0 < 0.5, 7.0, -7.0)
    elif texture == "checkered":
        period = rng.uniform(0.08, 0.16)
        delta = np.where(((xx // period) + (yy // period)) % 2 == 0, 6.0, -6.0)
    else:  # mottled: bilinear-upsampled coarse noise
        coarse = rng.normal(0, 8, size=(6, 6)).astype(np.float32)
        delta = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    img = np.clip(base[None, None, :] + delta[..., None], 0, 255).astype(np.uint8)
    return img, texture


def _place(
    rng: np.random.Generator,
    radii: Sequence[float],
    size: int,
    first_pair_ok: Any = None,
) -> list[tuple[float, float]]:
    """Non-overlapping centres for objects of the given radii, with a clear gap between them.

    `first_pair_ok(c0, c1)` constrains the first two objects (e.g. one clearly left of the other).
    """
    centres = place_centres(rng, radii, size, first_pair_ok)
    if centres is None:
        raise RuntimeError("could not place objects; too many or too large for the image")
    return centres


def place_centres(rng: np.random.Generator, radii: Sequence[float], size: int, first_pair_ok: Any = None, *,
                  gap_frac: float = 0.06, tries: int = 200,
                  region: tuple[float, float, float] | None = None) -> list[tuple[float, float]] | None:
    """Centres at least `gap_frac * size` apart (beyond the objects' reach) inside the square
    `region` = (x, y, side) (default the whole image), drawn at random with up to `tries` attempts
    per object and per layout; None when they do not fit."""
    gap = gap_frac * size
    x0, y0, side = region if region is not None else (0.0, 0.0, float(size))
    bound = [1.15 * r for r in radii]  # the star/triangle tips reach ~1.1 r
    for _ in range(tries):
        centres: list[tuple[float, float]] = []
        for i, b in enumerate(bound):
            for _ in range(tries):
                c = (float(rng.uniform(x0 + b + 2, x0 + side - b - 2)), float(rng.uniform(y0 + b + 2, y0 + side - b - 2)))
                if any(math.dist(c, o) < b + bound[j] + gap for j, o in enumerate(centres)):
                    continue
                if i == 1 and first_pair_ok is not None and not first_pair_ok(centres[0], c):
                    continue
                centres.append(c)
                break
            else:
                break
        if len(centres) == len(radii):
            return centres
    return None


def _radii(rng: np.random.Generator, n: int, size: int) -> list[float]:
    # Fewer objects may be larger; the smallest still leaves a solid interior for pixel checks.
    hi = {1: 0.16, 2: 0.14, 3: 0.125, 4: 0.11, 5: 0.1}[n]
    return [float(rng.uniform(0.075, hi)) * size for _ in range(n)]


def render_scene(
    rng: np.random.Generator,
    objects: list[tuple[str, str]],
    size: int,
    first_pair_ok: Any = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """Draw (shape, colour) objects on a background; returns the image and the scene record."""
    bg, texture = _background(rng, size)
    radii = _radii(rng, len(objects), size)
    centres = _place(rng, radii, size, first_pair_ok)
    # Draw at 2x and downsample by box-averaging: edges get anti-aliased while solid interiors
    # (and the background, which is upsampled by pixel repetition) keep their exact values.
    big = Image.fromarray(np.repeat(np.repeat(bg, 2, axis=0), 2, axis=1))
    draw = ImageDraw.Draw(big)
    recs = []
    for (shape, colour), r, (cx, cy) in zip(objects, radii, centres):
        rot = float(rng.uniform(-0.25, 0.25))
        rgb = COLOURS[colour]
        if shape == "circle":
            draw.ellipse([2 * (cx - r), 2 * (cy - r), 2 * (cx + r), 2 * (cy + r)], fill=rgb)
        else:
            draw.polygon([(2 * x, 2 * y) for x, y in shape_polygon(shape, cx, cy, r, rot)], fill=rgb)
        recs.append({"shape": shape, "colour": colour, "rgb": list(rgb), "center": [cx, cy], "radius": r})
    return big.reduce(2), {"texture": texture, "objects": recs}


def distinct_objects(
    rng: np.random.Generator, n: int, shapes: Sequence[str], colours: Sequence[str]
) -> list[tuple[str, str]]:
    """n (shape, colour) objects with no repeated combination, so "the red star" is unambiguous."""
    combos: list[tuple[str, str]] = []
    while len(combos) < n:
        c = (pick(rng, shapes), pick(rng, colours))
        if c not in combos:
            combos.append(c)
    return combos

# ----------------------------------------------------------------------------------------------
# Bar charts


@lru_cache(maxsize=8)
def label_font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def render_chart(
    rng: np.random.Generator, colours: list[str], values: list[int], size: int
) -> tuple[Image.Image, dict[str, Any]]:
    """Vertical bar chart on a 0-100 axis with gridlines every 10 so values can be read off."""
    bg = tuple(int(v) for v in pick(rng, ((250, 250, 250), (245, 242, 232), (238, 242, 248))))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = int(0.15 * size), int(0.96 * size), int(0.06 * size), int(0.92 * size)
    unit = (bottom - top) / 100.0
    font = label_font(max(8, int(0.05 * size)))
    for v in range(0, 101, 10):
        y = round(bottom - v * unit)
        draw.line([(left, y), (right, y)], fill=(205, 205, 205), width=1)
        if v % 20 == 0:
            draw.text((left - 4, y), str(v), fill=(40, 40, 40), font=font, anchor="rm")
    slot = (right - left) / len(values)
    width = slot * float(rng.uniform(0.5, 0.75))
    bars = []
    for i, (c, v) in enumerate(zip(colours, values)):
        x0 = round(left + i * slot + (slot - width) / 2)
        x1 = round(x0 + width)
        y = round(bottom - v * unit)
        draw.rectangle([x0, y, x1, bottom], fill=COLOURS[c])
        bars.append({"colour": c, "rgb": list(COLOURS[c]), "value": v, "x0": x0, "x1": x1, "top": y})
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(30, 30, 30), width=2)
    return img, {"bars": bars, "baseline": bottom, "px_per_unit": unit}

# ----------------------------------------------------------------------------------------------
# Real photos (bundled with scikit-image / scikit-learn; nothing is downloaded)


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The full-size RGB photo, loaded once from the files inside the installed packages."""
    if name in ("china", "flower"):
        # The file `sklearn.datasets.load_sample_image` reads, opened directly: importing sklearn
        # costs seconds (it pulls in scipy.stats) for two JPEGs.
        import importlib.util

        root = importlib.util.find_spec("sklearn").submodule_search_locations[0]
        with Image.open(os.path.join(root, "datasets", "images", f"{name}.jpg")) as f:
            arr = np.asarray(f.convert("RGB"))
    else:
        import skimage.data

        arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr).convert("RGB")

