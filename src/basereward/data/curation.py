"""Curation: scored responses -> pairs, modality mixing and length-bias control.

Pure functions on `Ranking`s and lists of `PreferencePair` (no tensors, no I/O; `data/rankings.py`
reads rankings files). Every random choice comes from `numpy.random.default_rng(seed)`, so the
same inputs and seed give the same output anywhere.
Functions that drop pairs keep the survivors in their input order; only `mix` shuffles.
The second half holds the streaming steps of `data build` (dedup, length resampling, mixing
quotas, validation split, answer-order balance) as masks over compact per-pair facts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


# --------------------------------------------------------------------------------------------
# Streaming curation (`data build`): decisions on compact per-pair facts, applied to a stream.
#
# A build sees millions of pairs, so it never holds them: a first pass over each source records
# a few numbers per pair (`pair_key`, `length_side`, lengths, modality: ~20 bytes, in numpy), the
# functions below turn those numbers into keep-masks (exact counts, seeded), and a second pass
# over the same stream keeps the pairs the masks name (`take`).
# --------------------------------------------------------------------------------------------


def pair_key(p: PreferencePair) -> int:
    """A 64-bit hash of what makes a pair the same pair: (history, prompt, images, chosen, rejected).

    Images and history are part of it because one question ("Describe the image.") with the same
    two answers about different images is a different pair. Ids and sources are not: the same
    pair published by two datasets is a duplicate.
    """
    h = hashlib.blake2b(digest_size=8)
    for role, content in p.history:
        h.update(f"{role}\x1f{content}\x1e".encode())
    for part in (p.prompt, "\x1d".join(p.images), p.chosen, p.rejected):
        h.update(part.encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little")


def length_side(p: PreferencePair, tokenizer_len: LengthFn = len) -> int:
    """+1 if chosen is the longer response, -1 if the shorter, 0 if equally long."""
    lc, lr = tokenizer_len(p.chosen), tokenizer_len(p.rejected)
    return (lc > lr) - (lc < lr)


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Keep-mask of `keys` (any order): True at the first occurrence of each key (dedup)."""
    keep = np.zeros(len(keys), dtype=bool)
    if len(keys):
        _, first = np.unique(keys, return_index=True)
        keep[first] = True
    return keep


def sample_mask(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Keep-mask of exactly min(k, n) of `n` items, chosen uniformly at random."""
    keep = np.zeros(n, dtype=bool)
    keep[rng.choice(n, size=min(k, n), replace=False)] = True
    return keep


def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Integers proportional to `weights` summing to exactly `total` (ties to the earlier item)."""
    s = float(sum(weights))
    if total <= 0 or s <= 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    out = [math.floor(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))[: total - sum(out)]:
        out[i] += 1
    return out


def length_resample_mask(sides: np.ndarray, target: float, seed: int | Sequence[int], tolerance: float = 0.0) -> np.ndarray:
    """Keep-mask that makes chosen the longer response in `target` of the unequal-length pairs.

    `sides` holds `length_side` per pair. The over-represented side is downsampled (the other kept
    whole) to the count that gives the target share exactly up to rounding; equal-length pairs
    carry no length signal and are all kept. A set already within `tolerance` of the target is
    left alone. `target=0.5` balances a biased set (paper, Appendix D.4); `target=0.9` builds
    the "90% long = better" ablation set.
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"length target must be in [0, 1], got {target}")
    longer, shorter = np.flatnonzero(sides > 0), np.flatnonzero(sides < 0)
    keep = np.ones(len(sides), dtype=bool)
    n_l, n_s = len(longer), len(shorter)
    if n_l + n_s == 0 or abs(n_l / (n_l + n_s) - target) <= tolerance:
        return keep
    rng = np.random.default_rng(seed)
    if n_l / (n_l + n_s) > target:
        want = n_l if target == 1 else min(n_l, round(target * n_s / (1 - target)))
        drop = longer[~sample_mask(n_l, want, rng)]
    else:
        want = n_s if target == 0 else min(n_s, round((1 - target) * n_l / target))
        drop = shorter[~sample_mask(n_s, want, rng)]
    if len(drop) == n_l + n_s:
        raise DataError(f"length resampling to {target:.0%} chosen-longer would drop every pair of unequal length "
                        f"({n_l} chosen-longer, {n_s} chosen-shorter)")
    keep[drop] = False
    return keep


def text_ratio_quotas(mm: Sequence[int], text: Sequence[int], text_ratio: float) -> tuple[list[int], list[int]]:
    """Per-source multimodal and text-only counts with #text ≈ text_ratio × #multimodal.

    The over-represented side is cut, each source keeping its share of that side (as `mix`
    does, on counts). Errors as `mix`: no multimodal pairs, or text_ratio > 0 with no text.
    """
    n_mm, n_text = sum(mm), sum(text)
    if text_ratio < 0:
        raise ValueError(f"text_ratio must be >= 0, got {text_ratio}")
    if n_mm == 0:
        raise DataError(f"text_ratio={text_ratio} needs multimodal pairs, but the sources have none")
    if n_text == 0 and text_ratio > 0:
        raise DataError(f"text_ratio={text_ratio} needs text-only pairs, but all {n_mm} pairs are multimodal")
    if n_text >= text_ratio * n_mm:
        return list(mm), largest_remainder(text, round(text_ratio * n_mm))
    return largest_remainder(mm, round(n_text / text_ratio)), list(text)


def validation_quotas(sizes: Sequence[int], n: int) -> list[int]:
    """How many of `n` validation pairs each source gives: equal shares, sources too small to
    fill theirs give all they have and the rest is spread over the others."""
    quotas = [0] * len(sizes)
    left = min(n, sum(sizes))
    open_ = [i for i, s in enumerate(sizes) if s > 0]
    while left > 0 and open_:
        share = largest_remainder([1.0] * len(open_), left)
        for i, q in zip(list(open_), share, strict=True):
            got = min(q, sizes[i] - quotas[i])
            quotas[i] += got
            left -= got
        open_ = [i for i in open_ if quotas[i] < sizes[i]]
    return quotas


def order_swaps(n: int, seed: int | Sequence[int]) -> np.ndarray:
    """Answer-order balance for generative judges: exactly n // 2 of `n` pairs marked True
    (shown as Response 1 = rejected, Response 2 = chosen), chosen at random."""
    return sample_mask(n, n // 2, np.random.default_rng(seed))


def take(pairs: Iterable[PreferencePair], keep: np.ndarray) -> Iterator[tuple[int, PreferencePair]]:
    """(index, pair) of the pairs of a stream whose index `keep` marks; DataError if the stream
    is not exactly `len(keep)` long (it changed since the mask was made)."""
    n = -1
    for n, p in enumerate(pairs):
        if n >= len(keep):
            raise DataError(f"the source gave more than the {len(keep)} pairs counted in the first pass")
        if keep[n]:
            yield n, p
    if n + 1 != len(keep):
        raise DataError(f"the source gave {n + 1} pairs, {len(keep)} were counted in the first pass")
