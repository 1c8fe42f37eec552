"""What every task builder shares: exchangeable random draws, answer phrasing, and the records.

A builder draws the true fact and the hallucinated one as an exchangeable pair (`pick`, `other`),
renders the image from the true one, asks a question (`ask`) and fills one answer template twice
(`answer_pair`): the rejected answer differs from the chosen one only in the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

NUM_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_SAME_PLURAL = frozenset({"fish", "sheep", "deer"})


def plural(noun: str) -> str:
    """English plural of a concrete noun: "cross" -> "crosses", "box" -> "boxes", "fish" -> "fish"."""
    if noun in _SAME_PLURAL:
        return noun
    return noun + "es" if noun.endswith(("ss", "x", "ch", "sh")) else noun + "s"


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


class Draft(NamedTuple):
    """What a builder returns; `make_example` adds the category and the image format."""

    prompt: str
    chosen: str
    rejected: str
    image: Image.Image
    meta: dict[str, Any]


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def other(rng: np.random.Generator, seq: Sequence[Any], value: Any) -> Any:
    """Uniform draw from `seq` without `value`: with `value` uniform, the pair is exchangeable."""
    return pick(rng, [s for s in seq if s != value])


def true_and_fake(rng: np.random.Generator, seq: Sequence[Any]) -> tuple[Any, Any]:
    """The true value, uniform over `seq`, and the hallucinated one, uniform among the others."""
    true = pick(rng, seq)
    return true, other(rng, seq, true)


def ask(rng: np.random.Generator, questions: Sequence[str], **fields: Any) -> str:
    """One of the question templates, filled in."""
    return pick(rng, questions).format(**fields)


def answer_pair(
    template: str, true: Mapping[str, Any], fake: Mapping[str, Any], **shared: Any
) -> tuple[str, str]:
    """(chosen, rejected): one template filled with the true facts, then with the hallucinated ones.

    Only the facts differ, so wording and length carry no signal beyond what the facts carry.
    """
    return template.format(**shared, **true), template.format(**shared, **fake)


def a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def noun(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural
