"""The caller's result before the housekeeping that follows it.

One event loop serves every call, and whatever becomes ready to run before a tool result is
written runs before it. Closing the call's session (a request to the platform) and leaving its
case channel (a websocket frame) became ready as the wait ended, so they ran between the answer's
arrival and the result's bytes: 0.5 to 2 ms of a lone call's delivery on a 2-core machine,
several times what the relay itself spends on the answer. They only have to happen, not to
happen first.

The HTTP edge marks each MCP request while serving it (`serving_request`); a task started while
the request is served (the SDK's handler task, the relay's background close, the channel's leave)
inherits the mark through its context, and `result_written()` waits until the request's last
response bytes have been handed to the server, or the request has ended some other way (the
caller left, an error), at most `WAIT_LIMIT_S`. Outside a request (stdio, tests of the core, an
MCP task's run after its handle was returned) there is nothing to wait for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import anyio

# The bound on how long housekeeping waits for a result a slow client is not reading.
WAIT_LIMIT_S = 1.0


class Written:
    """Whether a request's result is written. The event a waiter needs is made only when some
    task waits before the result is written: most requests wait minutes for an operator with
    nobody waiting on this, and an event is about 0.9 KB held for the whole wait."""

    __slots__ = ("_event", "done")

    def __init__(self) -> None:
        self.done = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self.done = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self.done:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


_written: ContextVar[Written | None] = ContextVar("hitl_result_written", default=None)


@contextmanager
def serving_request() -> Iterator[Callable[[], None]]:
    """Mark the request served in this block; call the yielded function once its result is
    written (leaving the block counts as written)."""
    written = Written()
    token = _written.set(written)
    try:
        yield written.set
    finally:
        written.set()
        _written.reset(token)


async def result_written(limit_s: float = WAIT_LIMIT_S) -> None:
    """Until the result of the request this task was started for is written; at once outside
    one."""
    written = _written.get()
    if written is None or written.done:
        return
    with anyio.move_on_after(limit_s):
        await written.wait()
