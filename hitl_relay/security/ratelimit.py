"""Rate limits: per client address (before authentication), per API key, per phone call.

Built on the `limits` library (moving windows). Two storages behind one small interface:

- `MemoryRateLimiter`: this process's memory (limits' `MemoryStorage`); the default.
- `PostgresRateLimiter`: counters in the platform database through PostgREST
  (`public.hitl_rate_limit_hit`, a sliding-window counter, migration `*_hitl_rate_limits.sql`),
  so every replica draws on the same budget. If the database cannot be asked in time, the
  decision falls back to this process's memory limiter (limits still hold per replica; a voice
  call is never refused because the limiter's store is slow).

A refusal carries `retry_after_s`, which becomes the `Retry-After` header.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from loguru import logger

from hitl_relay.security.settings import parse_limits


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


class PostgresRateLimiter:
    """Sliding-window counters in the platform database, shared by every replica."""

    def __init__(
        self,
        supabase_url: str,
        service_role_key: str,
        *,
        timeout_s: float = 1.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = supabase_url.rstrip("/") + "/rest/v1/rpc/"
        self._headers = {
            "apikey": service_role_key,
            "Authorization": f"Bearer {service_role_key}",
            "Content-Type": "application/json",
        }
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._owns_client = client is None
        self._fallback = MemoryRateLimiter()

    async def _call(self, function: str, rule: Rule, identity: tuple[str, ...]) -> Decision | None:
        body = {
            "p_key": storage_key(rule, identity),
            "p_limits": [
                {"limit": item.amount, "window_seconds": item.get_expiry()} for item in rule.items
            ],
        }
        try:
            response = await self._client.post(
                self._url + function, json=body, headers=self._headers
            )
        except httpx.HTTPError as e:
            logger.warning(
                "rate-limit store unreachable ({}), deciding in memory", type(e).__name__
            )
            return None
        if response.status_code != 200:
            logger.warning("rate-limit store answered {}, deciding in memory", response.status_code)
            return None
        data: Any = response.json()
        if not isinstance(data, dict) or not isinstance(data.get("allowed"), bool):
            logger.warning("rate-limit store answered an unexpected body, deciding in memory")
            return None
        return Decision(bool(data["allowed"]), float(data.get("retry_after") or 0.0))

    async def hit(self, rule: Rule, *identity: str) -> Decision:
        if not rule.enabled:
            return ALLOWED
        decision = await self._call("hitl_rate_limit_hit", rule, identity)
        if decision is None:
            return await self._fallback.hit(rule, *identity)
        return decision

    async def peek(self, rule: Rule, *identity: str) -> Decision:
        if not rule.enabled:
            return ALLOWED
        decision = await self._call("hitl_rate_limit_peek", rule, identity)
        if decision is None:
            return await self._fallback.peek(rule, *identity)
        return decision

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
