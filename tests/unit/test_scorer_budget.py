"""Token-budget batching in the Scorer's packer: every group once, in order, whole; no batch over
the sequence count or (unless one group alone exceeds it) the token budget."""

from __future__ import annotations

import random

from basereward.data.schema import Group
from basereward.scoring.scorer import pack_batches, length_estimate, token_estimate


def _groups(seed: int = 0) -> list[Group]:
    rng = random.Random(seed)
    return [Group("p" * rng.randint(1, 400), tuple("r" * rng.randint(1, 800) for _ in range(rng.randint(1, 8))),
                  ("img.png",) * rng.randint(0, 2)) for _ in range(60)]


def test_token_estimate_by_hand():
    g = Group("abcd" * 10, ("x" * 39, "y" * 3), ("a.png",))
    assert length_estimate(g) == 40 + 39 + 1000
    assert token_estimate(g) == (40 + 39 + 1000) // 4 + 1 == 270


def test_budget_is_respected_and_nothing_lost():
    gs = _groups()
    order = sorted(range(len(gs)), key=lambda i: -length_estimate(gs[i]))
    for batch_size, budget in ((8, 0), (8, 1500), (64, 1500), (64, 4000), (16, 300)):
        batches = list(pack_batches(order, gs, batch_size, budget))
        assert [i for b in batches for i in b] == order  # every group once, in the sorted order
        for b in batches:
            n = sum(len(gs[i].responses) for i in b)
            assert n <= batch_size or len(b) == 1
            if budget:
                assert n * max(token_estimate(gs[i]) for i in b) <= budget or len(b) == 1
        # Batches are maximal: the next group would have broken a limit.
        for b, nxt in zip(batches, batches[1:]):
            grown = b + [nxt[0]]
            n = sum(len(gs[i].responses) for i in grown)
            assert n > batch_size or (budget and n * max(token_estimate(gs[i]) for i in grown) > budget)


def test_budget_packs_more_short_sequences_than_long():
    long_g = [Group("q" * 4000, ("a",) * 2) for _ in range(4)]  # ~1000 tokens per sequence
    short_g = [Group("q" * 40, ("a",) * 2) for _ in range(16)]  # ~11 tokens per sequence
    gs = long_g + short_g
    batches = list(pack_batches(list(range(len(gs))), gs, 32, token_budget=2100))
    assert [len(b) for b in batches] == [1, 1, 1, 1, 16]
    assert list(pack_batches(list(range(len(gs))), gs, 32)) == [list(range(16)), list(range(16, 20))]  # count only
