"""Task-aware router: keys from keyword rules, routes fitted on hand-counted validation accuracies
with a cost budget, batched routing in input order, and a save/load round trip."""

from __future__ import annotations

import json
import time

import pytest

from basereward.data.schema import Group, PreferencePair
from basereward.ensemble import load_combined
from basereward.ensemble.task_router import (
    TaskRouter,
    TaskRules,
    backoff,
    choose,
    fit_task_router,
    report_markdown,
)
from basereward.errors import BaseRewardError
from basereward.scoring.interface import ScoringMixin


class Fake(ScoringMixin):
    """Ranks a pair right exactly when its chosen text is in `right`; sleeps `delay` s per group."""

    def __init__(self, right: set[str], delay: float = 0.0) -> None:
        self.right, self.delay, self.calls, self.groups = right, delay, 0, 0

    def score_groups(self, groups):
        self.calls += 1
        self.groups += len(groups)
        time.sleep(self.delay * len(groups))
        return [[1.0, 0.0] if g.responses[0] in self.right else [0.0, 1.0] for g in groups]


def _pairs() -> list[PreferencePair]:
    out = []
    for i in range(4):  # text/yes-no
        out.append(PreferencePair(id=f"yn{i}", prompt=f"Is {i} even?", chosen=f"yn-good{i}", rejected="x",
                                  category="math"))
    for i in range(6):  # image/count
        out.append(PreferencePair(id=f"c{i}", prompt=f"How many dots are there? ({i})", chosen=f"c-good{i}",
                                  rejected="x", images=(f"/img/{i}.png",), category="count"))
    for i in range(2):  # text/other
        out.append(PreferencePair(id=f"o{i}", prompt="Tell me a joke", chosen=f"o-good{i}", rejected="x"))
    return out


# naive: yes-no 3/4, count 2/6, other 2/2 (7/12); judge: 4/4, 5/6, 0/2 (9/12)
NAIVE_RIGHT = {"yn-good0", "yn-good1", "yn-good2", "c-good0", "c-good1", "o-good0", "o-good1"}
JUDGE_RIGHT = {f"yn-good{i}" for i in range(4)} | {f"c-good{i}" for i in range(5)}


def test_keys_from_keyword_rules():
    rules = TaskRules()
    assert rules.key_of(Group(prompt="Count how many circles the image shows.", responses=(), images=("a",))) \
        == "image/count"
    assert rules.question_type("Which colour has the tallest bar?") == "chart"  # chart comes before colour
    assert rules.question_type("Is there any cat in this picture?") == "yes-no"
    assert rules.question_type("This is my question") == "other"  # "^is" only opens a prompt
    assert rules.question_type("Tell me a joke") == "other"
    assert rules.question_type("word " * 12 + "how many") == "other"  # beyond the window of 12 words
    assert backoff("image/count") == ["image/count", "image", "*"] and backoff("custom") == ["custom", "*"]
    back = TaskRules.from_json(json.loads(json.dumps(rules.to_json())))
    assert back == rules and back.question_type("how many") == "count"
    with pytest.raises(BaseRewardError, match="question type"):
        TaskRules((("a/b", ("x",)),))


def test_choose_best_accuracy_within_budget_else_cheapest():
    assert choose([0.6, 0.9], [0.001, 0.5], None) == (1, "best accuracy")
    assert choose([0.6, 0.9], [0.001, 0.5], 0.1) == (0, "best accuracy within budget")
    assert choose([0.6, 0.9], [0.2, 0.5], 0.1) == (0, "none within budget: cheapest")
    assert choose([0.8, 0.8], [0.3, 0.1], None)[0] == 1  # equal accuracy: the cheaper


def test_fit_routes_by_hand_counted_accuracy_and_reports_the_trade_off():
    naive, judge = Fake(NAIVE_RIGHT), Fake(JUDGE_RIGHT, delay=0.01)
    router = fit_task_router([naive, judge], _pairs(), ["naive", "judge"], min_pairs=3)
    # text/other has 2 pairs (< 3): no route of its own; "text" (6 pairs): naive 5/6 > judge 4/6.
    assert router.routes == {"*": "judge", "image": "judge", "text": "naive", "image/count": "judge",
                             "text/yes-no": "judge"}
    rows = {r["key"]: r for r in router.report["keys"]}
    assert rows["text/other"]["choice"] is None and rows["text/other"]["pairs"] == 2
    assert rows["*"]["sources"]["naive"]["accuracy"] == pytest.approx(7 / 12)
    assert rows["*"]["sources"]["judge"]["accuracy"] == pytest.approx(9 / 12)
    assert rows["image/count"]["sources"]["judge"]["accuracy"] == pytest.approx(5 / 6)
    # The sleeping judge costs at least its sleep per judgement; each source scored one warm-up
    # pair, then each key once.
    assert rows["*"]["sources"]["judge"]["seconds_per_judgement"] >= 0.01
    assert judge.calls == 1 + 3 and judge.groups == 1 + 12
    routed = router.report["routed"]
    assert routed["accuracy"] == pytest.approx(11 / 12)  # yes-no 4 + count 5 (judge) + other 2 (naive)
    assert routed["pairs_per_source"] == {"naive": 2, "judge": 10}
    assert router.report["accuracy_per_category"]["count"] == {"naive": pytest.approx(2 / 6),
                                                               "judge": pytest.approx(5 / 6)}
    table = report_markdown(router.report)
    assert "| image/count | 6 |" in table and "accuracy 91.7%" in table
    # A budget below the judge's cost routes everything to the naive source.
    cheap = fit_task_router([Fake(NAIVE_RIGHT), Fake(JUDGE_RIGHT, delay=0.01)], _pairs(), ["naive", "judge"],
                            min_pairs=3, budget=0.005)
    assert set(cheap.routes.values()) == {"naive"} and cheap.report["routed"]["accuracy"] == pytest.approx(7 / 12)


def test_scoring_batches_per_source_and_keeps_input_order():
    naive, judge = Fake(NAIVE_RIGHT), Fake(JUDGE_RIGHT)
    router = TaskRouter([naive, judge], ["naive", "judge"], {"*": "judge", "text": "naive"})
    pairs = _pairs()
    groups = [p.to_group() for p in pairs]
    got = router.score_groups(groups)
    expected = [[1.0, 0.0] if (NAIVE_RIGHT if not p.images else JUDGE_RIGHT) >= {p.chosen} else [0.0, 1.0]
                for p in pairs]
    assert got == expected
    assert (naive.calls, judge.calls) == (1, 1) and router.routing_report() == {"naive": 6, "judge": 6}
    scores, spread = router.score_groups_with_uncertainty(groups[:2])
    assert scores == got[:2] and spread == [[0.0, 0.0], [0.0, 0.0]]
    custom = TaskRouter([naive, judge], ["naive", "judge"], {"*": "naive", "mine": "judge"},
                        task_of=lambda g: "mine" if "joke" in g.prompt else "rest", paths=["a", "b"])
    assert [custom.route_of(g) for g in groups[-3:]] == ["naive", "judge", "judge"]
    with pytest.raises(BaseRewardError, match="task_of"):
        custom.to_json()
    with pytest.raises(BaseRewardError, match="'\\*' entry"):
        TaskRouter([naive], ["naive"], {"text": "naive"})


def test_save_load_round_trip(tmp_path):
    for name in ("naive", "judge"):
        (tmp_path / "members" / name).mkdir(parents=True)
    made = {}

    def loader(path):
        made[path] = Fake(NAIVE_RIGHT if path.endswith("naive") else JUDGE_RIGHT)
        return made[path]

    router = fit_task_router([Fake(NAIVE_RIGHT), Fake(JUDGE_RIGHT)], _pairs(), ["naive", "judge"],
                             paths=["../members/naive", "../members/judge"], min_pairs=3,
                             rules=TaskRules(window=6))
    out = tmp_path / "router"
    router.save(str(out))
    assert (out / "routing.md").read_text() == report_markdown(router.report)
    loaded = load_combined(str(out), loader)
    assert isinstance(loaded, TaskRouter) and loaded.routes == router.routes and loaded.rules == router.rules
    assert sorted(made) == [str(tmp_path / "members" / "judge"), str(tmp_path / "members" / "naive")]
    groups = [p.to_group() for p in _pairs()]
    assert loaded.score_groups(groups) == router.score_groups(groups)
    assert loaded.report == json.loads(json.dumps(router.report))
