"""One batch of RL samples -> rewards: what every framework adapter does after unpacking its call.

Samples of the same prompt and images form one group, so the reward model encodes the image and
prefix once for all of a prompt's completions (GRPO samples K per prompt). With the hybrid
reward, only completions the rule does not already verify are sent to the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.schema import Group
from ..errors import BaseRewardError
from ..scoring.interface import RewardSource, score_checked
from .images import image_key
from .rewards import check_kind, rule_match, sigmoid


@dataclass(frozen=True)
class Sample:
    """One completion to reward: its prompt text, the prompt's images and the ground truth (None
    when the data set has none)."""

    prompt: str
    completion: str
    images: tuple[Any, ...] = ()
    ground_truth: Any = None


@dataclass
class RewardBatch:
    """Rewards of a batch and what produced them (for logging)."""

    rewards: list[float | None]
    """Per sample; None only for the rule reward of a sample without a ground truth."""
    matched: list[bool | None]
    """Rule outcome per sample (None without a ground truth)."""
    model: list[float | None] = field(default_factory=list)
    """The reward model's raw reward where it was asked, else None."""
    groups_to_rm: int = 0
    samples_to_rm: int = 0
    images_to_rm: int = 0
    """Images carried by the groups sent to the reward model (each group's images counted once)."""

    def stats(self) -> dict[str, float]:
        """Means and counts for a training log (NaN-free: absent values are left out)."""
        rewards = [r for r in self.rewards if r is not None]
        matched = [m for m in self.matched if m is not None]
        model = [m for m in self.model if m is not None]
        out = {"samples": float(len(self.rewards)), "groups_to_rm": float(self.groups_to_rm),
               "samples_to_rm": float(self.samples_to_rm), "images_to_rm": float(self.images_to_rm)}
        if rewards:
            out["reward_mean"] = sum(rewards) / len(rewards)
        if matched:
            out["rule_match"] = sum(matched) / len(matched)
        if model:
            out["rm_reward_mean"] = sum(model) / len(model)
        return out


def _has_truth(ground_truth: Any) -> bool:
    if ground_truth is None:
        return False
    if isinstance(ground_truth, (list, tuple)):
        return any(_has_truth(g) for g in ground_truth)
    return str(ground_truth).strip() != ""


def group_samples(samples: Sequence[Sample], indices: Sequence[int]) -> tuple[list[Group], list[list[int]]]:
    """Groups of the given samples by (prompt, images), in order of first appearance, and for each
    group the sample indices of its responses."""
    order: dict[tuple, int] = {}
    members: list[list[int]] = []
    for i in indices:
        s = samples[i]
        key = (s.prompt, tuple(image_key(im) for im in s.images))
        if key not in order:
            order[key] = len(members)
            members.append([])
        members[order[key]].append(i)
    groups = [Group(prompt=samples[m[0]].prompt, responses=tuple(samples[i].completion for i in m),
                    images=tuple(samples[m[0]].images)) for m in members]
    return groups, members


def reward_samples(samples: Sequence[Sample], kind: str, source: RewardSource | None = None) -> RewardBatch:
    """Rewards of `kind` ("rule", "model" or "hybrid") for every sample.

    rule: 1.0 / 0.0, None without a ground truth. model: the source's raw reward. hybrid: 1.0
    when the rule matches, else sigmoid(reward); the model scores only the unmatched samples.
    """
    check_kind(kind)
    if kind != "rule" and source is None:
        raise BaseRewardError(f"the {kind} reward needs a reward model (a model directory or a server URL)")
    matched = [rule_match(s.completion, s.ground_truth) if _has_truth(s.ground_truth) else None for s in samples]
    batch = RewardBatch(rewards=[None] * len(samples), matched=matched, model=[None] * len(samples))
    if kind == "rule":
        batch.rewards = [None if m is None else float(m) for m in matched]
        return batch
    todo = [i for i in range(len(samples)) if kind == "model" or not matched[i]]
    if todo:
        groups, members = group_samples(samples, todo)
        scores = score_checked(source, groups, "reward model")  # type: ignore[arg-type]
        for idx, row in zip(members, scores):
            for i, r in zip(idx, row):
                if not math.isfinite(r):
                    raise BaseRewardError(f"the reward model returned {r} for sample {i} "
                                          f"(prompt {samples[i].prompt[:60]!r})")
                batch.model[i] = r
        batch.groups_to_rm, batch.samples_to_rm = len(groups), len(todo)
        batch.images_to_rm = sum(len(g.images) for g in groups)
    for i in range(len(samples)):
        if kind == "model":
            batch.rewards[i] = batch.model[i]
        else:
            batch.rewards[i] = 1.0 if matched[i] else sigmoid(batch.model[i])  # type: ignore[arg-type]
    return batch
