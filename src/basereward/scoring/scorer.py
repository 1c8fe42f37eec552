"""The Scorer: the one batched, no-grad inference path (the only place that batches, pads and pools).

Groups are sorted by estimated length and batched so each batch pads to a similar length; each
group's images are encoded once for all of its responses (the backbone shares them). Pooling
(last non-pad token -> head) happens inside `RewardModel.forward`, which only this module and
the trainer call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from ..config.schema import SCORING_PRECISIONS as PRECISIONS
from ..data.schema import Group
from ..models.reward_model import RewardModel
from .interface import ScoringMixin
from .truncation import count_batch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Scorer(ScoringMixin):
    """Batched reward inference for a RewardModel.

    `batch_size` is the number of sequences (responses) per forward pass; a group is never split
    across batches so its images are encoded once. `token_budget` (0 = none) also bounds a batch's
    padded size, sequences x the longest one's `token_estimate`, so batches of short groups hold
    more sequences than batches of long ones (a group over the budget is a batch of its own).
    `precision` (as `train.mixed_precision`): "auto" runs float32 weights under bf16 autocast on
    a GPU that supports it, "bf16-where-fast" also on a CPU where bf16 is native and measured
    faster (`training.stages.cpu_bf16_speedup`; how the demo's model was trained), "bf16" always, "no" never.
    """

    def __init__(
        self,
        model: RewardModel,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        progress: bool = False,
        name: str = "",
        token_budget: int = 0,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model
        self.precision = precision
        self.batch_size = max(1, batch_size)
        self.token_budget = max(0, token_budget)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device).eval()
        self.progress = progress
        self.name = name
        # What the truncation rule did to every sequence this scorer has scored (see `truncation`).
        self.truncated = {"sequences": 0, "prompt": 0, "response": 0}

    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        """scores[i][k] = reward of groups[i].responses[k]."""
        out: list[list[float] | None] = [None] * len(groups)
        order = sorted(range(len(groups)), key=lambda i: -length_estimate(groups[i]))
        bar = progress_bar(len(groups), self.progress, "scoring")
        with torch.inference_mode(), self._autocast():
            for idx in pack_batches(order, groups, self.batch_size, self.token_budget):
                batch = self.model.collate([groups[i] for i in idx])
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                rewards = self.model(batch).float().cpu().tolist()
                self._count_truncation(batch, len(rewards))
                pos = 0
                for i in idx:
                    n = len(groups[i].responses)
                    out[i] = rewards[pos : pos + n]
                    pos += n
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out  # type: ignore[return-value]

    def _count_truncation(self, batch: dict, n: int) -> None:
        count_batch(self.truncated, batch, n)

    def _autocast(self):
        from ..training.stages import resolve_mixed_precision

        if next(self.model.backbone.parameters()).dtype != torch.float32 or self.precision == "no":
            return contextlib.nullcontext()
        cuda = self.device.type == "cuda"
        if self.precision == "bf16" or resolve_mixed_precision(self.precision, cuda=cuda) == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def length_estimate(group: Group) -> int:
    """Characters of a group's longest sequence, images at a fixed cost: the sort key that makes
    batches pad to similar lengths (scoring and the training plan's micro-batches)."""
    longest = max((len(r) for r in group.responses), default=0)
    earlier = sum(len(content) for _, content in group.history)
    return earlier + len(group.prompt) + longest + 1000 * len(group.images)


def token_estimate(group: Group) -> int:
    """Rough tokens of a group's longest sequence: `length_estimate` at ~4 characters a token
    (an image counts 250, about a 448 x 448 Qwen-VL image)."""
    return length_estimate(group) // 4 + 1


def pack_batches(order: list[int], groups: Sequence[Group], batch_size: int, token_budget: int = 0) -> Iterator[list[int]]:
    """Consecutive runs of `order` holding at most batch_size sequences and, with a token budget,
    at most token_budget padded tokens (sequences x longest `token_estimate`); a group stays whole."""
    cur: list[int] = []
    n = longest = 0
    for i in order:
        k = len(groups[i].responses)
        t = token_estimate(groups[i]) if token_budget else 0
        if cur and (n + k > batch_size or (n + k) * max(longest, t) > token_budget > 0):
            yield cur
            cur, n, longest = [], 0, 0
        cur.append(i)
        n += k
        longest = max(longest, t)
    if cur:
        yield cur


def progress_bar(total: int, enabled: bool, desc: str):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="group", dynamic_ncols=True)
