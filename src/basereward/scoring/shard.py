"""Scoring across processes: each scores a contiguous shard of the input, everyone gets all of it.

Under `accelerate launch` / `torchrun` with WORLD_SIZE > 1, process r of w scores groups
[n*r//w, n*(r+1)//w) and the shards are all-gathered in rank order, so the scores come back in
input order on every process (only rank 0 writes files). A shard is scored by the same `Scorer`
call as a whole input, and a group's reward does not depend on what it is batched with, so the
result equals one process's. One process (no WORLD_SIZE) never imports torch.distributed here and
behaves exactly as a plain `score_checked` call.

Each scorer's truncation counts are summed over the processes too, so every report describes the
whole input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.schema import Group
from .interface import RewardSource, score_checked
from .truncation import scorers_of


@dataclass(frozen=True)
class Processes:
    """Where this command runs: process `rank` of `world`, on `device` (None: the default)."""

    rank: int = 0
    world: int = 1
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process (a collective: all must call it)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def current_processes() -> Processes:
    """One process, unless a launcher started several (WORLD_SIZE > 1): then accelerate's view of them."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    from ..processes import close_process_group_at_exit

    state = PartialState()  # joins the process group the launcher set up
    close_process_group_at_exit()
    return Processes(state.process_index, state.num_processes, str(state.device))


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of process `rank`'s contiguous shard of n items (sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def score_sharded(source: RewardSource, groups: Sequence[Group], procs: Processes,
                  name: str = "reward source") -> list[list[float]]:
    """`score_checked(source, groups)` with the work split over `procs`; all scores, in input order,
    on every process."""
    if procs.world == 1:
        return score_checked(source, groups, name)
    start, end = shard_bounds(len(groups), procs.rank, procs.world)
    scorers = list(scorers_of(source))
    before = [dict(s.truncated) for s in scorers]
    local = score_checked(source, groups[start:end], name) if end > start else []
    added = [{k: s.truncated[k] - b.get(k, 0) for k in s.truncated} for s, b in zip(scorers, before)]
    shards, counts = zip(*procs.gather((local, added)))
    for i, (s, b) in enumerate(zip(scorers, before)):
        s.truncated = {k: b.get(k, 0) + sum(c[i][k] for c in counts) for k in s.truncated}
    return [row for shard in shards for row in shard]
