"""The generator's entry points: category quotas, one pair from (seed, index), and the files.

Everything derives from `np.random.default_rng([seed, stream, index])`, so each pair is
reproducible on its own (`make_example`) and the whole set is byte-identical for a given seed.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from basereward.data.pairs import save_pairs
from basereward.data.regions import GroundedImage, save_regions
from basereward.data.schema import PreferencePair
from basereward.data.synthetic.base import Draft, Example
from basereward.data.synthetic.captions import example_regions
from basereward.data.synthetic.chart_task import build_chart
from basereward.data.synthetic.photo_task import build_photo
from basereward.data.synthetic.shape_tasks import (
    build_colour,
    build_count,
    build_description,
    build_existence,
    build_object,
    build_spatial,
)
from basereward.data.synthetic.twins import avoid_for, twin_draft
from basereward.data.synthetic.variety import Variety, varied_draft

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

# category -> (builder, image format): "png" for rendered scenes, "jpeg" for photos.
_TASKS: dict[str, tuple[Callable[[np.random.Generator, int], Draft], str]] = {
    "hallucination/object": (build_object, "png"),
    "hallucination/color": (build_colour, "png"),
    "hallucination/count": (build_count, "png"),
    "hallucination/existence": (build_existence, "png"),
    "reasoning/spatial": (build_spatial, "png"),
    "reasoning/chart": (build_chart, "png"),
    "general/description": (build_description, "png"),
    "general/photo": (build_photo, "jpeg"),
}
assert set(_TASKS) == set(CATEGORIES)

# Separate random streams per purpose (seed, stream[, index]) so none shares draws with another.
# Stream 2 was the image-shuffling control, now in eval/controls.py; 3 is `Variety`'s wording,
# padding and layout; 10-12 are the held-out distribution's (heldout.py).
_STREAM_PAIRS, _STREAM_CATEGORIES, _STREAM_VARIETY, _STREAM_TWINS = 0, 1, 3, 4


def task_builder(category: str) -> Callable[[np.random.Generator, int], Draft]:
    """The builder that draws and renders a pair of `category` from (rng, image size)."""
    if category not in _TASKS:
        raise ValueError(f"unknown category {category!r}; choose from {list(CATEGORIES)}")
    return _TASKS[category][0]


def check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def assign_categories(n_pairs: int, seed: int, categories: Sequence[str] | None = None,
                      reweight: Mapping[str, float] | None = None) -> list[str]:
    """Category of each index: exact quotas from the (renormalised) weights, in seeded random order.

    `reweight`: category -> factor on its default share (`CATEGORY_WEIGHTS`), e.g.
    {"hallucination/existence": 2.0}; unnamed categories keep factor 1.
    """
    names = list(CATEGORIES) if categories is None else list(dict.fromkeys(categories))
    unknown = [c for c in names if c not in CATEGORY_WEIGHTS]
    if unknown or not names:
        raise ValueError(f"unknown or empty categories {unknown or names}; choose from {list(CATEGORIES)}")
    reweight = dict(reweight or {})
    bad = [c for c in reweight if c not in CATEGORY_WEIGHTS]
    if bad:
        raise ValueError(f"reweight names unknown categories {bad}; choose from {list(CATEGORIES)}")
    for c, f in reweight.items():
        if not (isinstance(f, (int, float)) and math.isfinite(f) and f >= 0):
            raise ValueError(f"reweight factor of {c} must be a finite number >= 0, got {f!r}")
    w = np.array([CATEGORY_WEIGHTS[c] * reweight.get(c, 1.0) for c in names])
    if w.sum() <= 0:
        raise ValueError(f"reweight leaves no category with a positive share: {reweight}")
    w = w / w.sum()
    # Largest-remainder rounding keeps every category present as soon as n allows it.
    quota = np.floor(w * n_pairs).astype(int)
    order = np.argsort(-(w * n_pairs - quota), kind="stable")
    quota[order[: n_pairs - quota.sum()]] += 1
    cats = [c for c, q in zip(names, quota) for _ in range(q)]
    rng = np.random.default_rng([seed, _STREAM_CATEGORIES])
    return [cats[i] for i in rng.permutation(len(cats))]


def make_example(seed: int, index: int, category: str, image_size: int = 224,
                 variety: Variety | None = None) -> Example:
    """Build pair `index` of the set generated with `seed` (its category as `assign_categories` gave).

    `variety` turns on the training-side options (paraphrases, padding, layouts, held-out
    combinations left out; see variety.py); None or `Variety()` is the default generator.
    """
    build, image_format = task_builder(category), _TASKS[category][1]
    if variety is None or variety.is_default:
        draft = build(np.random.default_rng([seed, _STREAM_PAIRS, index]), image_size)
    else:
        draft = varied_draft(build, category, seed, index, image_size, variety, _STREAM_PAIRS, _STREAM_VARIETY)
    return Example(draft.prompt, draft.chosen, draft.rejected, category, draft.image, image_format, draft.meta)


def _examples(cats: Sequence[str], seed: int, image_size: int, variety: Variety | None, n_pairs: int):
    """The examples of a set in order: pair k of `cats` is `make_example(seed, k, cats[k])`; with
    `variety.twins`, each is followed (with that probability, when its category has one) by its
    counterfactual twin, until `n_pairs` are made."""
    twins = variety.twins if variety is not None else 0.0
    made = 0
    for k, category in enumerate(cats):
        if made == n_pairs:
            return
        ex = make_example(seed, k, category, image_size, variety)
        yield ex
        made += 1
        if made == n_pairs or not twins:
            continue
        rng = np.random.default_rng([seed, _STREAM_TWINS, k])
        if rng.random() >= twins:
            continue
        draft = Draft(ex.prompt, ex.chosen, ex.rejected, ex.image, ex.meta)
        twin = twin_draft(category, draft, rng, avoid_for(variety.exclude_heldout_combos))
        if twin is not None:
            yield Example(twin.prompt, twin.chosen, twin.rejected, category, twin.image, ex.image_format, twin.meta)
            made += 1


def save_image(ex: Example, stem: str) -> str:
    """Write the example's image as `stem`.png or `stem`.jpg; returns the absolute path."""
    if ex.image_format == "jpeg":
        path = os.path.abspath(stem + ".jpg")
        ex.image.save(path, format="JPEG", quality=90)
    else:
        path = os.path.abspath(stem + ".png")
        ex.image.save(path, format="PNG")
    return path


def generate(
    out_dir: str,
    n_pairs: int,
    seed: int,
    categories: Sequence[str] | None = None,
    image_size: int = 224,
    progress: bool = True,
    variety: Variety | None = None,
    reweight: Mapping[str, float] | None = None,
) -> list[PreferencePair]:
    """Render `n_pairs` pairs into `out_dir/images/`, write `out_dir/pairs.jsonl`, return the pairs.

    Also writes `out_dir/regions.jsonl`, the grounded captions of every image. Returned pairs carry
    absolute image paths; the JSONL holds paths relative to `out_dir`. Category shares follow
    `CATEGORY_WEIGHTS` restricted to `categories`, times `reweight` (exact quotas, shuffled).
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    check_seed(seed)
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64 so shapes stay recognisable, got {image_size}")
    cats = assign_categories(n_pairs, seed, categories, reweight)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)

    pairs: list[PreferencePair] = []
    grounded: list[GroundedImage] = []
    bar = tqdm(total=n_pairs, desc="synthetic pairs", file=sys.stderr, disable=not progress)
    for ex in _examples(cats, seed, image_size, variety, n_pairs):
        index, category = len(pairs), ex.category
        pair_id = f"synth-s{seed}-{index:06d}"
        path = save_image(ex, os.path.join(image_dir, pair_id))
        pairs.append(
            PreferencePair(
                id=pair_id,
                prompt=ex.prompt,
                chosen=ex.chosen,
                rejected=ex.rejected,
                images=(path,),
                source=SOURCE,
                category=category,
            )
        )
        # A varied layout draws its own canvas size.
        grounded.append(GroundedImage(path, example_regions(ex, ex.image.size[0])))
        bar.update(1)
    bar.close()
    save_pairs(pairs, os.path.join(out_dir, "pairs.jsonl"))
    save_regions(grounded, os.path.join(out_dir, "regions.jsonl"))
    return pairs
