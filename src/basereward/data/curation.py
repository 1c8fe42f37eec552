"""Curation: scored responses -> pairs, modality mixing and length-bias control.

Pure functions on `Ranking`s and lists of `PreferencePair` (no tensors, no I/O; `data/rankings.py`
reads rankings files). Every random choice comes from `numpy.random.default_rng(seed)`, so the
same inputs and seed give the same output anywhere.
Functions that drop pairs keep the survivors in their input order; only `mix` shuffles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from basereward.data.schema import PreferencePair
from basereward.errors import DataError

LengthFn = Callable[[str], int]


def word_count(text: str) -> int:
    """Length in whitespace-separated words (an alternative `tokenizer_len` to `len`)."""
    return len(text.split())


@dataclass(frozen=True)
class Ranking:
    """One prompt with scored responses (higher is better); `images` holds absolute paths."""

    id: str
    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]
    images: tuple[str, ...] = ()
    source: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        if len(self.responses) != len(self.scores):
            raise ValueError(f"{len(self.responses)} responses but {len(self.scores)} scores")


def _ordered_pairs(r: Ranking) -> list[tuple[int, int, int, int]]:
    """(i, j, better, worse) for every i < j whose scores differ (and whose texts differ).

    Equal scores say nothing about preference, so those pairs are left out (as are identical
    response texts).
    """
    out = []
    for i in range(len(r.responses)):
        for j in range(i + 1, len(r.responses)):
            if r.scores[i] == r.scores[j] or r.responses[i] == r.responses[j]:
                continue
            better, worse = (i, j) if r.scores[i] > r.scores[j] else (j, i)
            out.append((i, j, better, worse))
    return out


def ranking_to_pairs(r: Ranking) -> list[PreferencePair]:
    """Every pair i < j of differently scored responses, the higher-scored one as chosen.

    Ids are `{r.id}-{i}-{j}` with i < j the response positions.
    """
    return [
        PreferencePair(
            id=f"{r.id}-{i}-{j}",
            prompt=r.prompt,
            chosen=r.responses[better],
            rejected=r.responses[worse],
            images=r.images,
            source=r.source,
            category=r.category,
        )
        for i, j, better, worse in _ordered_pairs(r)
    ]


def ultra_hard(r: Ranking) -> PreferencePair | None:
    """The one pair with the widest score gap (BaseReward's UltraFeedback "Ultra-Hard" selection).

    Of the pairs `ranking_to_pairs` gives, the first with the largest score gap (same id): the
    best response against the worst. None when there is no pair (fewer than two responses, or
    all scores equal).
    """
    pairs = ranking_to_pairs(r)
    gaps = [r.scores[better] - r.scores[worse] for _, _, better, worse in _ordered_pairs(r)]
    return pairs[gaps.index(max(gaps))] if pairs else None


def _stratified_sample(
    groups: Sequence[list[PreferencePair]], k: int, rng: np.random.Generator
) -> list[list[PreferencePair]]:
    """Keep `k` items in all, each group contributing in proportion to its size.

    Quotas use largest remainders (ties to the earlier group) so they sum to exactly `k`;
    within a group the kept items stay in input order.
    """
    total = sum(len(g) for g in groups)
    if k >= total:
        return [list(g) for g in groups]
    exact = [k * len(g) / total for g in groups]
    quotas = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(groups)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: k - sum(quotas)]:
        quotas[i] += 1
    kept = []
    for group, quota in zip(groups, quotas, strict=True):
        chosen = np.sort(rng.choice(len(group), size=quota, replace=False)) if quota else []
        kept.append([group[int(i)] for i in chosen])
    return kept


def mix(
    sources: Mapping[str, list[PreferencePair]], text_ratio: float | None, seed: int
) -> list[PreferencePair]:
    """Combine sources so that #text-only ≈ text_ratio × #multimodal, then shuffle.

    The paper mixes MM:text ≈ 1:0.5. The side that is over-represented is downsampled (text if
    there is more than `text_ratio` × MM, otherwise MM), each source keeping its share of that
    side. `text_ratio=None` keeps everything. Sources are visited in name order, so the result
    does not depend on how the dict was built.
    """
    names = sorted(sources)
    mm = [[p for p in sources[n] if p.is_multimodal] for n in names]
    text = [[p for p in sources[n] if not p.is_multimodal] for n in names]
    n_mm, n_text = sum(map(len, mm)), sum(map(len, text))
    rng = np.random.default_rng(seed)
    if text_ratio is not None:
        if text_ratio < 0:
            raise ValueError(f"text_ratio must be >= 0 or None, got {text_ratio}")
        if n_mm == 0:
            raise DataError(
                f"mix: text_ratio={text_ratio} needs multimodal pairs, but sources "
                f"{', '.join(names) or '(none)'} have none; use text_ratio=None for text-only data"
            )
        if n_text == 0 and text_ratio > 0:
            # Downsampling the multimodal side to 0 / text_ratio pairs would silently drop everything.
            raise DataError(
                f"mix: text_ratio={text_ratio} needs text-only pairs, but all {n_mm} pairs are multimodal; "
                "set data.text_ratio=-1 to keep the data as given"
            )
        if n_text >= text_ratio * n_mm:
            text = _stratified_sample(text, round(text_ratio * n_mm), rng)
        else:
            mm = _stratified_sample(mm, round(n_text / text_ratio), rng)
    combined = [p for group in mm + text for p in group]
    return [combined[int(i)] for i in rng.permutation(len(combined))]


def _length_sides(
    pairs: Sequence[PreferencePair], tokenizer_len: LengthFn
) -> tuple[list[int], list[int], list[int]]:
    """Indices of pairs whose chosen response is longer, shorter, or as long as the rejected."""
    longer, shorter, tied = [], [], []
    for i, p in enumerate(pairs):
        lc, lr = tokenizer_len(p.chosen), tokenizer_len(p.rejected)
        (longer if lc > lr else shorter if lc < lr else tied).append(i)
    return longer, shorter, tied


def length_bias(pairs: Sequence[PreferencePair], tokenizer_len: LengthFn = len) -> dict[str, float]:
    """Response-length statistics: how often chosen is longer / shorter / tied, and mean lengths.

    Lengths count characters by default (`tokenizer_len=word_count` for words, or a tokenizer's
    length). With no pairs every statistic but `n` is NaN.
    """
    n = len(pairs)
    if n == 0:
        nan = float("nan")
        return {
            "n": 0,
            "chosen_longer": nan,
            "chosen_shorter": nan,
            "tied": nan,
            "mean_chosen_len": nan,
            "mean_rejected_len": nan,
        }
    longer, shorter, tied = _length_sides(pairs, tokenizer_len)
    return {
        "n": n,
        "chosen_longer": len(longer) / n,
        "chosen_shorter": len(shorter) / n,
        "tied": len(tied) / n,
        "mean_chosen_len": sum(tokenizer_len(p.chosen) for p in pairs) / n,
        "mean_rejected_len": sum(tokenizer_len(p.rejected) for p in pairs) / n,
    }


def _take(n_items: int, k: int, rng: np.random.Generator) -> list[int]:
    """`k` of `range(n_items)` chosen at random, returned in increasing order."""
    return sorted(int(i) for i in rng.choice(n_items, size=k, replace=False))


def bias_by_length(
    pairs: Sequence[PreferencePair],
    long_fraction: float,
    seed: int,
    tokenizer_len: LengthFn = len,
    log: Callable[[str], None] | None = None,
) -> list[PreferencePair]:
    """The largest subset in which chosen is the longer response in `long_fraction` of the pairs.

    Pairs with equal lengths are dropped so the fraction is exact up to rounding (used by the
    length-bias ablation, e.g. `long_fraction=0.9`). `log`, if given, receives a one-line count.
    """
    if not 0.0 <= long_fraction <= 1.0:
        raise ValueError(f"long_fraction must be in [0, 1], got {long_fraction}")
    longer, shorter, tied = _length_sides(pairs, tokenizer_len)
    # The largest total n with round(f·n) longer pairs and the rest shorter, both available.
    caps = []
    if long_fraction > 0:
        caps.append(len(longer) / long_fraction)
    if long_fraction < 1:
        caps.append(len(shorter) / (1 - long_fraction))
    total = math.floor(min(caps) + 1e-9)
    n_long = min(round(long_fraction * total), len(longer))
    n_short = min(total - n_long, len(shorter))
    if n_long + n_short == 0:
        raise DataError(
            f"bias_by_length: cannot reach long_fraction={long_fraction} from {len(longer)} "
            f"chosen-longer and {len(shorter)} chosen-shorter pairs"
        )
    rng = np.random.default_rng(seed)
    keep = {longer[i] for i in _take(len(longer), n_long, rng)}
    keep |= {shorter[i] for i in _take(len(shorter), n_short, rng)}
    if log is not None:
        log(
            f"bias_by_length: kept {len(keep)} of {len(pairs)} pairs ({n_long} chosen-longer, "
            f"{n_short} chosen-shorter; dropped {len(tied)} equal-length)"
        )
    return [pairs[i] for i in sorted(keep)]


def balance_length(
    pairs: Sequence[PreferencePair],
    seed: int,
    tokenizer_len: LengthFn = len,
    log: Callable[[str], None] | None = None,
) -> list[PreferencePair]:
    """Downsample the majority side so chosen is the longer response in half of the pairs.

    Equal-length pairs carry no length signal, so all of them are kept. `log`, if given,
    receives a one-line report of how many pairs were dropped.
    """
    longer, shorter, tied = _length_sides(pairs, tokenizer_len)
    if pairs and (not longer or not shorter) and len(tied) < len(pairs):
        side = "longer" if longer else "shorter"
        raise DataError(
            f"balance_length: chosen is {side} in every pair of unequal length; "
            "balancing would drop all of them"
        )
    k = min(len(longer), len(shorter))
    rng = np.random.default_rng(seed)
    keep = set(tied)
    keep |= {longer[i] for i in _take(len(longer), k, rng)}
    keep |= {shorter[i] for i in _take(len(shorter), k, rng)}
    if log is not None:
        log(
            f"balance_length: dropped {len(pairs) - len(keep)} of {len(pairs)} pairs "
            f"(chosen longer {len(longer)} -> {k}, shorter {len(shorter)} -> {k}, "
            f"{len(tied)} equal-length kept)"
        )
    return [pairs[i] for i in sorted(keep)]
