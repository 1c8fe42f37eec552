"""Seeded generator of rendered multimodal preference pairs (the embedded data set).

Each pair asks a question about a rendered image; `chosen` states the true fact and `rejected`
is a hallucination: the same answer template with only the fact changed, so wording and length
carry no signal and only the image separates them. Scenes are simple shapes on a plain or lightly
textured background, bar charts, or crops of the real photos bundled with scikit-image and
scikit-learn (no downloads).

Label-leak rule used throughout: the true fact and the hallucinated one are drawn as an
exchangeable pair (the true value uniform, the fake uniform among the others, or a uniform draw
from a symmetric set of pairs; bar values are all two-digit, so their reading never changes a
length), and only then is the image rendered from the true one. Any
text-only feature - length, a colour word, "yes" - is therefore as likely in `rejected` as in
`chosen` across the data set.

Everything derives from `np.random.default_rng([seed, stream, index])`, so each pair is
reproducible on its own (`make_example`) and the whole set is byte-identical for a given seed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont
from tqdm import tqdm

from basereward.data.regions import GroundedImage, Region, save_regions
from basereward.data.schema import PreferencePair

SOURCE = "synthetic"

# Benchmark-style category names; the shares are the defaults when `categories` is None.
# general/photo is small because there are only ~20 real photos: held-out variety comes from crops.
CATEGORY_WEIGHTS: dict[str, float] = {
    "hallucination/object": 0.95 / 7,
    "hallucination/color": 0.95 / 7,
    "hallucination/count": 0.95 / 7,
    "hallucination/existence": 0.95 / 7,
    "reasoning/spatial": 0.95 / 7,
    "reasoning/chart": 0.95 / 7,
    "general/description": 0.95 / 7,
    "general/photo": 0.05,
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_WEIGHTS)

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
_PLURAL = {s: (s + "es" if s.endswith("ss") else s + "s") for s in SHAPES}

# Mid-light backgrounds so both the white and the black shapes stand out.
_BACKGROUNDS = ((185, 185, 185), (200, 190, 165), (170, 185, 200), (180, 195, 175), (190, 180, 200))
_TEXTURES = ("plain", "shaded", "striped", "checkered", "mottled")

_NUM_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

# Separate random streams per purpose (seed, stream[, index]) so none shares draws with another.
_STREAM_PAIRS, _STREAM_CATEGORIES, _STREAM_SHUFFLE = 0, 1, 2


@dataclass(frozen=True)
class Example:
    """One generated pair before it is written: the texts, the rendered image and the scene facts.

    `meta` records what was drawn (object centres and colours, bar values, photo crop) so tests and
    audits can check an answer against the pixels.
    """

    prompt: str
    chosen: str
    rejected: str
    category: str
    image: Image.Image
    image_format: str  # "png" for rendered scenes, "jpeg" for photos
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Public API


def generate(
    out_dir: str,
    n_pairs: int,
    seed: int,
    categories: Sequence[str] | None = None,
    image_size: int = 224,
    progress: bool = True,
) -> list[PreferencePair]:
    """Render `n_pairs` pairs into `out_dir/images/`, write `out_dir/pairs.jsonl`, return the pairs.

    Returned pairs carry absolute image paths; the JSONL holds paths relative to `out_dir`.
    Category shares follow `CATEGORY_WEIGHTS` restricted to `categories` (exact quotas, shuffled).
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    _check_seed(seed)
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64 so shapes stay recognisable, got {image_size}")
    cats = assign_categories(n_pairs, seed, categories)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)

    pairs, grounded = [], []
    bar = tqdm(cats, desc="synthetic pairs", file=sys.stderr, disable=not progress)
    for index, category in enumerate(bar):
        ex = make_example(seed, index, category, image_size)
        pair_id = f"synth-s{seed}-{index:06d}"
        if ex.image_format == "jpeg":
            path = os.path.join(image_dir, pair_id + ".jpg")
            ex.image.save(path, format="JPEG", quality=90)
        else:
            path = os.path.join(image_dir, pair_id + ".png")
            ex.image.save(path, format="PNG")
        pairs.append(
            PreferencePair(
                id=pair_id,
                prompt=ex.prompt,
                chosen=ex.chosen,
                rejected=ex.rejected,
                images=(os.path.abspath(path),),
                source=SOURCE,
                category=category,
            )
        )
        grounded.append(GroundedImage(os.path.abspath(path), example_regions(ex, image_size)))
    write_pairs(pairs, os.path.join(out_dir, "pairs.jsonl"))
    save_regions(grounded, os.path.join(out_dir, "regions.jsonl"))
    return pairs


def example_regions(ex: Example, size: int) -> tuple[Region, ...]:
    """Grounded captions of one rendered image (the alignment data format, see data/regions.py).

    Shapes: a box around each object named "<colour> <shape>"; bars: each bar named
    "<colour> bar"; photos: the whole image named by a short label of its subject.
    """
    def clip(v: float) -> float:
        return min(max(v / size, 0.0), 1.0)

    meta = ex.meta
    if "objects" in meta:
        return tuple(
            Region((clip(o["center"][0] - o["radius"]), clip(o["center"][1] - o["radius"]),
                    clip(o["center"][0] + o["radius"]), clip(o["center"][1] + o["radius"])),
                   f"{o['colour']} {o['shape']}")
            for o in meta["objects"]
        )
    if "bars" in meta:
        return tuple(
            Region((clip(b["x0"]), clip(b["top"]), clip(b["x1"]), clip(meta["baseline"])), f"{b['colour']} bar")
            for b in meta["bars"]
        )
    return (Region((0.0, 0.0, 1.0, 1.0), _PHOTO_LABELS[meta["photo"]]),)


def write_pairs(pairs: Iterable[PreferencePair], path: str) -> None:
    """Write pairs as JSONL with image paths relative to the file's directory."""
    base = os.path.dirname(os.path.abspath(path))
    os.makedirs(base, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair.to_json(relative_to=base), ensure_ascii=False) + "\n")


def shuffle_images(pairs: Sequence[PreferencePair], seed: int) -> list[PreferencePair]:
    """The same pairs with their images permuted so that no pair keeps its own image.

    A model that truly reads the image should lose its accuracy on the result. The permutation is
    drawn uniformly among those where every pair gets a different image (by index and by path).
    """
    n = len(pairs)
    if n < 2:
        raise ValueError("shuffle_images needs at least two pairs to swap images")
    _check_seed(seed)
    rng = np.random.default_rng([seed, _STREAM_SHUFFLE])
    own = [p.images for p in pairs]
    # Rejection sampling: a uniform permutation is a derangement with probability ~1/e, so this
    # needs ~3 tries; many duplicate images could make it impossible, hence the cap.
    for _ in range(1000):
        perm = rng.permutation(n)
        if all(int(j) != i and own[int(j)] != own[i] for i, j in enumerate(perm)):
            return [replace(p, images=own[int(j)]) for p, j in zip(pairs, perm)]
    raise ValueError("could not find a permutation that changes every pair's image (too many duplicates)")


def assign_categories(n_pairs: int, seed: int, categories: Sequence[str] | None = None) -> list[str]:
    """Category of each index: exact quotas from the (renormalised) weights, in seeded random order."""
    names = list(CATEGORIES) if categories is None else list(dict.fromkeys(categories))
    unknown = [c for c in names if c not in CATEGORY_WEIGHTS]
    if unknown or not names:
        raise ValueError(f"unknown or empty categories {unknown or names}; choose from {list(CATEGORIES)}")
    w = np.array([CATEGORY_WEIGHTS[c] for c in names])
    w = w / w.sum()
    # Largest-remainder rounding keeps every category present as soon as n allows it.
    quota = np.floor(w * n_pairs).astype(int)
    order = np.argsort(-(w * n_pairs - quota), kind="stable")
    quota[order[: n_pairs - quota.sum()]] += 1
    cats = [c for c, q in zip(names, quota) for _ in range(q)]
    rng = np.random.default_rng([seed, _STREAM_CATEGORIES])
    return [cats[i] for i in rng.permutation(len(cats))]


def make_example(seed: int, index: int, category: str, image_size: int = 224) -> Example:
    """Build pair `index` of the set generated with `seed` (its category as `assign_categories` gave)."""
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; choose from {list(CATEGORIES)}")
    rng = np.random.default_rng([seed, _STREAM_PAIRS, index])
    return _BUILDERS[category](rng, image_size)


# ----------------------------------------------------------------------------------------------
# Text helpers


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _other(rng: np.random.Generator, seq: Sequence[Any], value: Any) -> Any:
    """Uniform draw from `seq` without `value`: with `value` uniform, the pair is exchangeable."""
    return _pick(rng, [s for s in seq if s != value])


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _noun(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural


# ----------------------------------------------------------------------------------------------
# Rendering: shape scenes


def _shape_polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
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
    base = np.array(_pick(rng, _BACKGROUNDS), dtype=np.float32)
    texture = _pick(rng, _TEXTURES)
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
    gap = 0.06 * size
    bound = [1.15 * r for r in radii]  # the star/triangle tips reach ~1.1 r
    for _ in range(200):
        centres: list[tuple[float, float]] = []
        for i, b in enumerate(bound):
            for _ in range(200):
                c = (float(rng.uniform(b + 2, size - b - 2)), float(rng.uniform(b + 2, size - b - 2)))
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
    raise RuntimeError("could not place objects; too many or too large for the image")


def _radii(rng: np.random.Generator, n: int, size: int) -> list[float]:
    # Fewer objects may be larger; the smallest still leaves a solid interior for pixel checks.
    hi = {1: 0.16, 2: 0.14, 3: 0.125, 4: 0.11, 5: 0.1}[n]
    return [float(rng.uniform(0.075, hi)) * size for _ in range(n)]


def _render_scene(
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
            draw.polygon([(2 * x, 2 * y) for x, y in _shape_polygon(shape, cx, cy, r, rot)], fill=rgb)
        recs.append({"shape": shape, "colour": colour, "rgb": list(rgb), "center": [cx, cy], "radius": r})
    return big.reduce(2), {"texture": texture, "objects": recs}


def _distinct_objects(
    rng: np.random.Generator, n: int, shapes: Sequence[str], colours: Sequence[str]
) -> list[tuple[str, str]]:
    """n (shape, colour) objects with no repeated combination, so "the red star" is unambiguous."""
    combos: list[tuple[str, str]] = []
    while len(combos) < n:
        c = (_pick(rng, shapes), _pick(rng, colours))
        if c not in combos:
            combos.append(c)
    return combos


# ----------------------------------------------------------------------------------------------
# Category builders. Each returns an Example whose rejected answer is the chosen template filled
# with the hallucinated fact.

_OBJECT_Q_SINGLE = (
    "What shape is shown in the image?",
    "Which shape appears in this picture?",
    "Name the shape in the image.",
    "What kind of shape is drawn here?",
)
_OBJECT_Q_MULTI = (
    "What shape is the {c} object?",
    "Which shape is drawn in {c}?",
    "There is one {c} object in the image. What shape is it?",
    "Name the shape of the {c} object.",
)
_OBJECT_A = (
    "It is {a_s}.",
    "The shape is {a_s}.",
    "That is {a_s}.",
    "I can see {a_s}.",
    "The object is shaped like {a_s}.",
)


def _build_object(rng: np.random.Generator, size: int) -> Example:
    true_shape = _pick(rng, SHAPES)
    fake_shape = _other(rng, SHAPES, true_shape)
    n = int(rng.integers(1, 5))
    if n == 1:
        colour = _pick(rng, COLOUR_NAMES)
        objects = [(true_shape, colour)]
        prompt = _pick(rng, _OBJECT_Q_SINGLE)
    else:
        # Distinct colours so the colour names exactly one object; other shapes are free.
        colours = [COLOUR_NAMES[i] for i in rng.permutation(len(COLOUR_NAMES))[:n]]
        objects = [(true_shape, colours[0])] + [(_pick(rng, SHAPES), c) for c in colours[1:]]
        prompt = _pick(rng, _OBJECT_Q_MULTI).format(c=colours[0])
    template = _pick(rng, _OBJECT_A)
    image, meta = _render_scene(rng, objects, size)
    meta.update(target=0, true=true_shape, fake=fake_shape)
    return Example(
        prompt,
        template.format(a_s=_a(true_shape)),
        template.format(a_s=_a(fake_shape)),
        "hallucination/object",
        image,
        "png",
        meta,
    )


_COLOUR_Q = (
    "What colour is the {s}?",
    "What is the color of the {s} in the image?",
    "Which colour is the {s} painted in?",
    "Tell me the colour of the {s}.",
    "What color is the {s} shown here?",
)
_COLOUR_A = (
    "The {s} is {c}.",
    "It is {c}.",
    "The {s} in the image is coloured {c}.",
    "{C}: the {s} is filled with {c}.",
    "The {s} has a {c} fill.",
    "That {s} is painted {c}.",
)


def _build_colour(rng: np.random.Generator, size: int) -> Example:
    true_c = _pick(rng, COLOUR_NAMES)
    fake_c = _other(rng, COLOUR_NAMES, true_c)
    n = int(rng.integers(1, 5))
    shape = _pick(rng, SHAPES)
    # The asked-about shape is unique; distractors (other shapes) may well carry the fake colour,
    # so the model has to bind colour to shape rather than spot a colour anywhere.
    others = _distinct_objects(rng, n - 1, [s for s in SHAPES if s != shape], COLOUR_NAMES)
    image, meta = _render_scene(rng, [(shape, true_c)] + others, size)
    meta.update(target=0, true=true_c, fake=fake_c)
    template = _pick(rng, _COLOUR_A)
    fill = lambda c: template.format(s=shape, c=c, C=_cap(c))  # noqa: E731
    prompt = _pick(rng, _COLOUR_Q).format(s=shape)
    return Example(prompt, fill(true_c), fill(fake_c), "hallucination/color", image, "png", meta)


_COUNT_Q = (
    "How many {p} are there in the image?",
    "Count the {p} in this picture.",
    "How many {p} can you see?",
    "What is the number of {p} shown in the image?",
    "How many {p} does this image contain?",
)
_COUNT_A = (
    "There {be} {nw} {noun} in the image.",
    "I count {nw} {noun}.",
    "The image contains exactly {nd} {noun}.",
    "{NW}: that is how many {p} appear in the picture.",
    "Counting carefully, I find {nd} {noun} here.",
)


def _build_count(rng: np.random.Generator, size: int) -> Example:
    true_n = int(rng.integers(1, 5))
    fake_n = _other(rng, (1, 2, 3, 4), true_n)
    # Up to 5 objects in all, so that a count of four can still come with a distractor.
    n_distract = int(rng.integers(0, min(2, 5 - true_n) + 1))
    by_shape = rng.random() < 0.5
    if by_shape:
        shape = _pick(rng, SHAPES)
        targets = [(shape, _pick(rng, COLOUR_NAMES)) for _ in range(true_n)]
        other_shapes = [s for s in SHAPES if s != shape]
        others = [(_pick(rng, other_shapes), _pick(rng, COLOUR_NAMES)) for _ in range(n_distract)]
        singular, plural = shape, _PLURAL[shape]
    else:
        colour = _pick(rng, COLOUR_NAMES)
        targets = [(_pick(rng, SHAPES), colour) for _ in range(true_n)]
        other_colours = [c for c in COLOUR_NAMES if c != colour]
        others = [(_pick(rng, SHAPES), _pick(rng, other_colours)) for _ in range(n_distract)]
        singular, plural = f"{colour} shape", f"{colour} shapes"
    image, meta = _render_scene(rng, targets + others, size)
    meta.update(targets=list(range(true_n)), by="shape" if by_shape else "colour", true=true_n, fake=fake_n)
    template = _pick(rng, _COUNT_A)

    def fill(n: int) -> str:
        return template.format(
            be="is" if n == 1 else "are",
            nw=_NUM_WORDS[n],
            NW=_cap(_NUM_WORDS[n]),
            nd=n,
            noun=_noun(n, singular, plural),
            p=plural,
        )

    prompt = _pick(rng, _COUNT_Q).format(p=plural)
    return Example(prompt, fill(true_n), fill(fake_n), "hallucination/count", image, "png", meta)


_EXIST_Q = (
    "Is there {a_q} in the image?",
    "Does this picture contain {a_q}?",
    "Can you see {a_q} here?",
    "Is {a_q} present in the image?",
)
# (yes, no) templates share everything but the polarity, so they differ by a few characters and
# which of them is longer is decided by the coin that chose the truth.
_EXIST_A = (
    ("Yes, there is {a_q} in the image.", "No, there is no {q} in the image."),
    ("Yes. I can see {a_q} in this picture.", "No. I cannot see {a_q} in this picture."),
    ("Yes, the picture does contain {a_q}.", "No, the picture does not contain {a_q}."),
    ("There is {a_q} here, so the answer is yes.", "There is no {q} here, so the answer is no."),
)
_EXIST_A_OTHERS = (
    ("Yes. Besides {others}, the image also has {a_q}.", "No. Besides {others}, the image has no {q}."),
    ("Yes: next to {others} there is {a_q}.", "No: apart from {others} there is no {q}."),
)


def _build_existence(rng: np.random.Generator, size: int) -> Example:
    present = rng.random() < 0.5
    n = int(rng.integers(1, 5))
    objects = _distinct_objects(rng, n, SHAPES, COLOUR_NAMES)
    if present:
        query = objects[int(rng.integers(n))]
    else:
        # Near misses (right shape wrong colour, or the reverse) are the hallucinations that
        # benchmarks such as POPE probe; a third of queries are unrelated objects.
        kind = int(rng.integers(3))
        anchor = objects[int(rng.integers(n))]
        while True:
            if kind == 0:
                query = (anchor[0], _other(rng, COLOUR_NAMES, anchor[1]))
            elif kind == 1:
                query = (_other(rng, SHAPES, anchor[0]), anchor[1])
            else:
                query = (_pick(rng, SHAPES), _pick(rng, COLOUR_NAMES))
            if query not in objects:
                break
    image, meta = _render_scene(rng, objects, size)
    q = f"{query[1]} {query[0]}"
    others = [_a(f"{c} {s}") for s, c in objects if (s, c) != query]
    if others and rng.random() < 0.5:
        yes_t, no_t = _pick(rng, _EXIST_A_OTHERS)
    else:
        yes_t, no_t = _pick(rng, _EXIST_A)
    fields = dict(a_q=_a(q), q=q, others=_listing(others) if others else "")
    yes, no = yes_t.format(**fields), no_t.format(**fields)
    meta.update(query={"shape": query[0], "colour": query[1]}, present=bool(present))
    chosen, rejected = (yes, no) if present else (no, yes)
    prompt = _pick(rng, _EXIST_Q).format(a_q=_a(q))
    return Example(prompt, chosen, rejected, "hallucination/existence", image, "png", meta)


_SPATIAL_Q_H = (
    "Is the {A} to the left or to the right of the {B}?",
    "Where is the {A} relative to the {B}?",
    "On which side of the {B} is the {A}?",
    "Describe the position of the {A} with respect to the {B}.",
)
_SPATIAL_Q_V = (
    "Is the {A} above or below the {B}?",
    "Where is the {A} relative to the {B}?",
    "Describe the position of the {A} with respect to the {B}.",
    "Is the {A} placed above or below the {B}?",
)
_SPATIAL_A = (
    "The {A} is {rel} the {B}.",
    "It is {rel} the {B}.",
    "Looking at the image, the {A} appears {rel} the {B}.",
    "The {A} sits {rel} the {B}.",
    "In the picture, the {A} is placed {rel} the {B}.",
)
_RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


def _build_spatial(rng: np.random.Generator, size: int) -> Example:
    horizontal = rng.random() < 0.5
    true_rel, fake_rel = ("left", "right") if horizontal else ("above", "below")
    if rng.random() < 0.5:
        true_rel, fake_rel = fake_rel, true_rel
    n = int(rng.integers(2, 5))
    objects = _distinct_objects(rng, n, SHAPES, COLOUR_NAMES)
    min_sep = 0.12 * size

    def ok(a: tuple[float, float], b: tuple[float, float]) -> bool:
        # A's offset from B along the asked axis is large and dominates the other axis, so
        # "left of" / "above" has one clear answer.
        along, across = (a[0] - b[0], a[1] - b[1]) if horizontal else (a[1] - b[1], a[0] - b[0])
        if true_rel in ("right", "below"):
            along = -along
        return -along >= min_sep and abs(across) <= 0.5 * -along

    image, meta = _render_scene(rng, objects, size, first_pair_ok=ok)
    names = {k: f"{c} {s}" for k, (s, c) in zip("AB", objects[:2])}
    template = _pick(rng, _SPATIAL_A)
    fill = lambda rel: template.format(A=names["A"], B=names["B"], rel=_RELATIONS[rel])  # noqa: E731
    prompt = _pick(rng, _SPATIAL_Q_H if horizontal else _SPATIAL_Q_V).format(**names)
    meta.update(true=true_rel, fake=fake_rel)
    return Example(prompt, fill(true_rel), fill(fake_rel), "reasoning/spatial", image, "png", meta)


_DESC_Q = (
    "Describe the image.",
    "What does this image show?",
    "Give a short description of the scene.",
    "Briefly describe what you see in this picture.",
    "What is in this image?",
)
_DESC_A = (
    "The image shows {count}: {items}.",
    "{Items} on a {texture} background.",
    "There {be} {count} on a {texture} background: {items}.",
    "A {texture} background with {items}.",
    "This picture contains {items}.",
)


def _build_description(rng: np.random.Generator, size: int) -> Example:
    n = int(rng.integers(1, 5))
    objects = _distinct_objects(rng, n, SHAPES, COLOUR_NAMES)
    image, meta = _render_scene(rng, objects, size)
    # Listed left to right, the order a reader scans in.
    order = sorted(range(n), key=lambda i: meta["objects"][i]["center"][0])
    target = int(rng.integers(n))
    attr = "colour" if rng.random() < 0.5 else "shape"
    s, c = objects[target]
    # The swap never recreates another object's combination: true scenes have no repeats, so a
    # repeated "a red star ... a red star" would mark the rejected answer without the image.
    if attr == "colour":
        fake = (s, _pick(rng, [x for x in COLOUR_NAMES if (s, x) not in objects]))
    else:
        fake = (_pick(rng, [x for x in SHAPES if (x, c) not in objects]), c)
    template = _pick(rng, _DESC_A)

    def fill(objs: list[tuple[str, str]]) -> str:
        items = _listing([_a(f"{objs[i][1]} {objs[i][0]}") for i in order])
        return template.format(
            count=f"{_NUM_WORDS[n]} {_noun(n, 'shape', 'shapes')}",
            be="is" if n == 1 else "are",
            items=items,
            Items=_cap(items),
            texture=meta["texture"],
        )

    faked = list(objects)
    faked[target] = fake
    meta.update(target=target, attribute=attr, fake={"shape": fake[0], "colour": fake[1]})
    return Example(_pick(rng, _DESC_Q), fill(objects), fill(faked), "general/description", image, "png", meta)


# ----------------------------------------------------------------------------------------------
# Bar charts

_CHART_VALUES = tuple(range(10, 100, 5))  # all two-digit: reading a value never changes the length
_TALLEST_Q = (
    "Which bar in the chart is the tallest?",
    "Which bar has the largest value?",
    "Looking at the bar chart, which colour is the highest bar?",
    "Which bar reaches the highest value in this chart?",
)
_TALLEST_A = (
    "The {c} bar is the tallest, reaching {v}.",
    "The highest bar is the {c} one, at {v}.",
    "The {c} bar has the largest value: {v}.",
    "It is the {c} bar, which goes up to {v}.",
)
_VALUE_Q = (
    "What value does the {c} bar show?",
    "What is the value of the {c} bar?",
    "How high does the {c} bar reach?",
    "Read off the value of the {c} bar in the chart.",
)
_VALUE_A = (
    "The {c} bar shows a value of {v}.",
    "Its value is {v}.",
    "The {c} bar reaches {v}.",
    "Reading the chart, the {c} bar is at {v}.",
)
_DIFF_Q = (
    "How much higher is the {a} bar than the {b} bar?",
    "What is the difference between the {a} bar and the {b} bar?",
    "By how much does the {a} bar exceed the {b} bar?",
    "Compute the {a} bar's value minus the {b} bar's value.",
)
_DIFF_A = (
    "The {a} bar is at {va} and the {b} bar is at {vb}, so the difference is {d}.",
    "{va} - {vb} = {d}, so the {a} bar is {d} higher.",
    "The difference is {d} ({va} for {a} versus {vb} for {b}).",
    "The {a} bar exceeds the {b} bar by {d}, since {va} - {vb} = {d}.",
)


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def _render_chart(
    rng: np.random.Generator, colours: list[str], values: list[int], size: int
) -> tuple[Image.Image, dict[str, Any]]:
    """Vertical bar chart on a 0-100 axis with gridlines every 10 so values can be read off."""
    bg = tuple(int(v) for v in _pick(rng, ((250, 250, 250), (245, 242, 232), (238, 242, 248))))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = int(0.15 * size), int(0.96 * size), int(0.06 * size), int(0.92 * size)
    unit = (bottom - top) / 100.0
    font = _font(max(8, int(0.05 * size)))
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


def _build_chart(rng: np.random.Generator, size: int) -> Example:
    n = int(rng.integers(3, 6))
    # White bars would vanish on the light chart background.
    colours = [str(c) for c in rng.permutation([c for c in COLOUR_NAMES if c != "white"])[:n]]
    kind = _pick(rng, ("tallest", "value", "difference"))
    values = [int(_pick(rng, _CHART_VALUES)) for _ in range(n)]
    if kind == "tallest":
        # Bars are assigned to colours at random, so the true colour (argmax) and the fake one
        # (another bar) form an exchangeable pair; the stated height is the true maximum in both.
        t = int(rng.integers(n))
        top = int(_pick(rng, [v for v in _CHART_VALUES if v >= 30]))
        values = [top if i == t else int(_pick(rng, [v for v in _CHART_VALUES if v < top])) for i in range(n)]
        f = _other(rng, list(range(n)), t)
        image, meta = _render_chart(rng, colours, values, size)
        template = _pick(rng, _TALLEST_A)
        chosen, rejected = (template.format(c=colours[i], v=top) for i in (t, f))
        prompt = _pick(rng, _TALLEST_Q)
        meta.update(kind=kind, target=t, fake=colours[f])
    elif kind == "value":
        t = int(rng.integers(n))
        true_v = values[t]
        # At least one gridline apart: a half-gridline misreading is too subtle to call wrong.
        fake_v = _pick(rng, [v for v in _CHART_VALUES if abs(v - true_v) >= 10])
        image, meta = _render_chart(rng, colours, values, size)
        template = _pick(rng, _VALUE_A)
        chosen, rejected = (template.format(c=colours[t], v=v) for v in (true_v, fake_v))
        prompt = _pick(rng, _VALUE_Q).format(c=colours[t])
        meta.update(kind=kind, target=t, fake=fake_v)
    else:
        # (va, vb) uniform over ordered pairs va > vb: then each value is uniform given the other,
        # so the misread value below (drawn from the same conditional set) is exchangeable with
        # the true one. va >= 20 and vb <= 85 leave every value at least one alternative.
        lows, highs = [v for v in _CHART_VALUES if v <= 85], [v for v in _CHART_VALUES if v >= 20]
        pairs = [(a, b) for a in highs for b in lows if a > b]
        va, vb = _pick(rng, pairs)
        ia, ib = (int(i) for i in rng.permutation(n)[:2])
        values[ia], values[ib] = va, vb
        misread_a = rng.random() < 0.5
        if misread_a:
            fa, fb = _other(rng, [v for v in highs if v > vb], va), vb
        else:
            fa, fb = va, _other(rng, [v for v in lows if v < va], vb)
        image, meta = _render_chart(rng, colours, values, size)
        template = _pick(rng, _DIFF_A)
        fill = lambda x, y: template.format(a=colours[ia], b=colours[ib], va=x, vb=y, d=x - y)  # noqa: E731
        chosen, rejected = fill(va, vb), fill(fa, fb)
        prompt = _pick(rng, _DIFF_Q).format(a=colours[ia], b=colours[ib])
        meta.update(kind=kind, target=[ia, ib], fake=[fa, fb])
    return Example(prompt, chosen, rejected, "reasoning/chart", image, "png", meta)


# ----------------------------------------------------------------------------------------------
# Real photos (bundled with scikit-image / scikit-learn; nothing is downloaded)

# name -> (subject, detail). Written to stay true under the crops (>= 65% of the short side) and
# horizontal flips applied below; of similar length so a wrong caption is not shorter or longer.
_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("an astronaut in an orange spacesuit", "posing for an official portrait"),
    "coffee": ("a cup of coffee on a red saucer", "with a small spoon beside the cup"),
    "chelsea": ("a close-up of a tabby cat's face", "staring straight at the camera"),
    "rocket": ("a rocket standing on its launch pad", "under a dark blue evening sky"),
    "camera": ("a man looking through a camera", "set up on a tripod on a lawn"),
    "coins": ("rows of old silver coins", "arranged on a dark grey surface"),
    "horse": ("a black silhouette of a horse", "standing on a plain white background"),
    "hubble_deep_field": ("a deep-space view full of galaxies", "scattered across a black sky"),
    "immunohistochemistry": ("a microscope image of stained tissue", "with brown and blue stained cells"),
    "moon": ("a grey close-up of the lunar surface", "with small craters and dark patches"),
    "retina": ("a medical image of a human retina", "with red blood vessels on an orange disc"),
    "brick": ("a grey wall of long thin bricks", "laid in neat staggered rows"),
    "grass": ("a black-and-white close-up of grass", "with thin blades filling the frame"),
    "gravel": ("a grey close-up of loose gravel", "with small stones covering the ground"),
    "text": ("handwritten mathematical formulas", "written on a sheet of paper"),
    "page": ("a printed page of text", "about region-based image segmentation"),
    "motorcycle": ("a red motorcycle parked in a garage", "in front of shelves with boxes"),
    "china": ("a traditional Chinese temple tower", "rising above trees next to a lake"),
    "flower": ("an orange dahlia flower in bloom", "against a dark green background"),
    "colorwheel": ("a circular colour wheel", "showing a rainbow of hues on black"),
}
# Short labels for the grounded captions (regions.jsonl): words of the subject above.
_PHOTO_LABELS: dict[str, str] = {
    "astronaut": "astronaut spacesuit", "coffee": "coffee cup", "chelsea": "tabby cat", "rocket": "rocket",
    "camera": "camera tripod", "coins": "silver coins", "horse": "horse silhouette", "hubble_deep_field": "galaxies",
    "immunohistochemistry": "stained tissue", "moon": "lunar craters", "retina": "retina vessels",
    "brick": "brick wall", "grass": "grass", "gravel": "gravel stones", "text": "handwritten formulas",
    "page": "printed page", "motorcycle": "red motorcycle", "china": "temple tower", "flower": "dahlia flower",
    "colorwheel": "colour wheel",
}
_NO_FLIP = {"text", "page"}  # mirrored writing would not be "a page of text" any more
_PHOTO_NAMES = tuple(_PHOTOS)
_PHOTO_Q = (
    "Describe this photo.",
    "What is shown in this picture?",
    "Write a one-sentence caption for this image.",
    "What is the subject of this photograph?",
    "What does this image depict?",
)
_PHOTO_A = (
    "This photo shows {subject}.",
    "{Subject}, {detail}.",
    "The picture shows {subject}, {detail}.",
    "A photograph of {subject}.",
    "In this image we see {subject}, {detail}.",
)
_PHOTO_LEN_TOL = 10  # max caption length difference within a pair, in characters


@lru_cache(maxsize=None)
def _photo(name: str) -> Image.Image:
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


def _caption(name: str, template: str) -> str:
    subject, detail = _PHOTOS[name]
    return template.format(subject=subject, Subject=_cap(subject), detail=detail)


@lru_cache(maxsize=None)
def _caption_pairs(template: str) -> tuple[tuple[str, str], ...]:
    """Ordered (true, fake) photo pairs whose captions differ by at most `_PHOTO_LEN_TOL` characters.

    The relation is symmetric, so drawing uniformly from it keeps true/fake exchangeable.
    """
    lens = {p: len(_caption(p, template)) for p in _PHOTO_NAMES}
    names = _PHOTO_NAMES
    return tuple((a, b) for a in names for b in names if a != b and abs(lens[a] - lens[b]) <= _PHOTO_LEN_TOL)


def _build_photo(rng: np.random.Generator, size: int) -> Example:
    template = _pick(rng, _PHOTO_A)
    true_p, fake_p = _pick(rng, _caption_pairs(template))
    photo = _photo(true_p)
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.65, 1.0))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    flip = true_p not in _NO_FLIP and rng.random() < 0.5
    img = photo.crop((x0, y0, x0 + side, y0 + side))
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    brightness = float(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Brightness(img).enhance(brightness)
    meta = {"photo": true_p, "fake": fake_p, "crop": [x0, y0, side], "flip": bool(flip)}
    meta["brightness"] = brightness
    chosen, rejected = _caption(true_p, template), _caption(fake_p, template)
    return Example(_pick(rng, _PHOTO_Q), chosen, rejected, "general/photo", img, "jpeg", meta)


_BUILDERS = {
    "hallucination/object": _build_object,
    "hallucination/color": _build_colour,
    "hallucination/count": _build_count,
    "hallucination/existence": _build_existence,
    "reasoning/spatial": _build_spatial,
    "reasoning/chart": _build_chart,
    "general/description": _build_description,
    "general/photo": _build_photo,
}
assert set(_BUILDERS) == set(CATEGORIES)
