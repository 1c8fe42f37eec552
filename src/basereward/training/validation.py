"""Validation during and after training: pair sums per process, reduced, then divided once.

Any reward source can be validated (`RewardSource`); the training loop hands in a `Scorer` of the
model being trained, in eval mode for the pass and back in training mode after it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..data.schema import PreferencePair
from ..metrics import SUM_KEYS, from_sums, pair_sums
from ..scoring.interface import RewardSource, score_pairs


def evaluate_pairs(source: RewardSource, pairs: Sequence[PreferencePair], rank: int = 0,
                   world_size: int = 1) -> dict[str, float]:
    """`metrics.pair_sums` over this process's shard of `pairs` (reduce, then divide)."""
    shard = list(pairs)[rank::world_size]
    scores = score_pairs(source, shard) if shard else []
    return pair_sums([c for c, _ in scores], [r for _, r in scores])


def validation_record(accelerator: Any, source: RewardSource, pairs: Sequence[PreferencePair],
                      step: int) -> dict[str, Any]:
    """The metrics.jsonl record of one validation pass over all processes."""
    sums = evaluate_pairs(source, pairs, accelerator.process_index, accelerator.num_processes)
    t = accelerator.reduce(torch.tensor([sums[k] for k in SUM_KEYS], device=accelerator.device,
                                        dtype=torch.float64), reduction="sum")
    m = from_sums(t.tolist())
    return {"step": step, "val_loss": m["loss"], "val_accuracy": m["accuracy"],
            "val_reward_gap": m["reward_gap"], "val_pairs": m["count"]}
