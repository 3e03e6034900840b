"""Staying useful while the platform is slow or down: circuit breaker, bounded retries.

The breaker is a small state machine of our own rather than `purgatory`: it is synchronous (the
relay asks "may I?" on the hot path without awaiting), takes an injected clock so tests drive it
deterministically, and reports every state change to listeners (metrics gauge, MCP
`tools/list_changed`, `/readyz`) — three things purgatory's storage-backed breaker does not do
without adapters.

    closed ──N failures within window──▶ open ──reset_timeout elapsed──▶ half_open
       ▲                                   ▲                               │
       └──────────── probe succeeds ───────┼──────── probe fails ──────────┘
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import stamina

T = TypeVar("T")


class BreakerState(enum.IntEnum):
    """Ordered so the metrics gauge reads 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


StateListener = Callable[[BreakerState, BreakerState], None]


@dataclass
class CircuitBreaker:
    """Opens after `failure_threshold` failures within `window_s`; probes after `reset_timeout_s`.

    In half-open state exactly one caller at a time is let through as the probe; its success
    closes the breaker, its failure opens it again for another `reset_timeout_s`.
    """

    failure_threshold: int = 5
    window_s: float = 30.0
    reset_timeout_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _state: BreakerState = BreakerState.CLOSED
    _failures: deque[float] = field(default_factory=deque)
    _opened_at: float = 0.0
    _probe_in_flight: bool = False
    _listeners: list[StateListener] = field(default_factory=list)
    last_error: str | None = None

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold: must be at least 1")
        if self.window_s <= 0 or self.reset_timeout_s <= 0:
            raise ValueError("window_s and reset_timeout_s: must be positive")

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._reset_due():
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def is_open(self) -> bool:
        """True while calls must not reach the platform (open, or half-open with a probe out)."""
        state = self.state
        return state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._probe_in_flight
        )

    def on_change(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def allow(self) -> bool:
        """May a call go to the platform now? In half-open state this claims the single probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._failures.clear()
        self.last_error = None
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self, error: str | None = None) -> None:
        now = self.clock()
        self.last_error = error
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._open(now)
            return
        if self._state is BreakerState.OPEN:
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.failure_threshold:
            self._open(now)

    def seconds_until_probe(self) -> float:
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self.clock())

    def _reset_due(self) -> bool:
        return self.clock() - self._opened_at >= self.reset_timeout_s

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new:
            for listener in list(self._listeners):
                listener(old, new)


async def retry_until(
    fn: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    retry_on: tuple[type[Exception], ...],
    clock: Callable[[], float] = time.monotonic,
    first_backoff_s: float = 0.05,
    max_backoff_s: float = 1.0,
    max_attempts: int = 5,
) -> T:
    """Call an idempotent `fn` until it succeeds: exponential backoff with jitter (stamina).

    Bounded by the caller's `deadline` (a `clock()` instant) as well as by `max_attempts`: the
    retries never outlive the voice call that is waiting for them. Only for idempotent calls
    (the relay's RPCs are).
    """
    remaining = deadline - clock()
    if remaining <= 0:
        return await fn()
    async for attempt in stamina.retry_context(
        on=retry_on,
        attempts=max_attempts,
        timeout=remaining,
        wait_initial=first_backoff_s,
        wait_max=min(max_backoff_s, remaining),
        wait_jitter=first_backoff_s,
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover
