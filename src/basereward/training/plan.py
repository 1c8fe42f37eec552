"""Which pairs each micro-batch of each optimizer step uses, and the Dataset that collates them.

The data order is a pure function of (seed, epoch): step s of a run always sees the same pairs,
so a run that is interrupted and resumed from a checkpoint ends with the same weights as one
that was not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..data.schema import Group, PreferencePair


@lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of epoch `epoch`, made once per epoch (not per micro-batch: at millions of
    pairs it costs tens of milliseconds); read-only because it is shared."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


@dataclass(frozen=True, eq=False)
class StepPlan:
    """Which pairs each micro-batch of each optimizer step uses (deterministic in seed/epoch)."""

    num_pairs: int
    global_batch: int
    micro_batch: int
    world_size: int
    seed: int
    lengths: Sequence[int] | np.ndarray = ()
    """Optional length estimate per pair (kept as one numpy array: 8 bytes a pair, not a Python
    int each); a step's pairs are then split into micro-batches of similar length (less padding).
    The step's set of pairs, and so its gradient, is unchanged."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", np.asarray(self.lengths, dtype=np.int64))

    def steps_per_epoch(self) -> int:
        return self.num_pairs // self.global_batch

    def accum(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def step_indices(self, step: int) -> np.ndarray:
        """Indices of the global batch of optimizer step `step` (0-based)."""
        spe = self.steps_per_epoch()
        epoch, offset = divmod(step, spe)
        perm = _epoch_order(self.seed, epoch, self.num_pairs)
        return perm[offset * self.global_batch : (offset + 1) * self.global_batch]

    def micro_indices(self, step: int, rank: int, micro: int) -> np.ndarray:
        """The `micro`-th micro-batch of process `rank` in optimizer step `step`."""
        idx = self.step_indices(step)
        if len(self.lengths):
            idx = idx[np.argsort(self.lengths[idx], kind="stable")]
        start = (rank * self.accum() + micro) * self.micro_batch
        return idx[start : start + self.micro_batch]


class MicroBatches(torch.utils.data.Dataset):
    """Item k = the collated k-th micro-batch from `start_step` on, for one process.

    Collation (image decoding, tokenisation) runs in DataLoader workers when num_workers > 0, so
    `collator` must be a plain picklable object (the backbone's `collator`), never the model.
    """

    def __init__(self, plan: StepPlan, pairs: Sequence[PreferencePair],
                 collator: Callable[[Sequence[Group]], dict[str, Any]], rank: int,
                 start_step: int, end_step: int) -> None:
        self.plan, self.pairs, self.collator, self.rank = plan, pairs, collator, rank
        self.start, self.end = start_step, end_step

    def __len__(self) -> int:
        return (self.end - self.start) * self.plan.accum()

    def __getitem__(self, k: int) -> dict[str, Any]:
        step, micro = divmod(k, self.plan.accum())
        idx = self.plan.micro_indices(self.start + step, self.rank, micro)
        return self.collator([self.pairs[i].to_group() for i in idx])
