"""Clocks implementing the `Clock` port: the real one, and a fake that tests advance by hand."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio


class SystemClock:
    """The process's monotonic clock, wall time in UTC, and anyio's sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def cancel_at(self, deadline: float) -> anyio.CancelScope:
        return anyio.CancelScope(deadline=anyio.current_time() + (deadline - time.monotonic()))


@dataclass(eq=False)
class _Sleeper:
    wake_at: float
    event: anyio.Event = field(default_factory=anyio.Event)
    on_wake: Callable[[], object] | None = None


class FakeClock:
    """Time that moves only when a test calls `advance()`; sleepers wake when their time comes.

    `wait_for_sleepers(n)` lets a test wait until the code under test is parked on the clock
    (e.g. the relay waiting for its deadline) before advancing, so no test has to guess with a
    real sleep.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._t = 0.0
        self._epoch = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[_Sleeper] = []
        self._changed: anyio.Event | None = None  # made on first wait (needs a running loop)

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self._t)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(self._t + seconds)
        self._sleepers.append(sleeper)
        self._notify()
        try:
            await sleeper.event.wait()
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
                self._notify()

    @contextmanager
    def cancel_at(self, deadline: float) -> Iterator[anyio.CancelScope]:
        """Cancelled when `advance()` reaches `deadline`; counted as a sleeper meanwhile."""
        with anyio.CancelScope() as scope:
            sleeper = _Sleeper(deadline, on_wake=scope.cancel)
            if deadline <= self._t:
                scope.cancel()
            else:
                self._sleepers.append(sleeper)
                self._notify()
            try:
                yield scope
            finally:
                if sleeper in self._sleepers:
                    self._sleepers.remove(sleeper)
                    self._notify()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self._t += seconds
        for sleeper in list(self._sleepers):
            if sleeper.wake_at <= self._t:
                self._sleepers.remove(sleeper)
                sleeper.event.set()
                if sleeper.on_wake is not None:
                    sleeper.on_wake()
        self._notify()

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    def next_wake(self) -> float | None:
        """Seconds until the earliest sleeper wakes, or None if nobody sleeps."""
        if not self._sleepers:
            return None
        return min(s.wake_at for s in self._sleepers) - self._t

    async def wait_for_sleepers(self, count: int = 1, within_s: float = 5.0) -> None:
        """Wait (real time, bounded) until at least `count` tasks sleep on this clock."""
        with anyio.fail_after(within_s):
            while len(self._sleepers) < count:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
