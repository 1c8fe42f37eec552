"""The micro-batcher on a recording reward source: grouping, batch bounds, the bounded queue,
cancellation, draining on stop, and per-group failure isolation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from basereward.errors import DataError
from basereward.serve.batcher import (
    Item,
    MicroBatcher,
    Overloaded,
    ScoringFailed,
    ShuttingDown,
)


class Recorder:
    """reward = 100 * len(prompt) + len(response); remembers every call's groups."""

    def __init__(self, gate: threading.Event | None = None, fail_prompt: str = "", error=RuntimeError):
        self.calls: list[list[tuple[str, tuple[str, ...]]]] = []
        self.gate = gate
        self.fail_prompt = fail_prompt
        self.error = error

    def score_groups(self, groups):
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append([(g.prompt, g.responses) for g in groups])
        if any(g.prompt == self.fail_prompt for g in groups):
            raise self.error(f"cannot score {self.fail_prompt!r}\nsecond line")
        return [[100.0 * len(g.prompt) + len(r) if r != "nan" else float("nan") for r in g.responses]
                for g in groups]


def item(prompt: str, response: str, image: str = "") -> Item:
    return Item(prompt=prompt, images=(), response=response, key=(prompt, (image,)))


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_batch_grouped_by_prompt_and_image():
    source = Recorder()

    async def main():
        b = MicroBatcher(source, max_batch=5, max_wait_ms=1000, queue_size=10)
        await b.start()
        # Three requests submitted together: five items, two of them share prompt "p" and image "x".
        f1 = b.submit([item("p", "a", "x")])
        f2 = b.submit([item("q", "bb"), item("p", "ccc", "x")])
        f3 = b.submit([item("p", "dddd", "y"), item("q", "e")])
        out = [await asyncio.gather(*f) for f in (f1, f2, f3)]
        await b.stop()
        return out, b.stats

    out, stats = run(main())
    # max_batch reached at once: one call, groups in first-seen order, responses in arrival order.
    assert source.calls == [[("p", ("a", "ccc")), ("q", ("bb", "e")), ("p", ("dddd",))]]
    assert out == [[101.0], [102.0, 103.0], [104.0, 101.0]]
    assert (stats.batches, stats.sequences, stats.groups, stats.largest) == (1, 5, 3, 5)


def test_batches_never_exceed_max_batch():
    source = Recorder()

    async def main():
        b = MicroBatcher(source, max_batch=4, max_wait_ms=0, queue_size=100)
        await b.start()
        futures = b.submit([item("p", str(i)) for i in range(10)])
        rewards = await asyncio.gather(*futures)
        await b.stop()
        return rewards

    rewards = run(main())
    assert [sum(len(r) for _, r in call) for call in source.calls] == [4, 4, 2]
    assert rewards == [101.0] * 10


def test_full_queue_refuses_the_whole_request_and_serves_again_later():
    gate = threading.Event()
    source = Recorder(gate)

    async def main():
        b = MicroBatcher(source, max_batch=2, max_wait_ms=0, queue_size=3)
        await b.start()
        first = b.submit([item("p", "a"), item("p", "b")])
        while b.pending:  # the worker took the first two and is blocked in the source
            await asyncio.sleep(0.01)
        queued = b.submit([item("q", "c"), item("q", "d"), item("q", "e")])
        with pytest.raises(Overloaded):
            b.submit([item("r", "f")])
        assert b.pending == 3  # nothing of the refused request was queued
        gate.set()
        done = await asyncio.gather(*first, *queued)
        again = await asyncio.gather(*b.submit([item("r", "f")]))
        await b.stop()
        return done, again

    done, again = run(main())
    assert done == [101.0, 101.0, 101.0, 101.0, 101.0]
    assert again == [101.0]


def test_cancelled_items_free_the_queue_and_are_never_scored():
    gate = threading.Event()
    source = Recorder(gate)

    async def main():
        b = MicroBatcher(source, max_batch=1, max_wait_ms=0, queue_size=2)
        await b.start()
        busy = b.submit([item("p", "a")])
        while b.pending:
            await asyncio.sleep(0.01)
        waiting = b.submit([item("timed-out", "x"), item("timed-out", "y")])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waiting), 0.05)
        assert b.pending == 0
        later = b.submit([item("q", "b"), item("q", "c")])  # room again
        gate.set()
        out = await asyncio.gather(*busy, *later)
        await b.stop()
        return out

    assert run(main()) == [101.0, 101.0, 101.0]
    assert all(p != "timed-out" for call in source.calls for p, _ in call)


def test_stop_scores_everything_accepted_then_refuses():
    source = Recorder()

    async def main():
        b = MicroBatcher(source, max_batch=2, max_wait_ms=10_000, queue_size=10)
        await b.start()
        futures = b.submit([item("p", "a")])  # would wait 10 s for company
        await b.stop()
        assert futures[0].done()
        with pytest.raises(ShuttingDown):
            b.submit([item("p", "b")])
        return futures[0].result()

    assert run(main()) == 101.0


@pytest.mark.parametrize("error, user_error", [(RuntimeError, False), (DataError, True)])
def test_a_failing_group_fails_only_its_own_items(error, user_error):
    source = Recorder(fail_prompt="bad", error=error)

    async def main():
        b = MicroBatcher(source, max_batch=4, max_wait_ms=1000, queue_size=10)
        await b.start()
        good = b.submit([item("good", "a"), item("other", "b")])
        bad = b.submit([item("bad", "c"), item("bad", "d")])
        ok = await asyncio.gather(*good)
        errors = await asyncio.gather(*bad, return_exceptions=True)
        await b.stop()
        return ok, errors

    ok, errors = run(main())
    assert ok == [401.0, 501.0]
    assert all(isinstance(e, ScoringFailed) and e.user_error is user_error for e in errors)
    expected = "cannot score 'bad'" if user_error else "scoring failed: RuntimeError: cannot score 'bad'"
    assert str(errors[0]) == expected  # one line
    # The whole batch first, then each group alone.
    assert len(source.calls) == 4 and [len(c) for c in source.calls] == [3, 1, 1, 1]


def test_a_non_finite_reward_is_an_error_for_that_item_only():
    source = Recorder()

    async def main():
        b = MicroBatcher(source, max_batch=2, max_wait_ms=1000, queue_size=10)
        await b.start()
        out = await asyncio.gather(*b.submit([item("p", "nan"), item("p", "ok")]), return_exceptions=True)
        await b.stop()
        return out

    nan, ok = run(main())
    assert isinstance(nan, ScoringFailed) and "non-finite reward (nan)" in str(nan)
    assert ok == 102.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), queue_size=0)


def test_a_lone_item_is_scored_after_max_wait_without_company():
    source = Recorder()

    async def main():
        b = MicroBatcher(source, max_batch=8, max_wait_ms=20, queue_size=10)
        await b.start()
        reward = await asyncio.wait_for(b.submit([item("p", "a")])[0], 5)
        await b.stop()
        return reward

    assert run(main()) == 101.0
    assert source.calls == [[("p", ("a",))]]
