"""Waiting for a condition that raises no event the test could await (a row written by another
process, a page element): re-check it often, fail naming it after a bounded time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.01  # a condition poll interval, not a synchronisation delay


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0
) -> None:
    """Return once `await check()` is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
