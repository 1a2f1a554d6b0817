"""The PostgreSQL adapter's batcher: requests that arrive while others are in flight go
together, each still gets its own answer (backpack/storage/postgres/adapter.py)."""

from __future__ import annotations

import asyncio

import pytest

from backpack.errors import NotFound, Unavailable
from backpack.storage.postgres.adapter import _Batcher


class Ask:
    def __init__(self, key: str, value: int) -> None:
        self.key = key
        self.value = value
        self.future: asyncio.Future[int] = asyncio.get_running_loop().create_future()


class Runner:
    """Answers each member with value * 10, after a gate opens; records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: dict[str, Exception] = {}
        self.holds: dict[int, asyncio.Event] = {}  # a batch led by this value waits for it

    async def __call__(self, members: list[Ask]) -> None:
        self.batches.append([m.value for m in members])
        await self.gate.wait()
        await self.holds.get(members[0].value, self.gate).wait()
        if members[0].key in self.fail:
            raise self.fail[members[0].key]
        for member in members:
            member.future.set_result(member.value * 10)


def batcher(runner: Runner, slots: int = 1, size: int = 100) -> _Batcher[Ask, str]:
    return _Batcher[Ask, str](lambda ask: ask.key, runner, "interrupted", slots=slots, size=size)


async def queued_behind(
    batches: _Batcher[Ask, str], runner: Runner, first: Ask, rest: list[Ask]
) -> tuple[asyncio.Future[int], list[asyncio.Future[int]]]:
    """`first` joins and holds the only slot, its batch waiting on the gate; then `rest`
    join (and wait for a slot). The gate is left closed."""
    runner.gate.clear()
    head = asyncio.ensure_future(batches.join(first))
    await asyncio.sleep(0)
    tail = [asyncio.ensure_future(batches.join(ask)) for ask in rest]
    await asyncio.sleep(0)
    return head, tail


async def test_a_lone_request_runs_at_once_in_its_own_task() -> None:
    runner = Runner()
    assert await batcher(runner).join(Ask("a", 1)) == 10
    assert runner.batches == [[1]]


async def test_requests_that_wait_for_a_slot_go_together() -> None:
    runner = Runner()
    asks = [Ask("a", v) for v in range(2, 12)]
    first, rest = await queued_behind(batcher(runner), runner, Ask("a", 1), asks)
    runner.gate.set()
    assert await asyncio.gather(first, *rest) == [v * 10 for v in range(1, 12)]
    assert runner.batches == [[1], list(range(2, 12))]


async def test_batches_are_split_by_key_and_size() -> None:
    runner = Runner()
    asks = [Ask(k, v) for v, k in enumerate("ababab", 1)]
    first, rest = await queued_behind(batcher(runner, size=4), runner, Ask("a", 0), asks)
    runner.gate.set()
    assert await asyncio.gather(first, *rest) == [v * 10 for v in range(7)]
    # At most 4 per batch, each batch split by key.
    assert runner.batches == [[0], [1, 3], [2, 4], [5], [6]]


async def test_an_error_answers_only_its_key() -> None:
    runner = Runner()
    runner.fail["b"] = NotFound("no b")
    asks = [Ask(k, v) for v, k in enumerate("abab", 1)]
    first, rest = await queued_behind(batcher(runner), runner, Ask("a", 0), asks)
    runner.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:2] == [0, 10] and results[3] == 30
    assert isinstance(results[2], NotFound) and isinstance(results[4], NotFound)


async def test_a_cancelled_runner_answers_the_others_of_its_batch() -> None:
    runner = Runner()
    batches = batcher(runner)
    first, waiting = await queued_behind(batches, runner, Ask("a", 1), [Ask("a", 2), Ask("a", 3)])
    runner.holds[2] = asyncio.Event()  # the batch of 2 and 3 will wait
    runner.gate.set()
    assert await first == 10
    while len(runner.batches) < 2:
        await asyncio.sleep(0)
    (background,) = batches._tasks
    background.cancel()  # as when the server shuts down
    for task in waiting:
        with pytest.raises(Unavailable, match="interrupted"):
            await task


async def test_what_a_done_holder_leaves_is_finished_in_the_background() -> None:
    runner = Runner()
    asks = [Ask("a", v) for v in range(2, 8)]
    first, rest = await queued_behind(batcher(runner, size=2), runner, Ask("a", 1), asks)
    runner.gate.set()
    assert await first == 10  # answered by its own batch; the rest goes on without it
    assert await asyncio.gather(*rest) == [v * 10 for v in range(2, 8)]
    assert runner.batches == [[1], [2, 3], [4, 5], [6, 7]]
