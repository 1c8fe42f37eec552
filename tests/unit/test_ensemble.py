"""Ensemble weighting, normalisation, routing and persistence, against hand-derived numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from basereward.data.schema import Group, PreferencePair
from basereward.ensemble import (
    Ensemble,
    MemberStats,
    ModalityRouter,
    fit,
    is_ensemble_dir,
    load_combined,
    member_stats,
    member_weights,
    sample_validation,
)
from basereward.errors import BaseRewardError
from basereward.scoring import ScoreShapeError, ScoringMixin


class TableScorer:
    """Scores a response by table lookup (unknown responses: a*len + b); records every call."""

    def __init__(self, table: dict[str, float] | None = None, a: float = 0.0, b: float = 0.0):
        self.table, self.a, self.b = dict(table or {}), a, b
        self.calls: list[list[Group]] = []

    def _one(self, response: str) -> float:
        return self.table[response] if response in self.table else self.a * len(response) + self.b

    def score_groups(self, groups):
        self.calls.append(list(groups))
        return [[self._one(r) for r in g.responses] for g in groups]


def fake_loader(path: str) -> TableScorer:
    """Stands in for basereward.load.load_scorer: a member "model" is a JSON file of TableScorer args."""
    with open(path) as f:
        return TableScorer(**json.load(f))


def write_member(path, **kwargs) -> str:
    path.write_text(json.dumps(kwargs))
    return str(path)


# The hand-built validation table: 4 pairs, members A, B, C.
#   A: chosen 2 3 1 0 | rejected 1 1 2 0 -> wins 2 of 4 (a tie is a loss), margins 1 2 -1 0 (mean 0.5)
#   B: chosen 1 1 1 1 | rejected 0 0 0 2 -> wins 3 of 4, margins 1 1 1 -1 (mean 0.5)
#   C: chosen 0 0 0 0 | rejected 1 1 1 1 -> wins 0, margin -1
VAL = [PreferencePair(id=f"v{i}", prompt="p", chosen=f"c{i}", rejected=f"r{i}", source="s") for i in range(4)]


def table(chosen, rejected):
    return {**{f"c{i}": float(x) for i, x in enumerate(chosen)}, **{f"r{i}": float(x) for i, x in enumerate(rejected)}}


A = table([2, 3, 1, 0], [1, 1, 2, 0])
B = table([1, 1, 1, 1], [0, 0, 0, 2])
C = table([0, 0, 0, 0], [1, 1, 1, 1])
# Population std over all 8 validation rewards: A has mean 1.25, sum of squared deviations 7.5;
# B has mean 0.75, sum of squared deviations 3.5.
STD_A, STD_B = math.sqrt(7.5 / 8), math.sqrt(3.5 / 8)

GROUPS = [
    Group(prompt="p", responses=("c0", "r0", "hello")),
    Group(prompt="q", responses=("c3",), images=("img.png",)),
    Group(prompt="p", responses=("r1", "c2")),
]


def test_member_stats_match_hand_values():
    s = member_stats([2, 3, 1, 0], [1, 1, 2, 0], normalize=False)
    assert s == MemberStats(mean=1.25, std=pytest.approx(STD_A), accuracy=0.5, margin=0.5, n_pairs=4)
    assert member_stats([2, 3, 1, 0], [1, 1, 2, 0], normalize=True).margin == pytest.approx(0.5 / STD_A)


def test_accuracy_and_confidence_weights_match_hand_values():
    raw = [member_stats(*cols, normalize=False) for cols in ([[2, 3, 1, 0], [1, 1, 2, 0]], [[1] * 4, [0, 0, 0, 2]], [[0] * 4, [1] * 4])]
    assert member_weights("accuracy", raw, 3) == pytest.approx([0.5 / 1.25, 0.75 / 1.25, 0.0])
    # Both margins are 0.5; C's negative margin is clipped to weight 0.
    assert member_weights("confidence", raw, 3) == pytest.approx([0.5, 0.5, 0.0])
    assert member_weights("mean", None, 3) == pytest.approx([1 / 3] * 3)

    ens = fit([TableScorer(A), TableScorer(B), TableScorer(C)], VAL, method="confidence", normalize=True)
    # z-margins 0.5/STD_A and 0.5/STD_B, so w_A = (1/STD_A) / (1/STD_A + 1/STD_B).
    assert ens.weights == pytest.approx([STD_B / (STD_A + STD_B), STD_A / (STD_A + STD_B), 0.0])
    assert ens.stats[0].mean == 1.25 and ens.stats[1].mean == 0.75
    assert sum(ens.weights) == pytest.approx(1.0)


def test_weights_reject_all_non_positive():
    bad = [MemberStats(mean=0, std=1, accuracy=0.0, margin=-1.0, n_pairs=1)]
    with pytest.raises(ValueError):
        member_weights("confidence", bad, 1)
    with pytest.raises(ValueError):
        member_weights("accuracy", bad, 1)
    with pytest.raises(ValueError):
        member_weights("vote", bad, 1)


@pytest.mark.parametrize("method", ["mean", "accuracy", "confidence"])
def test_one_member_ensemble_equals_member(method):
    member = TableScorer(A, a=0.37, b=-1.1)
    ens = fit([member], VAL, method=method, normalize=False)
    assert ens.weights == [1.0]
    assert ens.score_groups(GROUPS) == member.score_groups(GROUPS)  # exact, not approx
    _, spread = ens.score_groups_with_uncertainty(GROUPS)
    assert all(u == 0.0 for row in spread for u in row)


@pytest.mark.parametrize("method", ["mean", "accuracy", "confidence"])
def test_one_member_normalized_ensemble_keeps_rankings(method):
    # With normalisation the score is (r - mean) / std: a strictly increasing map of the member's
    # reward, so every within-group ranking (hence pairwise accuracy) is the member's.
    member = TableScorer(A, a=0.37, b=-1.1)
    ens = fit([member], VAL, method=method, normalize=True)
    got, want = ens.score_groups(GROUPS), member.score_groups(GROUPS)
    for g, w in zip(got, want):
        assert list(np.argsort(g, kind="stable")) == list(np.argsort(w, kind="stable"))
        assert g == pytest.approx([(x - 1.25) / STD_A for x in w])


def test_mean_of_two_members_is_the_average():
    a, b = TableScorer(A, a=0.5), TableScorer(B, a=-2.0, b=3.0)
    ens = Ensemble([a, b], method="mean")
    scores, spread = ens.score_groups_with_uncertainty(GROUPS)
    sa, sb = a.score_groups(GROUPS), b.score_groups(GROUPS)
    for row, ra, rb, u in zip(scores, sa, sb, spread):
        assert row == pytest.approx([(x + y) / 2 for x, y in zip(ra, rb)])
        # Population std of two numbers is half their distance.
        assert u == pytest.approx([abs(x - y) / 2 for x, y in zip(ra, rb)])


def test_normalized_mean_uses_validation_stats():
    a, b = TableScorer(A), TableScorer(B)
    ens = fit([a, b], VAL, method="mean", normalize=True)
    got = ens.score_groups([Group(prompt="p", responses=("c1", "r3"))])[0]
    # c1: A=3, B=1; r3: A=0, B=2.
    want = [((3 - 1.25) / STD_A + (1 - 0.75) / STD_B) / 2, ((0 - 1.25) / STD_A + (2 - 0.75) / STD_B) / 2]
    assert got == pytest.approx(want)


def test_fit_records_validation_metrics():
    pairs = VAL + [PreferencePair(id="w", prompt="p", chosen="c1", rejected="r1", source="t")]
    a, b = TableScorer(A), TableScorer(B)
    ens = fit([a, b], pairs, method="accuracy")
    assert len(a.calls) == 1 and len(b.calls) == 1  # each member scores the validation set once
    assert ens.validation["n_pairs"] == 5 and ens.validation["per_source"] == {"s": 4, "t": 1}
    # Members: A wins v0 v1 w (3/5), B wins v0 v1 v2 w (4/5); weights 3/7, 4/7.
    assert ens.weights == pytest.approx([3 / 7, 4 / 7])
    # Ensemble margins per pair: v0 (3/7)(1)+(4/7)(1) > 0; v1 > 0; v2 -3/7+4/7 > 0; v3 -4/7 < 0; w > 0.
    assert ens.validation["ensemble_accuracy"] == pytest.approx(4 / 5)


def test_score_and_score_responses_go_through_score_groups():
    ens = Ensemble([TableScorer(A), TableScorer(B)])
    assert ens.score(VAL[:2]) == [(1.5, 0.5), (2.0, 0.5)]
    assert ens.score_responses("p", [], ["c0", "r0"]) == [1.5, 0.5]


def test_router_routes_by_modality_and_keeps_order():
    text, mm = TableScorer(a=1.0), TableScorer(a=-1.0)
    router = ModalityRouter(text, mm, text_name="txt", multimodal_name="vl")
    groups = [
        Group(prompt="a", responses=("x", "yy")),
        Group(prompt="b", responses=("zzz",), images=("i.png",)),
        Group(prompt="c", responses=("wwww", "v")),
        Group(prompt="d", responses=("uu", "t"), images=("j.png", "k.png")),
    ]
    scores = router.score_groups(groups)
    assert scores == [[1.0, 2.0], [-3.0], [4.0, 1.0], [-2.0, -1.0]]
    # Each side in exactly one batched call, holding only its own modality, in input order.
    assert [[g.prompt for g in call] for call in text.calls] == [["a", "c"]]
    assert [[g.prompt for g in call] for call in mm.calls] == [["b", "d"]]
    assert router.routing_report() == {"text": 2, "multimodal": 2, "text_member": "txt", "multimodal_member": "vl"}
    router.score_groups(groups[:1])  # a text-only batch never calls the multimodal member
    assert len(mm.calls) == 1 and router.routing_report()["text"] == 3


def test_router_uncertainty_delegates_to_ensembles():
    ens = Ensemble([TableScorer(a=1.0), TableScorer(a=3.0)])
    router = ModalityRouter(TableScorer(a=1.0), ens)
    groups = [Group(prompt="a", responses=("xx",)), Group(prompt="b", responses=("x",), images=("i",))]
    scores, spread = router.score_groups_with_uncertainty(groups)
    assert scores == [[2.0], [2.0]] and spread == [[0.0], [1.0]]


def test_save_load_round_trip(tmp_path):
    m0 = write_member(tmp_path / "m0.json", table=A, a=0.3)
    m1 = write_member(tmp_path / "m1.json", table=B, a=-0.7, b=2.0)
    members = [fake_loader(m0), fake_loader(m1)]
    ens = fit(members, VAL, method="confidence", normalize=True, names=["a", "b"], paths=["../m0.json", m1])
    out = tmp_path / "ens"
    ens.save(str(out))
    assert is_ensemble_dir(str(out)) and not is_ensemble_dir(str(tmp_path))

    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["kind"] == "ensemble" and spec["method"] == "confidence" and spec["normalize"] is True
    assert [m["path"] for m in spec["members"]] == ["../m0.json", m1]  # stored as given
    assert [m["name"] for m in spec["members"]] == ["a", "b"]
    assert spec["members"][0]["stats"]["mean"] == 1.25
    assert spec["validation"]["n_pairs"] == 4

    loaded = Ensemble.load(str(out), fake_loader)
    assert loaded.weights == ens.weights and loaded.names == ["a", "b"]
    assert loaded.score_groups_with_uncertainty(GROUPS) == ens.score_groups_with_uncertainty(GROUPS)
    assert load_combined(str(out), fake_loader).score_groups(GROUPS) == ens.score_groups(GROUPS)


def test_router_with_nested_ensemble_round_trip(tmp_path):
    m0 = write_member(tmp_path / "m0.json", a=1.0)
    m1 = write_member(tmp_path / "m1.json", a=2.0, b=1.0)
    text = write_member(tmp_path / "text.json", a=-1.0)
    Ensemble([fake_loader(m0), fake_loader(m1)], paths=[m0, m1]).save(str(tmp_path / "mm_ens"))
    router = ModalityRouter(
        fake_loader(text),
        load_combined(str(tmp_path / "mm_ens"), fake_loader),
        text_path="../text.json",
        multimodal_path="../mm_ens",
    )
    router.save(str(tmp_path / "router"))
    loaded = load_combined(str(tmp_path / "router"), fake_loader)
    assert isinstance(loaded, ModalityRouter) and isinstance(loaded.multimodal_scorer, Ensemble)
    assert loaded.score_groups(GROUPS) == router.score_groups(GROUPS)
    assert loaded.routing_report()["text_member"] == "text.json"
    assert loaded.routing_report()["multimodal_member"] == "mm_ens"
    with pytest.raises(BaseRewardError):
        Ensemble.load(str(tmp_path / "router"), fake_loader)  # kind is "router"


def test_save_refuses_unresolvable_member_path(tmp_path):
    m0 = write_member(tmp_path / "m0.json", a=1.0)
    ens = Ensemble([fake_loader(m0)], paths=["m0.json"])  # relative to tmp_path, not to the ensemble dir
    with pytest.raises(BaseRewardError, match="relative to"):
        ens.save(str(tmp_path / "ens"))
    assert not os.path.exists(tmp_path / "ens" / "ensemble.json")
    with pytest.raises(BaseRewardError):
        Ensemble([fake_loader(m0)]).save(str(tmp_path / "ens2"))  # no paths at all


def _pairs(counts: dict[str, int]) -> list[PreferencePair]:
    return [
        PreferencePair(id=f"{s}{i}", prompt="p", chosen="c", rejected="r", source=s)
        for s, n in counts.items()
        for i in range(n)
    ]


def test_sample_validation_balances_sources_deterministically():
    pairs = _pairs({"big": 100, "small": 3, "mid": 10})
    sample = sample_validation(pairs, n=30, seed=1)
    per = {s: sum(p.source == s for p in sample) for s in ("big", "small", "mid")}
    # Share 10 each; "small" has only 3, so its 7 spare go to "big" (the only source with room).
    assert per == {"big": 17, "small": 3, "mid": 10}
    assert sample == sample_validation(pairs, n=30, seed=1)
    assert sample != sample_validation(pairs, n=30, seed=2)
    order = {p.id: i for i, p in enumerate(pairs)}
    assert [order[p.id] for p in sample] == sorted(order[p.id] for p in sample)  # input order kept
    # A remainder smaller than the number of sources goes to the first sources by name.
    few = sample_validation(_pairs({"b": 5, "a": 5, "c": 5}), n=4, seed=0)
    assert sorted(p.source for p in few) == ["a", "a", "b", "c"]
    assert len(sample_validation(pairs, n=10_000)) == len(pairs)


def test_a_member_with_misshapen_scores_is_named():
    class Short(TableScorer):
        def score_groups(self, groups):
            return [row[:-1] for row in super().score_groups(groups)]

    ens = Ensemble([TableScorer(A), Short(A)], names=["good", "short"])
    with pytest.raises(ScoreShapeError, match=r"ensemble member 'short' returned 2 scores for group 0, which has 3"):
        ens.score_groups(GROUPS)
    assert ens.score_responses("p", [], []) == []


def test_ensembles_and_the_scoring_interface_do_not_import_torch():
    # Ensembles, reports and evaluation must run where no model framework is installed.
    code = (
        "import sys; import basereward.ensemble, basereward.scoring, basereward.eval, basereward.report, "
        "basereward.io, basereward.metrics; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    import basereward.scoring as scoring

    assert issubclass(scoring.Scorer, ScoringMixin)  # the torch names load on first use
    with pytest.raises(AttributeError):
        scoring.NoSuchName  # noqa: B018
