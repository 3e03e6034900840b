"""The rate limiter's memory storage sweeps expired keys once a second, not every 10 ms, and its
moving windows stay exact without the sweep (hitl_relay/security/ratelimit.py)."""

from __future__ import annotations

import time

import pytest
from limits import RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter

from hitl_relay.security.ratelimit import SweptMemoryStorage


def test_the_sweep_runs_once_a_second_on_a_daemon_thread() -> None:
    storage = SweptMemoryStorage()
    storage.timer.join()  # the base class's first sweep, started by its constructor
    MovingWindowRateLimiter(storage).hit(RateLimitItemPerSecond(5), "key")
    assert storage.timer.interval == SweptMemoryStorage.SWEEP_EVERY_S == 1.0
    assert storage.timer.daemon  # never keeps a stopping process alive
    storage.timer.cancel()


def test_windows_are_exact_without_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    storage = SweptMemoryStorage()
    storage.timer.cancel()
    limiter = MovingWindowRateLimiter(storage)
    one_a_second = RateLimitItemPerSecond(1, 1)
    assert limiter.hit(one_a_second, "call-1")
    storage.timer.cancel()  # no sweep at all from here: only the entries' times decide
    now[0] += 0.5
    assert not limiter.hit(one_a_second, "call-1")  # within the window: refused
    assert limiter.hit(one_a_second, "call-2")  # another key: its own window
    now[0] += 0.6
    assert limiter.hit(one_a_second, "call-1")  # the window has passed, unswept
    storage.timer.cancel()
