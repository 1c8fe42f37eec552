"""Dynamic micro-batching across concurrent requests.

Requests put their items (one response each) on one bounded queue and await a future per item.
A single worker takes up to `max_batch` items once that many are waiting or the oldest has
waited `max_wait_ms`, groups items with the same prompt and images into one `Group` (so the
backbone encodes that image and prefix once) and calls the reward source's `score_groups` in a
worker thread, so the event loop keeps accepting requests while the model runs. Batching and
padding stay in the Scorer: this module only decides which items are scored together.

A full queue refuses a request whole (`Overloaded`, HTTP 503) instead of growing; an item whose
request timed out is dropped before it is scored; `stop()` refuses new work and finishes every
accepted item first (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..data.schema import Group
from ..errors import BaseRewardError
from ..scoring import RewardSource
from ..scoring.interface import score_checked


class Overloaded(Exception):
    """The queue cannot take the request's items now."""


class ShuttingDown(Exception):
    """The server is stopping and accepts no new work."""


class ScoringFailed(Exception):
    """The reward source raised for this item's group (`user_error`: a BaseRewardError)."""

    def __init__(self, message: str, user_error: bool) -> None:
        super().__init__(message)
        self.user_error = user_error


@dataclass(eq=False)
class Item:
    """One response to score; `key` identifies its prompt and images (items sharing it form a group)."""

    prompt: str
    images: tuple[Any, ...]
    response: str
    key: tuple
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]
    taken: bool = False
    queued_at: float = 0.0


@dataclass
class BatchStats:
    batches: int = 0
    sequences: int = 0
    groups: int = 0
    largest: int = 0
    score_seconds: float = 0.0


class MicroBatcher:
    def __init__(self, source: RewardSource, max_batch: int = 32, max_wait_ms: float = 5.0,
                 queue_size: int = 1024) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_ms >= 0")
        self.source = source
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.stats = BatchStats()
        self._queue: deque[Item] = deque()
        self._pending = 0  # items queued, not taken, not cancelled
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="basereward-score")

    @property
    def pending(self) -> int:
        return self._pending

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="basereward-batcher")

    async def stop(self) -> None:
        """Refuse new items, score every accepted one, then stop the worker."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def submit(self, items: list[Item]) -> list[asyncio.Future]:
        """Queue all of `items` or none; one future (the reward) per item."""
        if self._stopping:
            raise ShuttingDown()
        if self._task is None or self._task.done():
            raise ShuttingDown()
        if self._pending + len(items) > self.queue_size:
            raise Overloaded()
        loop = asyncio.get_running_loop()
        now = loop.time()
        for item in items:
            item.queued_at = now
            item.future = loop.create_future()
            item.future.add_done_callback(lambda f, it=item: self._on_done(it))
            self._queue.append(item)
        self._pending += len(items)
        self._wake.set()
        return [item.future for item in items]

    def _on_done(self, item: Item) -> None:
        if item.future.cancelled() and not item.taken:
            item.taken = True  # never scored; no longer counts against the queue
            self._pending -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._pending == 0:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            # Wait for a full batch or until the oldest waiting item has waited max_wait (an item
            # that waited through the previous batch goes at once).
            deadline = self._oldest() + self.max_wait
            while self._pending < self.max_batch and not self._stopping:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._score(loop, batch)

    def _oldest(self) -> float:
        while self._queue and self._queue[0].taken:  # drop items cancelled while waiting
            self._queue.popleft()
        return self._queue[0].queued_at if self._queue else asyncio.get_running_loop().time()

    def _take(self) -> list[Item]:
        batch: list[Item] = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.taken:  # cancelled while waiting
                continue
            item.taken = True
            self._pending -= 1
            batch.append(item)
        return batch

    async def _score(self, loop: asyncio.AbstractEventLoop, batch: list[Item]) -> None:
        groups: dict[tuple, list[Item]] = {}
        for item in batch:
            groups.setdefault(item.key, []).append(item)
        members = list(groups.values())
        started = time.perf_counter()
        results = await loop.run_in_executor(self._executor, self._score_groups, members)
        self.stats.batches += 1
        self.stats.sequences += len(batch)
        self.stats.groups += len(members)
        self.stats.largest = max(self.stats.largest, len(batch))
        self.stats.score_seconds += time.perf_counter() - started
        for items, result in zip(members, results, strict=True):
            for k, item in enumerate(items):
                if item.future.done():  # its request timed out meanwhile
                    continue
                if isinstance(result, ScoringFailed):
                    item.future.set_exception(result)
                elif not math.isfinite(result[k]):
                    item.future.set_exception(ScoringFailed(
                        f"the model produced a non-finite reward ({result[k]}) for this item", user_error=False))
                else:
                    item.future.set_result(result[k])

    def _score_groups(self, members: list[list[Item]]) -> list[list[float] | ScoringFailed]:
        """Runs in the worker thread. If the batch fails, each group is retried alone so one bad
        group fails only its own items."""
        groups = [Group(prompt=its[0].prompt, images=its[0].images, responses=tuple(i.response for i in its))
                  for its in members]
        try:
            return list(score_checked(self.source, groups, "reward source"))
        except Exception as exc:  # noqa: BLE001 - any failure is reported per item
            if len(groups) == 1:
                return [_failure(exc)]
        out: list[list[float] | ScoringFailed] = []
        for group in groups:
            try:
                out.append(score_checked(self.source, [group], "reward source")[0])
            except Exception as exc:  # noqa: BLE001
                out.append(_failure(exc))
        return out


def _failure(exc: BaseException) -> ScoringFailed:
    line = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, BaseRewardError):
        return ScoringFailed(line, user_error=True)
    return ScoringFailed(f"scoring failed: {type(exc).__name__}: {line}", user_error=False)
