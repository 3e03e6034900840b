"""The caller's result before the housekeeping (hitl_relay/result_first.py): work a request starts
waits until the request's last response bytes are written, or the request has ended."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from anyio import wait_all_tasks_blocked

from hitl_relay.mcp_http import McpRouter
from hitl_relay.result_first import WAIT_LIMIT_S, Written, result_written, serving_request


async def test_outside_a_request_there_is_nothing_to_wait_for() -> None:
    with anyio.fail_after(WAIT_LIMIT_S / 10):
        await result_written()


def router(app: Any) -> McpRouter:
    # Plain POSTs without a buffered body go to the streaming transport; the task service is
    # only asked about client responses, which these are not.
    return McpRouter(app, app, tasks=None)  # type: ignore[arg-type]


async def test_work_a_request_starts_runs_after_its_last_body_is_sent() -> None:
    order: list[str] = []

    async with anyio.create_task_group() as background:

        async def housekeeping() -> None:
            await result_written()
            order.append("housekeeping")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            background.start_soon(housekeeping)  # inherits this request's context
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await wait_all_tasks_blocked()  # housekeeping had every chance to run: it waits
            await send(
                {"type": "http.response.body", "body": b"event: progress", "more_body": True}
            )
            await wait_all_tasks_blocked()
            await send({"type": "http.response.body", "body": b"the result"})

        async def send(message: Any) -> None:
            order.append(message["type"] + (" (more)" if message.get("more_body") else ""))

        with anyio.fail_after(WAIT_LIMIT_S / 2):  # released by the write, not by the limit
            await router(app)({"type": "http", "method": "POST", "headers": []}, None, send)
            await wait_all_tasks_blocked()
    assert order == [
        "http.response.start",
        "http.response.body (more)",
        "http.response.body",
        "housekeeping",
    ]


async def test_a_request_that_ends_without_a_result_releases_its_work() -> None:
    done = anyio.Event()

    async with anyio.create_task_group() as background:

        async def housekeeping() -> None:
            await result_written()
            done.set()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            background.start_soon(housekeeping)
            raise ConnectionResetError("the caller hung up")

        with anyio.fail_after(WAIT_LIMIT_S / 2):
            with contextlib.suppress(ConnectionResetError):
                await router(app)({"type": "http", "method": "POST", "headers": []}, None, None)
            await done.wait()


async def test_a_result_never_written_holds_the_work_at_most_the_limit() -> None:
    with serving_request():
        started = anyio.current_time()
        await result_written(limit_s=0.05)
        # asyncio may run a timer up to its clock's resolution early
        assert anyio.current_time() - started >= 0.05 * 0.9


async def test_the_written_mark_releases_waiters_before_and_after_it_is_set() -> None:
    # The event behind the mark is made only when a waiter comes before the result is written:
    # waiters that came before are released by the write, one that comes after returns at once.
    written = Written()
    released: list[int] = []

    async def waiter(n: int) -> None:
        await written.wait()
        released.append(n)

    with anyio.fail_after(WAIT_LIMIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, 1)
            tg.start_soon(waiter, 2)
            await wait_all_tasks_blocked()
            assert released == []
            written.set()
        await waiter(3)
    assert sorted(released) == [1, 2, 3]
