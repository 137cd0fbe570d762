"""The pacer keeps any window of `per` seconds to `requests` starts, with a real or a
recording sleep."""

from __future__ import annotations

import pytest

from agent.graph.pacing import Pacer
from tests.conftest import RecordingSleep


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _starts(pacer: Pacer, clock: FakeClock, sleep: RecordingSleep, n: int,
                  gap: float = 0.0) -> list[float]:
    """Start times of n turns, as the pacer's own clock saw them."""
    times = []
    for _ in range(n):
        await pacer.turn()
        times.append(clock.now + sum(sleep.waits))
        clock.now += gap
    return times


@pytest.mark.parametrize("gap", [0.0, 0.7, 3.0])
async def test_no_window_holds_more_than_the_limit(gap: float) -> None:
    clock, sleep = FakeClock(), RecordingSleep()
    pacer = Pacer(5, 10.0, sleep=sleep, clock=clock)
    times = await _starts(pacer, clock, sleep, 23, gap)
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 10.0 - 1e-9
    assert pacer.waited == pytest.approx(sum(sleep.waits))


async def test_five_requests_cost_no_wait_the_sixth_waits_the_window() -> None:
    clock, sleep = FakeClock(), RecordingSleep()
    pacer = Pacer(5, 10.0, sleep=sleep, clock=clock)
    await _starts(pacer, clock, sleep, 5)
    assert sleep.waits == []
    await pacer.turn()
    assert sleep.waits == [pytest.approx(10.0)]


async def test_a_real_sleep_is_not_counted_twice() -> None:
    clock = FakeClock()
    waits: list[float] = []

    async def real_sleep(seconds: float) -> None:  # moves the clock as asyncio.sleep would
        waits.append(seconds)
        clock.now += seconds

    pacer = Pacer(2, 10.0, sleep=real_sleep, clock=clock)
    for _ in range(6):
        await pacer.turn()
    assert waits == [pytest.approx(10.0)] * 2


def test_a_pace_needs_a_positive_budget() -> None:
    with pytest.raises(ValueError):
        Pacer(0, 10.0, sleep=RecordingSleep())
