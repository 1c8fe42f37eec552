"""Curation functions on hand-built sets with hand-derived expected outputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from basereward.data.curation import (
    Ranking,
    balance_length,
    bias_by_length,
    length_bias,
    mix,
    ranking_to_pairs,
    ultra_hard,
    word_count,
)
from basereward.data.schema import PreferencePair
from basereward.errors import DataError


def _len_pair(pid: str, chosen_len: int, rejected_len: int) -> PreferencePair:
    return PreferencePair(id=pid, prompt="q", chosen="c" * chosen_len, rejected="r" * rejected_len)


def _pairs(prefix: str, n: int, multimodal: bool) -> list[PreferencePair]:
    images = ("/img/x.png",) if multimodal else ()
    return [
        PreferencePair(
            id=f"{prefix}{i}",
            prompt="q",
            chosen="good",
            rejected="bad",
            images=images,
            source=prefix,
        )
        for i in range(n)
    ]


# ---- ranking_to_pairs / ultra_hard ----------------------------------------------------------


def test_ranking_to_pairs_all_differently_scored_pairs_better_first():
    r = Ranking("q0", "q", ("a", "b", "c"), (1, 3, 1), images=("/i.png",), source="s", category="k")
    pairs = ranking_to_pairs(r)
    # (0,1): b beats a; (0,2): equal scores, no pair; (1,2): b beats c.
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [
        ("q0-0-1", "b", "a"),
        ("q0-1-2", "b", "c"),
    ]
    assert all(p.images == ("/i.png",) and p.source == "s" and p.category == "k" for p in pairs)
    # Four responses, all scores distinct: 4 * 3 / 2 = 6 pairs, the higher score always chosen.
    r4 = Ranking("u", "q", ("w", "x", "y", "z"), (0.5, 2, -1, 1))
    assert [(p.id, p.chosen, p.rejected) for p in ranking_to_pairs(r4)] == [
        ("u-0-1", "x", "w"), ("u-0-2", "w", "y"), ("u-0-3", "z", "w"),
        ("u-1-2", "x", "y"), ("u-1-3", "x", "z"), ("u-2-3", "z", "y"),
    ]
    # Identical texts say nothing either, whatever their scores.
    assert ranking_to_pairs(Ranking("d", "q", ("same", "same"), (1, 2))) == []
    with pytest.raises(ValueError, match="2 responses but 1 scores"):
        Ranking("bad", "q", ("a", "b"), (1.0,))


def test_ultra_hard_keeps_widest_gap_per_prompt():
    # Max 5 first at r1, min 1 at r2: gap 4 for (1,2) and (2,3); the first in (i, j) order wins.
    r = Ranking("p0", "q", ("r0", "r1", "r2", "r3"), (3, 5, 1, 5), images=("/a.png",), category="ocr")
    pair = ultra_hard(r)
    assert (pair.id, pair.chosen, pair.rejected) == ("p0-1-2", "r1", "r2")
    assert pair.images == ("/a.png",) and pair.category == "ocr"
    assert pair in ranking_to_pairs(r)
    # Worst response listed first: the pair keeps the (i, j) id of its positions.
    pair = ultra_hard(Ranking("p1", "q", ("lo", "mid", "hi"), (0.25, 0.5, 0.75)))
    assert (pair.id, pair.chosen, pair.rejected) == ("p1-0-2", "hi", "lo")
    assert ultra_hard(Ranking("tie", "q", ("x", "y"), (2, 2))) is None
    assert ultra_hard(Ranking("one", "q", ("only",), (9,))) is None


# ---- mix ------------------------------------------------------------------------------------


def test_mix_downsamples_text_per_source_share():
    sources = {
        "mm": _pairs("m", 10, True),
        "t1": _pairs("a", 6, False),
        "t2": _pairs("b", 2, False),
    }
    out = mix(sources, text_ratio=0.5, seed=0)
    # Target text = 0.5 * 10 = 5 of 8: exact shares 3.75 / 1.25 -> 3 + 1, the spare one goes to
    # the larger remainder (t1).
    assert Counter(p.source for p in out) == {"m": 10, "a": 4, "b": 1}
    assert len({p.id for p in out}) == 15


def test_mix_downsamples_multimodal_when_text_is_short():
    out = mix({"mm": _pairs("m", 10, True), "t": _pairs("t", 2, False)}, text_ratio=0.5, seed=1)
    assert Counter(p.source for p in out) == {"m": 4, "t": 2}  # 2 / 0.5 = 4 MM pairs


def test_mix_none_zero_and_errors():
    mm, text = _pairs("m", 3, True), _pairs("t", 4, False)
    assert sorted(p.id for p in mix({"mm": mm, "t": text}, None, seed=0)) == sorted(
        p.id for p in mm + text
    )
    assert Counter(p.source for p in mix({"mm": mm, "t": text}, 0.0, seed=0)) == {"m": 3}
    with pytest.raises(DataError, match="needs multimodal pairs"):
        mix({"t": text}, 0.5, seed=0)
    with pytest.raises(DataError, match="needs text-only pairs"):
        mix({"mm": mm}, 0.5, seed=0)


def test_mix_is_deterministic_and_shuffled():
    sources = {"mm": _pairs("m", 20, True), "t": _pairs("t", 30, False)}
    a = mix(sources, 0.5, seed=7)
    assert a == mix({"t": sources["t"], "mm": sources["mm"]}, 0.5, seed=7)  # dict order irrelevant
    assert [p.id for p in a] != [p.id for p in mix(sources, 0.5, seed=8)]
    assert [p.is_multimodal for p in a] != sorted((p.is_multimodal for p in a), reverse=True)


# ---- length statistics and resampling -------------------------------------------------------


def test_length_bias_hand_counts():
    pairs = [_len_pair("a", 4, 2), _len_pair("b", 1, 3), _len_pair("c", 2, 2), _len_pair("d", 5, 1)]
    assert length_bias(pairs) == {
        "n": 4,
        "chosen_longer": 0.5,
        "chosen_shorter": 0.25,
        "tied": 0.25,
        "mean_chosen_len": 3.0,
        "mean_rejected_len": 2.0,
    }
    words = [
        PreferencePair(id="w", prompt="q", chosen="one two three", rejected="a much longer text")
    ]
    assert length_bias(words, tokenizer_len=word_count)["chosen_shorter"] == 1.0
    assert length_bias(words)["chosen_shorter"] == 1.0  # 13 vs 18 characters
    assert length_bias([])["n"] == 0


def _biased_set() -> list[PreferencePair]:
    """6 chosen-longer, 2 chosen-shorter, 1 tie, interleaved."""
    return [
        _len_pair("L0", 5, 1),
        _len_pair("S0", 1, 5),
        _len_pair("L1", 5, 1),
        _len_pair("T0", 3, 3),
        _len_pair("L2", 5, 1),
        _len_pair("L3", 5, 1),
        _len_pair("S1", 1, 5),
        _len_pair("L4", 5, 1),
        _len_pair("L5", 5, 1),
    ]


def test_balance_length_downsamples_majority():
    pairs = _biased_set()
    logged: list[str] = []
    out = balance_length(pairs, seed=0, log=logged.append)
    ids = [p.id for p in out]
    assert sorted(i[0] for i in ids) == ["L", "L", "S", "S", "T"]
    assert ids == [p.id for p in pairs if p.id in ids]  # input order kept
    assert logged == [
        "balance_length: dropped 4 of 9 pairs (chosen longer 6 -> 2, "
        "shorter 2 -> 2, 1 equal-length kept)"
    ]
    assert out == balance_length(pairs, seed=0)
    with pytest.raises(DataError, match="chosen is longer in every pair"):
        balance_length([_len_pair("a", 2, 1), _len_pair("b", 3, 3)], seed=0)
    assert balance_length([], seed=0) == []


def test_bias_by_length_fractions():
    pairs = (
        [_len_pair(f"L{i}", 6, 2) for i in range(10)]
        + [_len_pair(f"S{i}", 2, 6) for i in range(10)]
        + [_len_pair("T0", 4, 4), _len_pair("T1", 4, 4)]
    )
    # 0.9: the largest n with round(0.9 n) <= 10 longer and the rest <= 10 shorter is
    # n = floor(10 / 0.9) = 11 -> 10 longer + 1 shorter; ties are dropped.
    out = bias_by_length(pairs, 0.9, seed=0)
    assert Counter(p.id[0] for p in out) == {"L": 10, "S": 1}
    assert length_bias(out)["chosen_longer"] == pytest.approx(10 / 11)
    assert Counter(p.id[0] for p in bias_by_length(pairs, 0.5, seed=0)) == {"L": 10, "S": 10}
    assert Counter(p.id[0] for p in bias_by_length(pairs, 1.0, seed=0)) == {"L": 10}
    assert Counter(p.id[0] for p in bias_by_length(pairs, 0.0, seed=0)) == {"S": 10}
    # 0.25: n = floor(10 / 0.75) = 13 -> round(3.25) = 3 longer, 10 shorter.
    assert Counter(p.id[0] for p in bias_by_length(pairs, 0.25, seed=0)) == {"L": 3, "S": 10}


def test_bias_by_length_is_deterministic_and_validates():
    pairs = [_len_pair(f"L{i}", 6, 2) for i in range(30)] + [
        _len_pair(f"S{i}", 2, 6) for i in range(30)
    ]
    a = bias_by_length(pairs, 0.9, seed=5)
    assert a == bias_by_length(pairs, 0.9, seed=5)
    assert a != bias_by_length(pairs, 0.9, seed=6)  # which 3 chosen-shorter pairs survive differs
    logged: list[str] = []
    bias_by_length(pairs, 0.9, seed=5, log=logged.append)
    assert logged == [
        "bias_by_length: kept 33 of 60 pairs (30 chosen-longer, 3 chosen-shorter; "
        "dropped 0 equal-length)"
    ]
    with pytest.raises(ValueError):
        bias_by_length(pairs, 1.5, seed=0)
    with pytest.raises(DataError, match="cannot reach"):
        bias_by_length([_len_pair("S", 1, 2)], 1.0, seed=0)


# ---- streaming curation steps of `data build` -----------------------------------------------

from basereward.data.curation import (  # noqa: E402  (kept beside the tests that use them)
    first_occurrences,
    largest_remainder,
    length_resample_mask,
    order_swaps,
    pair_key,
    take,
    text_ratio_quotas,
    validation_quotas,
)


def _sides(n_long: int, n_short: int, n_tied: int) -> np.ndarray:
    return np.array([1] * n_long + [-1] * n_short + [0] * n_tied, dtype=np.int8)


def _share(sides, keep) -> float:
    kept = sides[keep]
    return (kept > 0).sum() / ((kept > 0).sum() + (kept < 0).sum())


def test_pair_key_is_the_pairs_content_not_its_id():
    a = PreferencePair(id="1", prompt="q", chosen="c", rejected="r", images=("/x.png",), source="s1")
    same = PreferencePair(id="2", prompt="q", chosen="c", rejected="r", images=("/x.png",), source="s2")
    assert pair_key(a) == pair_key(same)
    for other in (PreferencePair(id="1", prompt="q", chosen="c", rejected="r", images=("/y.png",)),
                  PreferencePair(id="1", prompt="q", chosen="r", rejected="c", images=("/x.png",)),
                  PreferencePair(id="1", prompt="q", chosen="c", rejected="r", images=("/x.png",),
                                 history=(("user", "hi"), ("assistant", "yo")))):
        assert pair_key(other) != pair_key(a)
    # Field boundaries count: ("ab", "c") is not ("a", "bc").
    assert pair_key(PreferencePair(id="1", prompt="ab", chosen="c", rejected="r")) != \
        pair_key(PreferencePair(id="1", prompt="a", chosen="bc", rejected="r"))


def test_first_occurrences_and_take():
    keep = first_occurrences(np.array([5, 3, 5, 7, 3, 5], dtype=np.uint64))
    assert keep.tolist() == [True, True, False, True, False, False]
    pairs = [PreferencePair(id=str(i), prompt="q", chosen=f"c{i}", rejected="r") for i in range(6)]
    assert [i for i, _ in take(iter(pairs), keep)] == [0, 1, 3]
    with pytest.raises(DataError, match="gave 6 pairs, 7 were counted"):
        list(take(iter(pairs), np.ones(7, bool)))
    with pytest.raises(DataError, match="more than the 5 pairs"):
        list(take(iter(pairs), np.ones(5, bool)))


def test_length_resample_moves_a_90_percent_long_set_to_half():
    sides = _sides(900, 100, 20)
    keep = length_resample_mask(sides, 0.5, seed=0, tolerance=0.02)
    # Every chosen-shorter and equal-length pair kept; 100 of the 900 chosen-longer.
    assert (keep[900:1000].all(), keep[1000:].all(), int(keep[:900].sum())) == (True, True, 100)
    assert abs(_share(sides, keep) - 0.5) <= 0.02
    assert keep.tolist() == length_resample_mask(sides, 0.5, seed=0).tolist()  # seeded
    assert keep.tolist() != length_resample_mask(sides, 0.5, seed=1).tolist()


def test_length_resample_leaves_a_balanced_set_alone_and_builds_the_inverse():
    assert length_resample_mask(_sides(500, 500, 3), 0.5, seed=0, tolerance=0.02).all()
    assert length_resample_mask(_sides(510, 490, 0), 0.5, seed=0, tolerance=0.02).all()  # 51%: within 2 points
    assert int((~length_resample_mask(_sides(530, 470, 0), 0.5, seed=0, tolerance=0.02)).sum()) == 60
    # "90% long = better": keep the 500 chosen-longer and round(0.1 * 500 / 0.9) = 56 chosen-shorter.
    sides = _sides(500, 500, 0)
    keep = length_resample_mask(sides, 0.9, seed=0)
    assert (int(keep[:500].sum()), int(keep[500:].sum())) == (500, 56)
    assert abs(_share(sides, keep) - 0.9) <= 0.02
    assert int(length_resample_mask(sides, 1.0, seed=0)[500:].sum()) == 0
    with pytest.raises(DataError, match="would drop every pair"):
        length_resample_mask(_sides(0, 10, 0), 0.5, seed=0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        length_resample_mask(sides, 1.5, seed=0)


def test_quotas_by_hand():
    assert largest_remainder([3, 1], 2) == [2, 0]  # 1.5, 0.5: the tie goes to the earlier source
    assert largest_remainder([1, 1, 1], 10) == [4, 3, 3]
    assert largest_remainder([2, 5], 0) == [0, 0]
    # MM 100 (60 + 40), text 80 (50 + 30); ratio 0.5 -> 50 text, split 50:30 -> 31.25, 18.75 -> 31, 19.
    assert text_ratio_quotas([60, 40], [50, 30], 0.5) == ([60, 40], [31, 19])
    # Text short: ratio 2 with 80 text -> 40 MM, split 60:40 -> 24, 16.
    assert text_ratio_quotas([60, 40], [50, 30], 2.0) == ([24, 16], [50, 30])
    with pytest.raises(DataError, match="needs multimodal"):
        text_ratio_quotas([0], [5], 0.5)
    with pytest.raises(DataError, match="needs text-only"):
        text_ratio_quotas([5], [0], 0.5)
    # Validation: 9 over sources of 10, 1, 0, 5: 3 / 3 / 3 over the three non-empty ones; the
    # one-pair source gives 1, its 2 left go 1 + 1 to the others.
    assert validation_quotas([10, 1, 0, 5], 9) == [4, 1, 0, 4]
    assert validation_quotas([2, 1], 10) == [2, 1]
    assert validation_quotas([250] * 4, 1000) == [250] * 4


def test_order_swaps_exactly_half_seeded():
    s = order_swaps(7, seed=1)
    assert int(s.sum()) == 3 and s.tolist() == order_swaps(7, seed=1).tolist()
    assert int(order_swaps(1000, seed=2).sum()) == 500
