"""Reward functions (rule / hybrid / pairwise), text extraction and the per-batch grouping: hand-derived
values, invariances, and the doctests of every rl module."""

from __future__ import annotations

import doctest
import math

import pytest

import basereward.rl.openrlhf
import basereward.rl.rewards
import basereward.rl.text
from basereward.errors import BaseRewardError
from basereward.rl.rewards import (
    PairwiseSource,
    hybrid_reward,
    ordered_pairs,
    pairwise_reward,
    rule_match,
    rule_reward,
    sigmoid,
)
from basereward.rl.samples import Sample, reward_samples


@pytest.mark.parametrize("module", [basereward.rl.rewards, basereward.rl.text, basereward.rl.openrlhf])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("completion, truth, expected", [
    # multiple choice: the letter, however it is written; a word starting with a letter is no choice
    ("(C)", "C", True), ("C) because", "C", True), ("The answer is B.", "(B)", True), ("Because", "B", False),
    ("A", "B", False),
    # numbers: exact value, last number, words, commas, fractions; 14 is not 4
    ("4", "4", True), ("I count 4 shapes", "4.0", True), ("four", "4", True), ("1,000", "1000", True),
    (r"\boxed{\frac12}", "0.5", False), (r"\boxed{1/2}", "0.5", True), ("14", "4", False),
    ("2 red and 3 blue", "2", False),
    # yes / no by the first word only
    ("Yes, I can.", "yes", True), ("yesterday", "yes", False), ("No.", "yes", False),
    # text: normalised exact match, never containment
    ("The Circle!", "circle", True), ("It is a circle", "circle", False), ("<think>red?</think>Blue", "blue", True),
    # no ground truth never matches
    ("anything", None, False), ("anything", "  ", False),
    # a list: any of them
    ("square", ["circle", "Square"], True),
])
def test_rule_match(completion, truth, expected):
    assert rule_match(completion, truth) is expected
    assert rule_reward(completion, truth) == float(expected)


def test_hybrid_is_one_on_match_else_sigmoid_and_never_ranks_a_miss_above_a_match():
    assert hybrid_reward("red", "red", -50.0) == 1.0
    assert hybrid_reward("blue", "red", 0.0) == 0.5
    assert hybrid_reward("blue", "red", math.log(3.0)) == pytest.approx(0.75)  # sigmoid(ln 3) = 3/4
    assert all(hybrid_reward("blue", "red", r) < 1.0 for r in (-5.0, 0.0, 5.0, 30.0))
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0  # no overflow


def test_pairwise_uses_every_ordered_pair_once_and_cancels_position_bias():
    calls = []

    def first_always_wins(pairs):
        calls.append(list(pairs))
        return [1.0] * len(pairs)

    responses = ["a", "bb", "ccc", "dddd"]
    assert pairwise_reward(responses, first_always_wins) == [3.0, 3.0, 3.0, 3.0]  # N - 1 each: bias cancels
    assert len(calls) == 1 and len(calls[0]) == 4 * 3 == len(set(calls[0]))
    assert ordered_pairs(2) == [(0, 1), (1, 0)]

    # A consistent probability judge S(a, b) + S(b, a) = 1: rewards sum to N(N-1)/2 and follow the judge.
    strength = {"a": 0.0, "bb": 1.0, "ccc": 2.0, "dddd": 3.0}
    rewards = pairwise_reward(responses, lambda ps: [sigmoid(strength[x] - strength[y]) for x, y in ps])
    assert sum(rewards) == pytest.approx(6.0)
    assert rewards == sorted(rewards)
    # by hand for two: reward_0 = sigmoid(0 - 1), reward_1 = sigmoid(1 - 0)
    assert pairwise_reward(["a", "bb"], lambda ps: [sigmoid(strength[x] - strength[y]) for x, y in ps]) == \
        pytest.approx([sigmoid(-1.0), sigmoid(1.0)])


def test_pairwise_judge_returning_the_wrong_count_is_an_error():
    with pytest.raises(BaseRewardError, match="2 verdicts for 6 pairs"):
        pairwise_reward(["a", "b", "c"], lambda ps: [1.0, 0.0])
    src = PairwiseSource(lambda prompt, images, pairs: [float(len(a) > len(b)) for a, b in pairs])
    assert src.score_responses("p", [], ["x", "xx"]) == [0.0, 1.0]


class Recording:
    """A reward source that records what it is asked: reward = len(response) + 10 * images."""

    def __init__(self, value=None):
        self.calls = []
        self.value = value

    def score_groups(self, groups):
        self.calls.append(list(groups))
        return [[self.value if self.value is not None else float(len(r) + 10 * len(g.images)) for r in g.responses]
                for g in groups]


def test_reward_samples_groups_per_prompt_and_images_and_skips_rule_verified_ones():
    samples = [Sample("Q1", c, ("img1.png",), "red") for c in ("red", "blue", "Red.", "green")] + \
              [Sample("Q1", "pink", ("img2.png",), "red")] + \
              [Sample("Q2", c, (), "4") for c in ("4", "five")]
    src = Recording()
    batch = reward_samples(samples, "hybrid", src)
    (groups,) = src.calls
    # Q1+img1 (2 unmatched), Q1+img2 (1), Q2 (1): first-appearance order; matched ones never scored
    assert [(g.prompt, g.images, g.responses) for g in groups] == [
        ("Q1", ("img1.png",), ("blue", "green")), ("Q1", ("img2.png",), ("pink",)), ("Q2", (), ("five",))]
    assert batch.rewards == [1.0, sigmoid(14.0), 1.0, sigmoid(15.0), sigmoid(14.0), 1.0, sigmoid(4.0)]
    assert batch.matched == [True, False, True, False, False, True, False]
    assert (batch.groups_to_rm, batch.samples_to_rm, batch.images_to_rm) == (3, 4, 2)
    assert batch.stats()["rule_match"] == pytest.approx(3 / 7)

    model = reward_samples(samples, "model", Recording())
    assert model.rewards == [13.0, 14.0, 14.0, 15.0, 14.0, 1.0, 4.0]
    rule = reward_samples(samples + [Sample("Q3", "x")], "rule")
    assert rule.rewards == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, None]


def test_reward_samples_refuses_nonfinite_rewards_and_a_missing_source():
    with pytest.raises(BaseRewardError, match=r"returned nan for sample 0 \(prompt 'Q'\)"):
        reward_samples([Sample("Q", "a", (), "b")], "hybrid", Recording(value=float("nan")))
    with pytest.raises(BaseRewardError, match="the model reward needs a reward model"):
        reward_samples([Sample("Q", "a")], "model")
    with pytest.raises(BaseRewardError, match="unknown reward 'best'; choose one of rule, model, hybrid"):
        reward_samples([Sample("Q", "a")], "best")
