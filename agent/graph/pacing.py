"""Client-side pacing for Graph APIs with a small documented request budget.

The identity-and-access reports (`/reports/authenticationMethods/...`, sign-ins, audit
logs) allow "five requests per 10 seconds" per app and tenant
(graph/throttling-limits, includes/throttling-entra-logs-reports.md). Retrying 429s would
work too, but burns the retry budget and makes a run's length depend on Graph's mood;
pacing keeps every request inside the limit, so 429 stays the exception.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

_EPSILON = 1e-9  # float sums: a start exactly one window ago has left it


class Pacer:
    """At most `requests` starts in any window of `per` seconds (a sliding window).

    `sleep` is the client's (tests and benchmarks pass one that only records the wait);
    so that a recording sleep still paces correctly, the pacer keeps its own clock, which
    advances with the real one and with every wait it asked for.
    """

    def __init__(self, requests: int, per: float, *,
                 sleep: Callable[[float], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if requests < 1 or per <= 0:
            raise ValueError("a pace needs at least one request per positive window")
        self.requests = requests
        self.per = per
        self._sleep = sleep
        self._clock = clock
        self._offset = 0.0  # waits a recording sleep did not really spend
        self._starts: deque[float] = deque()
        self.waited = 0.0  # seconds of waiting asked for, in total

    def _now(self) -> float:
        return self._clock() + self._offset

    async def turn(self) -> None:
        """Wait (if need be) until one more request fits in the window, and count it."""
        now = self._now()
        while self._starts and self._starts[0] <= now - self.per + _EPSILON:
            self._starts.popleft()
        if len(self._starts) >= self.requests:
            wait = self._starts[0] + self.per - now
            before = self._clock()
            await self._sleep(wait)
            # a real sleep moved the clock; a recording one did not: make up the difference
            self._offset += max(0.0, wait - (self._clock() - before))
            self.waited += wait
            now = self._now()
            while self._starts and self._starts[0] <= now - self.per + _EPSILON:
                self._starts.popleft()
        self._starts.append(now)
