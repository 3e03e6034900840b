"""Rate limits: per client address (before authentication), per API key, per phone call.

Built on the `limits` library (moving windows). Two storages behind one small interface:

- `MemoryRateLimiter`: this process's memory (limits' `MemoryStorage`); the default.
- `SharedRateLimiter`: counters in the platform through the backend's `RateLimitStore` port
  (a sliding-window counter), so every replica draws on the same budget. If the platform
  cannot be asked in time, the decision falls back to this process's memory limiter (limits
  still hold per replica; a voice call is never refused because the limiter's store is slow).

A refusal carries `retry_after_s`, which becomes the `Retry-After` header.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from loguru import logger

from hitl_relay.errors import HitlError
from hitl_relay.security.settings import SecuritySettings, parse_limits
from hitl_relay.service_ports import RateLimitStore, WindowLimit


@dataclass(frozen=True, slots=True)
class Rule:
    """A named budget: every item must allow a hit (e.g. 300/second and 10000/minute)."""

    name: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, text: str) -> Rule:
        return cls(name, tuple(parse_limits(text)))

    @property
    def enabled(self) -> bool:
        return bool(self.items)


# Retell signatures are valid 5 minutes either side of now: remember each for both halves.
REPLAY_WINDOW_S = 600


@dataclass(frozen=True, slots=True)
class Rules:
    per_ip: Rule
    auth_failures: Rule
    per_key: Rule
    per_call: Rule
    replay: Rule

    @classmethod
    def from_settings(cls, settings: SecuritySettings) -> Rules:
        return cls(
            per_ip=Rule.parse("ip", settings.rate_limit_per_ip),
            auth_failures=Rule.parse("authfail", settings.rate_limit_auth_failures_per_ip),
            per_key=Rule.parse("key", settings.rate_limit_per_key),
            per_call=Rule.parse("call", settings.rate_limit_per_call),
            replay=Rule("replay", (RateLimitItemPerSecond(1, REPLAY_WINDOW_S),)),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (RFC 9110 delay-seconds)."""
        return str(max(1, math.ceil(self.retry_after_s)))


ALLOWED = Decision(True)


class RateLimiter(Protocol):
    async def hit(self, rule: Rule, *identity: str) -> Decision:
        """Count one request against `rule` for `identity`; refused requests are not counted."""
        ...

    async def peek(self, rule: Rule, *identity: str) -> Decision:
        """Would a hit be allowed now? (Counts nothing.)"""
        ...

    async def aclose(self) -> None: ...


class SweptMemoryStorage(MemoryStorage):
    """limits' MemoryStorage with its expiry sweep once a second instead of every 10 ms.

    The sweep is a thread that walks every key each time it runs. The relay holds keys per call
    (the replay rule's, per call id), so with thousands of calls waiting the 10 ms sweep took
    about 15 % of the relay's CPU in a profile of the 10,000-call benchmark, holding the GIL
    against the event loop. The counts do not depend on it (a moving window compares each
    entry's time when it is read); the sweep only frees expired keys, now up to a second later.
    """

    SWEEP_EVERY_S = 1.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        # the base class's private `__schedule_expiry`, with another period
        if not self.timer.is_alive():
            sweep = getattr(self, "_MemoryStorage__expire_events")  # noqa: B009 - private name
            self.timer = threading.Timer(self.SWEEP_EVERY_S, sweep)
            self.timer.daemon = True
            self.timer.start()


class MemoryRateLimiter:
    """Moving windows in this process's memory."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(SweptMemoryStorage())

    def _refusal(self, rule: Rule, identity: tuple[str, ...]) -> Decision | None:
        wait = 0.0
        for item in rule.items:
            if not self._limiter.test(item, rule.name, *identity):
                stats = self._limiter.get_window_stats(item, rule.name, *identity)
                wait = max(wait, stats.reset_time - time.time(), 0.001)
        return Decision(False, wait) if wait > 0 else None

    async def hit(self, rule: Rule, *identity: str) -> Decision:
        refusal = self._refusal(rule, identity)
        if refusal is not None:
            return refusal
        for item in rule.items:
            self._limiter.hit(item, rule.name, *identity)
        return ALLOWED

    async def peek(self, rule: Rule, *identity: str) -> Decision:
        return self._refusal(rule, identity) or ALLOWED

    async def aclose(self) -> None:
        return None


def storage_key(rule: Rule, identity: Sequence[str]) -> str:
    """The database key: the rule's name and a hash of the identity (no addresses or call ids
    stored in clear)."""
    digest = hashlib.sha256("\x1f".join(identity).encode()).hexdigest()[:40]
    return f"{rule.name}:{digest}"


class SharedRateLimiter:
    """Sliding-window counters in the platform (the backend's `RateLimitStore` port), shared by
    every replica. Decides in this process's memory while no store is attached (before the
    backend connects) and whenever the store does not answer within `timeout_s`."""

    def __init__(self, store: RateLimitStore | None = None, *, timeout_s: float = 1.0) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self._fallback = MemoryRateLimiter()

    async def _ask(self, rule: Rule, identity: tuple[str, ...], *, hit: bool) -> Decision | None:
        if self.store is None:
            return None
        limits = [WindowLimit(item.amount, item.get_expiry()) for item in rule.items]
        try:
            with anyio.fail_after(self.timeout_s):
                verdict = await self.store.rate_limit(storage_key(rule, identity), limits, hit=hit)
        except (HitlError, TimeoutError) as e:
            logger.warning("rate-limit store unavailable ({}), deciding in memory", e)
            return None
        return Decision(verdict.allowed, verdict.retry_after_s)

    async def hit(self, rule: Rule, *identity: str) -> Decision:
        if not rule.enabled:
            return ALLOWED
        decision = await self._ask(rule, identity, hit=True)
        if decision is None:
            return await self._fallback.hit(rule, *identity)
        return decision

    async def peek(self, rule: Rule, *identity: str) -> Decision:
        if not rule.enabled:
            return ALLOWED
        decision = await self._ask(rule, identity, hit=False)
        if decision is None:
            return await self._fallback.peek(rule, *identity)
        return decision

    async def aclose(self) -> None:
        self.store = None
