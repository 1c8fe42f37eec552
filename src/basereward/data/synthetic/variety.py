"""Options of the training generator for transfer: paraphrases, neutral padding, varied layouts,
and colour/shape combinations kept for the held-out distribution.

`Variety()` (all off) is today's generator, byte for byte. Each option draws from its own random
stream, so turning one on never changes the facts of a pair, only its wording or its picture
(except `exclude_heldout_combos`, which redraws the pairs that would use a held-out combination).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from basereward.data.synthetic.base import Draft
from basereward.data.synthetic.combos import HELDOUT_COMBOS, label_of, used_combos
from basereward.data.synthetic.layouts import TRAIN_LAYOUT, rerender
from basereward.data.synthetic.paraphrases import BASE_BANK, TRAIN_BANK
from basereward.data.synthetic.rephrase import pad_pair, rephrase

_MAX_DRAWS = 500


@dataclass(frozen=True)
class Variety:
    paraphrase: bool = False
    """Word each pair from the training paraphrase bank (today's templates plus many more)."""
    pad: float = 0.0
    """Probability that each answer, chosen and rejected independently, gets a neutral sentence
    before or after it, so neither length nor filler says which answer is right."""
    layout: bool = False
    """Re-render each image in a style drawn from `layouts.TRAIN_LAYOUT` (canvas size, background
    tint and texture, shade, object scale, clustered placement, chart style)."""
    exclude_heldout_combos: bool = False
    """No pair shows or names a combination in `combos.HELDOUT_COMBOS`."""
    twins: float = 0.0
    """Probability that a pair is followed by its counterfactual twin (`twins.py`): the same texts
    over a re-rendered picture in which the other answer is true, chosen and rejected swapped.
    The number of pairs stays `n_pairs`; twins take the place of independent pairs."""
    foils: float = 0.0
    """Probability that an existence question about an absent object asks for a conjunction foil
    instead: the colour of one object in the picture with the shape of another ("a yellow
    triangle" over a yellow circle and a red triangle), so that neither the colour nor the shape
    alone says the answer (POPE's adversarial negatives; only scenes with such a pair)."""

    def __post_init__(self) -> None:
        for name in ("pad", "twins", "foils"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Variety.{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def is_default(self) -> bool:
        return self == Variety()


def draw_until(build: Callable[[np.random.Generator, int], Draft], category: str,
               make_rng: Callable[[int], np.random.Generator], size: int,
               accept: Callable[[Mapping[str, Any]], bool]) -> Draft:
    """The first draw (rng `make_rng(k)`, k = 0, 1, ...) that `accept`s, keeping the first draw's label.

    Keeping `combos.label_of` (the existence answer, the true count) stops the condition from
    skewing the labels; the other categories are conditioned symmetrically in true and fake.
    """
    first = build(make_rng(0), size)
    label = label_of(category, first.meta)
    if accept(first.meta):
        return first
    for k in range(1, _MAX_DRAWS):
        draft = build(make_rng(k), size)
        if accept(draft.meta) and label_of(category, draft.meta) == label:
            return draft
    raise RuntimeError(f"no acceptable {category} pair in {_MAX_DRAWS} draws")


def conjunction_foil(objects: Sequence[Mapping[str, Any]], rng: np.random.Generator,
                     exclude_heldout: bool) -> tuple[str, str] | None:
    """(shape, colour) of one object's shape with another's colour, a combination the scene does not
    show (nor `HELDOUT_COMBOS` when `exclude_heldout`); None when the scene has no such pair."""
    scene = {(o["shape"], o["colour"]) for o in objects}
    options = sorted({(b["shape"], a["colour"]) for a in objects for b in objects
                      if a["colour"] != b["colour"] and a["shape"] != b["shape"]}
                     - scene - (HELDOUT_COMBOS if exclude_heldout else set()))
    return options[int(rng.integers(len(options)))] if options else None


def varied_draft(build: Callable[[np.random.Generator, int], Draft], category: str, seed: int, index: int,
                 size: int, variety: Variety, pair_stream: int, variety_stream: int) -> Draft:
    """Pair `index` of the training set with `seed`, with the options of `variety` applied."""
    def make_rng(k: int) -> np.random.Generator:
        # Draw 0 is the default generator's own draw, so without a held-out combination the facts
        # are exactly the default pair's.
        return np.random.default_rng([seed, pair_stream, index] if k == 0 else [seed, pair_stream, index, k])

    if variety.exclude_heldout_combos:
        draft = draw_until(build, category, make_rng, size,
                           lambda meta: not (used_combos(category, meta) & HELDOUT_COMBOS))
    else:
        draft = build(make_rng(0), size)
    prompt, chosen, rejected, image, meta = draft
    foiled = False
    if variety.foils and category == "hallucination/existence" and not meta["present"]:
        foil_rng = np.random.default_rng([seed, variety_stream, index, 0xF0])
        if foil_rng.random() < variety.foils:
            query = conjunction_foil(meta["objects"], foil_rng, variety.exclude_heldout_combos)
            if query is not None:
                meta, foiled = {**meta, "query": {"shape": query[0], "colour": query[1]}}, True
    rng = np.random.default_rng([seed, variety_stream, index])
    if variety.layout:
        image, meta = rerender(category, meta, rng, TRAIN_LAYOUT)
    if variety.paraphrase or variety.layout or foiled:
        prompt, chosen, rejected = rephrase(category, meta, TRAIN_BANK if variety.paraphrase else BASE_BANK, rng)
    if variety.pad > 0:
        chosen, rejected, record = pad_pair(chosen, rejected, TRAIN_BANK, rng, variety.pad, variety.pad)
        meta = {**meta, "padding": record}
    return Draft(prompt, chosen, rejected, image, meta)
