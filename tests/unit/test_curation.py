"""Curation functions on hand-built sets with hand-derived expected outputs."""

from __future__ import annotations

from collections import Counter

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
