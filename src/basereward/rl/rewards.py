r"""Reward functions for GRPO-style training: rule, model, hybrid and pairwise, on plain values.

* `rule_reward(completion, ground_truth)`: 1.0 when the completion's final answer matches the
  ground truth (a multiple-choice letter, a number, or normalised text), else 0.0.
* `model_reward(source, prompt, images, completions)`: the reward model's rewards for the
  completions of one prompt (one group: its images are encoded once).
* `hybrid_reward(completion, ground_truth, reward)`: the paper's best GRPO reward, 1 when the
  rule matches, else sigmoid(reward), so a verified answer always outranks an unverified one.
* `pairwise_reward(responses, judge)`: a generative judge's pairwise verdicts over all
  N x (N-1) ordered pairs, reward_i = sum_j S(y_i, y_j).

Torch-free; nothing here loads a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..data.schema import Group
from ..errors import BaseRewardError
from ..scoring.interface import RewardSource, ScoringMixin

REWARD_KINDS = ("rule", "model", "hybrid")

_NUMBER_WORDS = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split())
}
_ARTICLES = {"a", "an", "the"}
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_NUMBER_TOKEN = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w])|\b(?:{'|'.join(_NUMBER_WORDS)})\b", re.I)
_LETTER = re.compile(r"\(?([A-J])\)?[.:)]?")
_LEADING_LETTER = re.compile(r"\(?([A-J])(?:[).:]|\s*$)")
_LETTER_AFTER_CUE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\(?([A-J])\b\)?", re.I)
_ANSWER_CUE = re.compile(r"answer\s*(?:is\s*:?|:)\s*(.+)", re.I)


def check_kind(kind: str) -> str:
    """`kind` if it names a reward (rule, model, hybrid), else a one-line error."""
    if kind not in REWARD_KINDS:
        raise BaseRewardError(f"unknown reward {kind!r}; choose one of {', '.join(REWARD_KINDS)}")
    return kind


def sigmoid(x: float) -> float:
    """Numerically stable logistic function.

    >>> sigmoid(0.0)
    0.5
    >>> round(sigmoid(2.0), 4), sigmoid(-1000.0)
    (0.8808, 0.0)
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles dropped, whitespace collapsed.

    >>> normalize_answer("  The Red   Square! ")
    'red square'
    >>> normalize_answer("A dog's bone.")
    'dogs bone'
    """
    text = re.sub(r"[^\w\s]", "", text.lower().replace("_", " "))
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def _last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def extract_answer(completion: str) -> str:
    r"""The final answer a completion gives.

    Reasoning before a closing `</think>` is dropped; then the last `\boxed{...}`, else what follows
    the last "answer is" / "answer:" on its line, else the whole (stripped) text.

    >>> extract_answer(r"2 + 2 = \boxed{4}.")
    '4'
    >>> extract_answer("<think>maybe red</think>The answer is: blue.")
    'blue.'
    >>> extract_answer("  Green ")
    'Green'
    """
    text = completion.rsplit("</think>", 1)[-1]
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        return cues[-1].group(1).splitlines()[0].strip()
    return text.strip()


def parse_number(text: str) -> float | None:
    """The number `text` spells exactly (digits with thousands commas, a fraction, a percentage,
    a dollar amount or a number word up to twenty), else None.

    >>> parse_number("1,234.5"), parse_number("3/4"), parse_number("Four"), parse_number("$5")
    (1234.5, 0.75, 4.0, 5.0)
    >>> parse_number("four apples") is None
    True
    """
    s = text.strip().rstrip(".").strip()
    s = s.removeprefix("$").removesuffix("%").strip()
    if s.lower() in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[s.lower()])
    if not re.fullmatch(_NUMBER, s):
        return None
    num, _, den = s.replace(",", "").partition("/")
    if den:
        return float(num) / float(den) if float(den) != 0 else None
    return float(num)


def last_number(text: str) -> float | None:
    """The last number written in `text` (digits or a number word), else None.

    >>> last_number("I count 2 red and 3 blue shapes")
    3.0
    >>> last_number("there are three") , last_number("none") is None
    (3.0, True)
    """
    for match in reversed(list(_NUMBER_TOKEN.finditer(text))):
        value = parse_number(match.group(0))
        if value is not None:
            return value
    return None


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter (A-J) an answer picks, else None.

    >>> choice_letter("(B)"), choice_letter("C. Paris"), choice_letter("I think the answer is D")
    ('B', 'C', 'D')
    >>> choice_letter("Because it is red") is None
    True
    """
    s = text.strip()
    for pattern in (_LETTER.fullmatch, _LEADING_LETTER.match):
        m = pattern(s)
        if m:
            return m.group(1)
    cues = list(_LETTER_AFTER_CUE.finditer(s))
    return cues[-1].group(1) if cues else None


def rule_match(completion: str, ground_truth: Any) -> bool:
    """Whether the completion's final answer matches the ground truth (any of several, if a list).

    A ground truth that is one capital letter (A-J, optionally in parentheses) is matched as a
    multiple-choice letter; one that is a number, numerically (the answer's last number, digits or
    words, within 1e-6 relative); "yes"/"no" against the answer's first word; anything else as
    normalised text, exactly. No ground truth (None or "") never matches.

    >>> rule_match("The answer is (B).", "B"), rule_match("I find 4 shapes", "4")
    (True, True)
    >>> rule_match("Yes, there is a star.", "yes"), rule_match("The Red circle", "red circle")
    (True, True)
    >>> rule_match("It is red.", "red"), rule_match("blue", ["red", "Blue"])
    (False, True)
    """
    if isinstance(ground_truth, (list, tuple)):
        return any(rule_match(completion, g) for g in ground_truth)
    if ground_truth is None:
        return False
    truth = str(ground_truth).strip()
    if not truth:
        return False
    answer = extract_answer(completion)
    if _LETTER.fullmatch(truth):
        return choice_letter(answer) == _LETTER.fullmatch(truth).group(1)  # type: ignore[union-attr]
    number = parse_number(truth)
    if number is not None:
        got = parse_number(answer)
        got = last_number(answer) if got is None else got
        return got is not None and math.isclose(got, number, rel_tol=1e-6, abs_tol=1e-9)
    norm_truth, norm_answer = normalize_answer(truth), normalize_answer(answer)
    if norm_truth in ("yes", "no"):
        return norm_answer.split()[:1] == [norm_truth]
    return norm_answer == norm_truth


def rule_reward(completion: str, ground_truth: Any) -> float:
    """1.0 if `rule_match`, else 0.0.

    >>> rule_reward(r"\\boxed{12}", 12), rule_reward("eleven", "12")
    (1.0, 0.0)
    """
    return 1.0 if rule_match(completion, ground_truth) else 0.0


def hybrid_reward(completion: str, ground_truth: Any, reward: float) -> float:
    """1.0 when the rule matches, else sigmoid(reward): always in (0, 1], and a verified answer
    is never outranked by an unverified one however high the model scores it.

    >>> hybrid_reward("4", "4", -3.0), hybrid_reward("5", "4", 0.0)
    (1.0, 0.5)
    """
    return 1.0 if rule_match(completion, ground_truth) else sigmoid(reward)


def model_reward(source: RewardSource, prompt: str, images: Sequence[Any], completions: Sequence[str]) -> list[float]:
    """The reward model's rewards for the completions of one prompt, scored as one group.

    >>> class Longer:  # a stand-in source: reward = words in the response
    ...     def score_groups(self, groups):
    ...         return [[float(len(r.split())) for r in g.responses] for g in groups]
    >>> model_reward(Longer(), "Describe it.", [], ["A star.", "A red star."])
    [2.0, 3.0]
    """
    if not completions:
        return []
    group = Group(prompt=prompt, responses=tuple(completions), images=tuple(images))
    return [float(x) for x in source.score_groups([group])[0]]


def ordered_pairs(n: int) -> list[tuple[int, int]]:
    """All N x (N-1) ordered pairs (i, j), i != j: each pair is judged in both orders.

    >>> ordered_pairs(3)
    [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    """
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def pairwise_reward(responses: Sequence[str], judge: Callable[[list[tuple[str, str]]], Sequence[float]]) -> list[float]:
    """reward_i = sum over j != i of S(y_i, y_j), where `judge(pairs)` returns, for each
    (first, second), S = how strongly the judge prefers `first` (e.g. its probability). Judging both
    orders cancels a judge's position bias; `judge` gets all pairs at once so it can batch them.

    >>> def by_length(pairs):  # prefers the longer response; ties split
    ...     return [1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0 for a, b in pairs]
    >>> pairwise_reward(["ok", "fine!", "no"], by_length)
    [0.5, 2.0, 0.5]
    """
    pairs = ordered_pairs(len(responses))
    verdicts = list(judge([(responses[i], responses[j]) for i, j in pairs]))
    if len(verdicts) != len(pairs):
        raise BaseRewardError(f"pairwise judge returned {len(verdicts)} verdicts for {len(pairs)} pairs")
    rewards = [0.0] * len(responses)
    for (i, _), s in zip(pairs, verdicts):
        rewards[i] += float(s)
    return rewards


class PairwiseSource(ScoringMixin):
    """A generative pairwise judge as a `RewardSource`: every group's responses are compared in all
    ordered pairs and `pairwise_reward` aggregates the verdicts.

    `judge(prompt, images, pairs)` returns S(first, second) for each (first, second) text pair.

    >>> src = PairwiseSource(lambda prompt, images, pairs: [float(len(a) > len(b)) for a, b in pairs])
    >>> src.score_responses("Describe it.", [], ["a cat", "a black cat", "cat"])
    [1.0, 2.0, 0.0]
    """

    def __init__(self, judge: Callable[[str, Sequence[Any], list[tuple[str, str]]], Sequence[float]]):
        self.judge = judge

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        return [pairwise_reward(g.responses, lambda pairs, g=g: self.judge(g.prompt, g.images, pairs)) for g in groups]
