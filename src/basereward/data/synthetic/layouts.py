"""Re-rendering a pair's facts under another layout: canvas size, background, palette shade,
object scale and placement, chart style, photo crop.

The task builders decide the facts (which objects, which relation, which bar values) and render
them in the generator's one house style; `rerender` draws the same facts again in a style drawn
from a `Layout`. `TRAIN_LAYOUT` varies the training images (`Variety(layout=True)`);
`HELDOUT_LAYOUT` (`heldout.py`) uses backgrounds, textures, scales and chart styles that neither
training style uses. The answers stay true: the spatial relation is re-imposed on the new
positions, counts and colours are unchanged, and the meta record is rewritten (centres, radii,
bar boxes) so grounded captions and pixel checks follow the new image.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from basereward.data.synthetic.base import pick
from basereward.data.synthetic.render import (
    COLOURS,
    label_font,
    load_photo,
    place_centres,
    shape_polygon,
)

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Layout:
    """The ranges a layout draws from; every field is sampled per image."""

    sizes: tuple[int, ...]
    backgrounds: tuple[RGB, ...]
    textures: tuple[str, ...]
    """Background kinds, names as in `_background` (the description answers may name them)."""
    radius: tuple[tuple[float, float], ...]
    """Object radius ranges as fractions of the canvas side; one range is drawn per scene, then
    scaled down for crowded scenes (x 1, 0.9, 0.8, 0.7, 0.65 for 1..5 objects)."""
    cluster: float
    """Probability that a scene's objects are kept inside a random sub-square of 70% of the side."""
    jitter: int
    """Max per-channel change of an object's colour (the palette's names stay unambiguous)."""
    chart_backgrounds: tuple[RGB, ...]
    bar_width: tuple[float, float]
    """Bar width as a fraction of its slot."""
    chart_labels: str
    """"left" (labels every 20 on the left axis) or "right" (every 10 on the right)."""
    photo_crop: tuple[float, float]
    photo_contrast: tuple[float, float]


TRAIN_LAYOUT = Layout(
    sizes=(192, 224, 256), backgrounds=((185, 185, 185), (200, 190, 165), (170, 185, 200), (180, 195, 175),
                                        (190, 180, 200), (175, 175, 160), (195, 200, 205)),
    textures=("plain", "shaded", "striped", "checkered", "mottled"), radius=((0.065, 0.17),), cluster=0.25,
    jitter=8, chart_backgrounds=((250, 250, 250), (245, 242, 232), (238, 242, 248), (244, 248, 240)),
    bar_width=(0.45, 0.8), chart_labels="left", photo_crop=(0.65, 1.0), photo_contrast=(0.9, 1.1),
)
HELDOUT_LAYOUT = Layout(
    sizes=(160, 288, 320), backgrounds=((160, 170, 160), (210, 205, 190), (175, 162, 180), (150, 172, 188),
                                        (196, 176, 160)),
    textures=("gradient", "noisy", "dotted", "vignette"), radius=((0.05, 0.068), (0.16, 0.19)), cluster=0.6,
    jitter=12, chart_backgrounds=((228, 234, 224), (236, 230, 240), (224, 230, 236)),
    bar_width=(0.3, 0.42), chart_labels="right", photo_crop=(0.7, 0.95), photo_contrast=(0.8, 1.2),
)
_CROWDING = {1: 1.0, 2: 0.9, 3: 0.8, 4: 0.7, 5: 0.65}


def _background(rng: np.random.Generator, size: int, layout: Layout) -> tuple[np.ndarray, str]:
    """(size, size, 3) uint8 background and its texture name; amplitudes stay low so no
    background pixel comes near a palette colour."""
    base = np.array(pick(rng, layout.backgrounds), dtype=np.float32)
    texture = pick(rng, layout.textures)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if texture == "shaded":
        angle = rng.uniform(0, 2 * math.pi)
        delta = 24 * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    elif texture == "striped":
        axis = xx if rng.random() < 0.5 else yy
        delta = np.where((axis / rng.uniform(0.05, 0.12)) % 1.0 < 0.5, 7.0, -7.0)
    elif texture == "checkered":
        period = rng.uniform(0.08, 0.16)
        delta = np.where(((xx // period) + (yy // period)) % 2 == 0, 6.0, -6.0)
    elif texture == "mottled":
        coarse = rng.normal(0, 8, size=(6, 6)).astype(np.float32)
        delta = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    elif texture == "gradient":  # two tints blended along a random direction
        other = np.array(pick(rng, layout.backgrounds), dtype=np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        t = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)
        img = base[None, None, :] * (1 - t[..., None]) + other[None, None, :] * t[..., None]
        return np.clip(img, 0, 255).astype(np.uint8), texture
    elif texture == "noisy":  # per-pixel grain
        delta = rng.normal(0, 5, size=(size, size)).astype(np.float32)
    elif texture == "dotted":
        period = rng.uniform(0.06, 0.1)
        d = np.hypot((xx / period) % 1.0 - 0.5, (yy / period) % 1.0 - 0.5)
        delta = np.where(d < 0.18, -12.0, 0.0)
    elif texture == "vignette":
        delta = -30 * np.hypot(xx - 0.5, yy - 0.5)
    else:  # plain
        delta = np.zeros((size, size), np.float32)
    img = np.clip(base[None, None, :] + delta[..., None], 0, 255).astype(np.uint8)
    return img, texture


def _place(rng: np.random.Generator, radii: list[float], size: int, cluster: bool,
           pair_ok: Callable[[Any, Any], bool] | None) -> list[tuple[float, float]] | None:
    """Non-overlapping centres (a clear gap between objects), inside a random sub-square when
    `cluster`; None when they do not fit."""
    region = None
    if cluster:
        side = 0.7 * size
        ox, oy = rng.uniform(0, size - side, size=2)
        region = (float(ox), float(oy), side)
    return place_centres(rng, radii, size, pair_ok, gap_frac=0.05, tries=100, region=region)


def _spatial_ok(meta: Mapping[str, Any], size: int) -> Callable[[Any, Any], bool] | None:
    """The builder's rule for the first two objects: A's offset from B along the asked axis is at
    least 12% of the side and dominates the other axis (one clear answer)."""
    rel = meta.get("true")
    if rel not in ("left", "right", "above", "below"):
        return None

    def ok(a: tuple[float, float], b: tuple[float, float]) -> bool:
        horizontal = rel in ("left", "right")
        along, across = (a[0] - b[0], a[1] - b[1]) if horizontal else (a[1] - b[1], a[0] - b[0])
        if rel in ("right", "below"):
            along = -along
        return -along >= 0.12 * size and abs(across) <= 0.5 * -along

    return ok


def _scene(rng: np.random.Generator, meta: dict[str, Any], layout: Layout, spatial: bool) -> Image.Image:
    size = int(pick(rng, layout.sizes))
    objs = meta["objects"]
    bg, texture = _background(rng, size, layout)
    lo, hi = layout.radius[int(rng.integers(len(layout.radius)))]
    scale = _CROWDING[len(objs)]
    radii = [float(rng.uniform(lo, hi)) * scale * size for _ in objs]
    pair_ok = _spatial_ok(meta, size) if spatial else None
    centres = _place(rng, radii, size, bool(rng.random() < layout.cluster), pair_ok)
    while centres is None:  # too crowded for this draw: shrink and spread over the whole canvas
        radii = [0.85 * r for r in radii]
        centres = _place(rng, radii, size, False, pair_ok)
    big = Image.fromarray(np.repeat(np.repeat(bg, 2, axis=0), 2, axis=1))  # drawn at 2x, box-reduced
    draw = ImageDraw.Draw(big)
    for o, r, (cx, cy) in zip(objs, radii, centres):
        rgb = tuple(int(np.clip(v + rng.integers(-layout.jitter, layout.jitter + 1), 0, 255))
                    for v in COLOURS[o["colour"]])
        if o["shape"] == "circle":
            draw.ellipse([2 * (cx - r), 2 * (cy - r), 2 * (cx + r), 2 * (cy + r)], fill=rgb)
        else:
            poly = shape_polygon(o["shape"], cx, cy, r, float(rng.uniform(-0.25, 0.25)))
            draw.polygon([(2 * x, 2 * y) for x, y in poly], fill=rgb)
        o.update(rgb=list(rgb), center=[cx, cy], radius=r)
    meta["texture"] = texture
    return big.reduce(2)


def _chart(rng: np.random.Generator, meta: dict[str, Any], layout: Layout) -> Image.Image:
    size = int(pick(rng, layout.sizes))
    img = Image.new("RGB", (size, size), tuple(pick(rng, layout.chart_backgrounds)))
    draw = ImageDraw.Draw(img)
    right_labels = layout.chart_labels == "right"
    left = int((0.06 if right_labels else 0.15) * size)
    right = int((0.85 if right_labels else 0.96) * size)
    top, bottom = int(0.07 * size), int(0.9 * size)
    unit = (bottom - top) / 100.0
    font = label_font(max(8, int(0.045 * size)))
    step = 10 if right_labels else 20
    for v in range(0, 101, 10):
        y = round(bottom - v * unit)
        draw.line([(left, y), (right, y)], fill=(200, 200, 200), width=1)
        if v % step == 0:
            x, anchor = (right + 4, "lm") if right_labels else (left - 4, "rm")
            draw.text((x, y), str(v), fill=(40, 40, 40), font=font, anchor=anchor)
    slot = (right - left) / len(meta["bars"])
    width = slot * float(rng.uniform(*layout.bar_width))
    for i, b in enumerate(meta["bars"]):
        x0 = round(left + i * slot + (slot - width) / 2)
        x1, y = round(x0 + width), round(bottom - b["value"] * unit)
        draw.rectangle([x0, y, x1, bottom], fill=COLOURS[b["colour"]])
        b.update(x0=x0, x1=x1, top=y)
    axis_x = right if right_labels else left
    draw.line([(axis_x, top), (axis_x, bottom)], fill=(30, 30, 30), width=2)
    draw.line([(left, bottom), (right, bottom)], fill=(30, 30, 30), width=2)
    meta.update(baseline=bottom, px_per_unit=unit)
    return img


def _photo(rng: np.random.Generator, meta: dict[str, Any], layout: Layout) -> Image.Image:
    size = int(pick(rng, layout.sizes))
    photo = load_photo(meta["photo"])
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(*layout.photo_crop))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    img = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(*layout.photo_contrast)))
    meta.update(crop=[x0, y0, side], flip=False)
    return img


def rerender(category: str, meta: Mapping[str, Any], rng: np.random.Generator,
             layout: Layout) -> tuple[Image.Image, dict[str, Any]]:
    """The pair's facts drawn again in a style drawn from `layout`: (image, updated meta copy)."""
    new = copy.deepcopy(dict(meta))
    if "objects" in new:
        return _scene(rng, new, layout, spatial=category == "reasoning/spatial"), new
    if "bars" in new:
        return _chart(rng, new, layout), new
    return _photo(rng, new, layout), new
