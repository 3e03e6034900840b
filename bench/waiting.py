"""A bounded wait on a condition the benchmark cannot await (a count in the relay's state):
re-checked often, a clear error after a deadline. bench/ runs without the tests, so it has its
own (tests/waiting.py is the tests')."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.05  # a condition poll interval, not a synchronisation delay


async def wait_for(done: Callable[[], bool], failure: Callable[[], str], within_s: float) -> None:
    """Return once `done()` is true; RuntimeError(`failure()`) if it is not within `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not done():
        if loop.time() > deadline:
            raise RuntimeError(failure())
        await asyncio.sleep(POLL_S)
