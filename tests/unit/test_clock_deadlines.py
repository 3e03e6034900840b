"""`Clock.cancel_at`: a waiting call's deadline as a cancel scope, on the real and fake clocks."""

from __future__ import annotations

import time

import anyio

from hitl_relay.clock import FakeClock, SystemClock


async def test_the_system_clock_cancels_at_the_deadline() -> None:
    clock = SystemClock()
    deadline = clock.monotonic() + 0.05
    with anyio.fail_after(5), clock.cancel_at(deadline) as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught
    # asyncio may run a timer up to its clock's resolution early
    assert time.monotonic() >= deadline - 0.005


async def test_a_deadline_already_passed_cancels_at_the_first_checkpoint() -> None:
    for clock in (SystemClock(), FakeClock()):
        with anyio.fail_after(5), clock.cancel_at(clock.monotonic() - 1) as scope:
            await anyio.sleep_forever()
        assert scope.cancelled_caught


async def test_the_fake_clock_cancels_when_advanced_past_the_deadline() -> None:
    clock = FakeClock()
    cancelled = anyio.Event()

    async def wait() -> None:
        with clock.cancel_at(10) as scope:
            await anyio.sleep_forever()
        assert scope.cancelled_caught
        cancelled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await clock.wait_for_sleepers(1)  # the deadline counts as a sleeper
        clock.advance(9)
        await anyio.wait_all_tasks_blocked()
        assert not cancelled.is_set()
        clock.advance(1)
        with anyio.fail_after(5):
            await cancelled.wait()
    assert clock.sleepers == 0


async def test_a_scope_left_before_its_deadline_is_no_longer_a_sleeper() -> None:
    clock = FakeClock()
    with clock.cancel_at(10):
        assert clock.sleepers == 1
    assert clock.sleepers == 0
