"""RM-Bench on the real published files (../shared/data/rm-bench), scored by fake scorers."""

from __future__ import annotations

from collections import Counter

import pytest

from basereward.eval import run_benchmark
from basereward.eval.benchmarks import rm_bench


class FuncScorer:
    def __init__(self, fn):
        self.fn = fn

    def score_groups(self, groups):
        return [[self.fn(i, r) for i, r in enumerate(g.responses)] for g in groups]


@pytest.fixture(scope="module")
def data(shared_data_path):
    return shared_data_path("rm-bench")


@pytest.fixture(scope="module")
def items(data):
    return rm_bench.load(str(data))


def test_counts_and_layout(items):
    assert Counter(i.meta["source_domain"] for i in items) == {
        "chat": 129,
        "code": 228,
        "safety-refuse": 284,
        "safety-response": 157,
    }
    assert Counter(i.meta["domain"] for i in items) == {"chat": 129, "code": 228, "safety": 441}
    assert len({i.id for i in items}) == len(items)  # ids are unique once prefixed by the file
    assert all(len(i.group.responses) == 6 and i.group.images == () for i in items)


def test_scorer_preferring_chosen_scores_one_everywhere(items):
    # Response index < 3 is a chosen style: every chosen beats every rejected.
    m = rm_bench.metrics(items, FuncScorer(lambda i, r: 1.0 if i < 3 else 0.0).score_groups([x.group for x in items]))
    for domain in ("chat", "code", "safety"):
        assert m["domains"][domain] == {"easy": 1.0, "normal": 1.0, "hard": 1.0, "score": 1.0}
    assert (m["easy"], m["normal"], m["hard"], m["total"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["domains_present"] == ["chat", "code", "safety"]
    assert m["note"].startswith("math domain absent")


def test_constant_scorer_scores_zero_because_ties_are_wrong(items):
    m = rm_bench.metrics(items, [[0.0] * 6 for _ in items])
    assert (m["easy"], m["normal"], m["hard"], m["total"]) == (0.0, 0.0, 0.0, 0.0)


def test_length_scorer_through_the_runner(tmp_path, data, items):
    # reward = -len(response): deterministic, and the invariants of the definition must hold.
    m = run_benchmark(FuncScorer(lambda i, r: -len(r)), "rm-bench", str(data), str(tmp_path / "rm.json"))
    assert m["num_items"] == 798
    for d in m["domains"].values():
        assert 0.0 <= d["easy"] <= 1.0 and 0.0 <= d["hard"] <= 1.0
        assert d["score"] == pytest.approx((d["easy"] + d["normal"] + d["hard"]) / 3)
        # Preferring short answers helps exactly where the chosen answer is the plainer one.
        assert d["hard"] > d["easy"]
    assert m["total"] == pytest.approx(sum(d["score"] for d in m["domains"].values()) / 3)
    assert m["hard"] == pytest.approx(sum(d["hard"] for d in m["domains"].values()) / 3)
    lines = (tmp_path / "rm.scores.jsonl").read_text().splitlines()
    assert len(lines) == 798
