"""Validation during and after training: pair sums per process, reduced, then divided once."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..data.schema import PreferencePair
from ..metrics import SUM_KEYS, from_sums, pair_sums
from ..models.reward_model import RewardModel


def evaluate_pairs(model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int, device,
                   rank: int = 0, world_size: int = 1) -> dict[str, float]:
    """`metrics.pair_sums` over this process's shard of `pairs` (reduce, then divide)."""
    from ..scoring import Scorer

    shard = list(pairs)[rank::world_size]
    was_training = model.training
    scores = Scorer(model, batch_size=batch_size, device=device).score(shard) if shard else []
    model.train(was_training)
    return pair_sums([c for c, _ in scores], [r for _, r in scores])


def validation_record(accelerator: Any, model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int,
                      step: int) -> dict[str, Any]:
    """The metrics.jsonl record of one validation pass over all processes."""
    sums = evaluate_pairs(model, pairs, batch_size, accelerator.device, accelerator.process_index,
                          accelerator.num_processes)
    t = accelerator.reduce(torch.tensor([sums[k] for k in SUM_KEYS], device=accelerator.device,
                                        dtype=torch.float64), reduction="sum")
    m = from_sums(t.tolist())
    return {"step": step, "val_loss": m["loss"], "val_accuracy": m["accuracy"],
            "val_reward_gap": m["reward_gap"], "val_pairs": m["count"]}
