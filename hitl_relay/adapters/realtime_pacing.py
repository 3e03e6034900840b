"""Joins paced under the project's join rate (see realtime_pool's docstring)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class JoinPacer:
    """At most `per_second` joins a second (a moving window, `limits`), and a pause for every
    join after the project refused one for its rate."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second >= 1:
            self.item: RateLimitItem = RateLimitItemPerSecond(int(per_second))
        else:  # fewer than one a second: one per ceil(1 / rate) seconds
            self.item = RateLimitItemPerSecond(1, math.ceil(1 / per_second))
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._clock = clock
        self.paused_until = 0.0
        self.waited = 0  # joins that had to wait (metrics for tests and benchmarks)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    async def acquire(self) -> None:
        waited = False
        while True:
            pause = self.paused_until - self._clock()
            if pause <= 0 and self._limiter.hit(self.item, "joins"):
                break
            if pause <= 0:
                stats = self._limiter.get_window_stats(self.item, "joins")
                pause = max(0.001, stats.reset_time - time.time())
            waited = True
            await asyncio.sleep(min(pause, 1.0))  # pacing: the wait is the point
        if waited:
            self.waited += 1
