"""Question and answers of a pair written from its facts (`Example.meta`) with any phrase bank.

The task builders draw the facts and render the image; this module words them. The training
paraphrases (`paraphrases.TRAIN_BANK`) and the held-out distribution (`heldout.HELDOUT_BANK`) are
two banks read by the same code, so their only difference is the wording, and a test checks that
they share no template. The label-leak rule of the package holds here too: one answer template is
filled with the true facts and then with the hallucinated ones (`base.answer_pair`).

A bank maps kind -> templates (the keys of `BANK_KEYS`), plus "relations" (spatial relation ->
words, or a tuple of wordings drawn by index so both answers share one), "photos" (photo ->
(subject, detail)), "pad" (neutral sentences, see `pad_pair`) and optionally "leads" (lead-ins
put before both answers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from basereward.data.synthetic.base import (
    NUM_WORDS,
    a,
    answer_pair,
    ask,
    cap,
    listing,
    noun,
    pick,
)
from basereward.data.synthetic.base import plural as plural_of
from basereward.data.synthetic.render import PLURAL

Bank = Mapping[str, Any]
Texts = tuple[str, str, str]  # (prompt, chosen, rejected)

BANK_KEYS = (
    "object_q_single", "object_q_multi", "object_a", "colour_q", "colour_a", "count_q", "count_a",
    "exist_q", "exist_a", "exist_a_others", "spatial_q_h", "spatial_q_v", "spatial_a", "desc_q",
    "desc_a", "tallest_q", "tallest_a", "value_q", "value_a", "diff_q", "diff_a", "photo_q", "photo_a",
)


def _object(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    objs = meta["objects"]
    c0 = objs[0]["colour"]
    prompt = ask(rng, bank["object_q_single"]) if len(objs) == 1 else ask(rng, bank["object_q_multi"], c=c0)
    chosen, rejected = answer_pair(pick(rng, bank["object_a"]), {"a_s": a(meta["true"]), "s": meta["true"]},
                                   {"a_s": a(meta["fake"]), "s": meta["fake"]})
    return prompt, chosen, rejected


def _colour(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    s = meta["objects"][0]["shape"]
    t, f = meta["true"], meta["fake"]
    chosen, rejected = answer_pair(pick(rng, bank["colour_a"]), {"c": t, "C": cap(t)}, {"c": f, "C": cap(f)}, s=s)
    return ask(rng, bank["colour_q"], s=s), chosen, rejected


def _count_fields(n: int, singular: str, plural: str) -> dict[str, Any]:
    return {"be": "is" if n == 1 else "are", "nw": NUM_WORDS[n], "NW": cap(NUM_WORDS[n]), "nd": n,
            "noun": noun(n, singular, plural)}


def _count(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    first = meta["objects"][0]
    if meta["by"] == "shape":
        # Word scenes (word_scenes.py) count nouns beyond the rendered shapes.
        singular, plural = first["shape"], PLURAL.get(first["shape"]) or plural_of(first["shape"])
    else:
        singular, plural = f"{first['colour']} shape", f"{first['colour']} shapes"
    chosen, rejected = answer_pair(pick(rng, bank["count_a"]), _count_fields(meta["true"], singular, plural),
                                   _count_fields(meta["fake"], singular, plural), p=plural)
    return ask(rng, bank["count_q"], p=plural), chosen, rejected


def _existence(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    query = (meta["query"]["shape"], meta["query"]["colour"])
    q = f"{query[1]} {query[0]}"
    others = [a(f"{o['colour']} {o['shape']}") for o in meta["objects"] if (o["shape"], o["colour"]) != query]
    yes_no = pick(rng, bank["exist_a_others"] if others and rng.random() < 0.5 else bank["exist_a"])
    yes, no = (t.format(a_q=a(q), q=q, others=listing(others) if others else "") for t in yes_no)
    chosen, rejected = (yes, no) if meta["present"] else (no, yes)
    return ask(rng, bank["exist_q"], a_q=a(q), q=q), chosen, rejected


def _spatial(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    names = {k: f"{o['colour']} {o['shape']}" for k, o in zip("AB", meta["objects"][:2])}
    rel = bank["relations"]
    template = pick(rng, bank["spatial_a"])
    if isinstance(rel[meta["true"]], tuple):  # several wordings: one style for both answers
        k = int(rng.integers(len(rel[meta["true"]])))
        true_rel, fake_rel = rel[meta["true"]][k], rel[meta["fake"]][k]
    else:
        true_rel, fake_rel = rel[meta["true"]], rel[meta["fake"]]
    chosen, rejected = answer_pair(template, {"rel": true_rel}, {"rel": fake_rel}, **names)
    horizontal = meta["true"] in ("left", "right")
    return ask(rng, bank["spatial_q_h" if horizontal else "spatial_q_v"], **names), chosen, rejected


def _description(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    objs = [(o["shape"], o["colour"]) for o in meta["objects"]]
    n = len(objs)
    order = sorted(range(n), key=lambda i: meta["objects"][i]["center"][0])  # left to right
    faked = list(objs)
    faked[meta["target"]] = (meta["fake"]["shape"], meta["fake"]["colour"])

    def items(scene: list[tuple[str, str]]) -> dict[str, str]:
        text = listing([a(f"{scene[i][1]} {scene[i][0]}") for i in order])
        return {"items": text, "Items": cap(text)}

    chosen, rejected = answer_pair(pick(rng, bank["desc_a"]), items(objs), items(faked),
                                   count=f"{NUM_WORDS[n]} {noun(n, 'shape', 'shapes')}",
                                   be="is" if n == 1 else "are", texture=meta.get("texture", "plain"))
    return ask(rng, bank["desc_q"]), chosen, rejected


def _chart(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    bars, kind = meta["bars"], meta["kind"]
    if kind == "tallest":
        t = meta["target"]
        true, fake, shared = {"c": bars[t]["colour"]}, {"c": meta["fake"]}, {"v": bars[t]["value"]}
        keys = ("tallest_q", "tallest_a")
    elif kind == "value":
        t = meta["target"]
        true, fake, shared = {"v": bars[t]["value"]}, {"v": meta["fake"]}, {"c": bars[t]["colour"]}
        keys = ("value_q", "value_a")
    else:
        (ia, ib), (fa, fb) = meta["target"], meta["fake"]
        va, vb = bars[ia]["value"], bars[ib]["value"]
        true, fake = ({"va": x, "vb": y, "d": x - y} for x, y in ((va, vb), (fa, fb)))
        shared = {"a": bars[ia]["colour"], "b": bars[ib]["colour"]}
        keys = ("diff_q", "diff_a")
    chosen, rejected = answer_pair(pick(rng, bank[keys[1]]), true, fake, **shared)
    return ask(rng, bank[keys[0]], **shared), chosen, rejected


def _photo(meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    def fields(name: str) -> dict[str, str]:
        subject, detail = bank["photos"][name]
        return {"subject": subject, "Subject": cap(subject), "detail": detail}

    chosen, rejected = answer_pair(pick(rng, bank["photo_a"]), fields(meta["photo"]), fields(meta["fake"]))
    return ask(rng, bank["photo_q"]), chosen, rejected


_BY_CATEGORY: dict[str, Callable[[Mapping[str, Any], Bank, np.random.Generator], Texts]] = {
    "hallucination/object": _object,
    "hallucination/color": _colour,
    "hallucination/count": _count,
    "hallucination/existence": _existence,
    "reasoning/spatial": _spatial,
    "reasoning/chart": _chart,
    "general/description": _description,
    "general/photo": _photo,
}


def rephrase(category: str, meta: Mapping[str, Any], bank: Bank, rng: np.random.Generator) -> Texts:
    """(prompt, chosen, rejected) for the facts in `meta`, worded from `bank`.

    A bank with "leads" puts one of them before both answers of a third of its pairs."""
    prompt, chosen, rejected = _BY_CATEGORY[category](meta, bank, rng)
    leads = bank.get("leads")
    if leads and rng.random() < 1 / 3:
        lead = pick(rng, leads)
        chosen, rejected = (lead + _lower_first(t) for t in (chosen, rejected))
    return prompt, chosen, rejected


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    # The answer's first letter follows the lead-in's comma: lowered, except "I" and all-capital words.
    return text if first in ("I", "I'm") or first.isupper() else text[0].lower() + text[1:]


def pad_pair(chosen: str, rejected: str, bank: Bank, rng: np.random.Generator,
             p_chosen: float, p_rejected: float) -> tuple[str, str, dict[str, Any]]:
    """Add a neutral sentence (no colour, shape, number or yes/no) to either answer.

    Each side is padded with its own probability and the sentence goes before or after the
    answer at random; with p_chosen == p_rejected neither length nor filler says which is right.
    Returns the two answers and a record of what was added.
    """
    record: dict[str, Any] = {}
    out = []
    for side, text, p in (("chosen", chosen, p_chosen), ("rejected", rejected, p_rejected)):
        if rng.random() < p:
            sentence = pick(rng, bank["pad"])
            before = bool(rng.random() < 0.5)
            text = f"{sentence} {text}" if before else f"{text} {sentence}"
            record[side] = "before" if before else "after"
        out.append(text)
    return out[0], out[1], record
