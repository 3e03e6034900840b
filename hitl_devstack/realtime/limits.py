"""Supabase Realtime's limits and its rate counter.

Defaults: supabase/realtime `config/runtime.exs` and docs `guides/realtime/limits.mdx` (see
/work/shared/notes/supabase-protocol.md §7). `HITL_DEVSTACK_LIMITS=free|pro|local` picks a
profile: `free` and `pro` are the hosted plans' numbers from supabase/supabase
`apps/docs/content/guides/realtime/limits.mdx` ("Limits by plan"); `local` (the default) is the
Pro-without-spend-cap / Team numbers, so a burst of 1,000 calls behaves as on a production
project. Joins and events per second are counted per
project like Realtime's `Realtime.RateCounter` (`lib/realtime/rate_counter/rate_counter.ex`):
events are summed per tick (5 s), the limit applies to the average rate over the last 12 ticks
(one minute), re-evaluated at each tick, so a short burst above the limit is let through and a
sustained one is refused.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

PROFILE_ENV = "HITL_DEVSTACK_LIMITS"


@dataclass
class RealtimeLimits:
    """Each field can be set with HITL_REALTIME_<FIELD> (e.g. HITL_REALTIME_MAX_JOINS_PER_SECOND=100
    for the Free tier). Joins and messages per second default to the Pro (no spend cap) / Team
    tier, so a burst of 1,000 calls behaves as on a production project. The backoffs are
    Supabase's (`CHANNEL_ERROR_BACKOFF_MS`, `CONNECT_ERROR_BACKOFF_MS`); tests set them small."""

    max_channels_per_client: int = 100
    max_joins_per_second: int = 2500
    max_events_per_second: int = 2500
    # realtime_channel.ex limit_max_users/2: sockets with at least one joined channel
    max_concurrent_users: int = 10_000
    # presence_handler.ex limit_presence_event/1 (Tenants.presence_events_per_second_rate)
    max_presence_events_per_second: int = 1000
    # Tenants.validate_payload_size: max_payload_size_in_kb * 1000 + 500 bytes of padding
    max_payload_bytes: int = 3_000 * 1000 + 500
    presence_max_calls: int = 5
    presence_window_s: float = 30.0
    idle_timeout_s: float = 60.0
    channel_error_backoff_s: float = 5.0
    connect_error_backoff_s: float = 2.0
    rate_tick_s: float = 5.0
    rate_buckets: int = 12
    max_frame_bytes: int = 5_000_000  # endpoint.ex websocket max_frame_size
    # postgres_changes: realtime_channel.ex postgres_subscribe/2 waits a random 1-3 s before
    # subscribing (5-10 s before a retry); the poller polls every 100 ms (db_settings.ex)
    postgres_subscribe_min_s: float = 1.0
    postgres_subscribe_max_s: float = 3.0
    postgres_poll_interval_s: float = 0.1

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> RealtimeLimits:
        """The limits of a hosted plan (`free`, `pro`) or of the local default (`local`)."""
        try:
            base = PROFILES[name]
        except KeyError:
            raise ValueError(
                f"{PROFILE_ENV}: must be one of {', '.join(PROFILES)}, got {name!r}"
            ) from None
        return replace(base, **overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RealtimeLimits:
        """The profile named by HITL_DEVSTACK_LIMITS (default `local`), then each
        HITL_REALTIME_<FIELD> on top of it."""
        env = os.environ if environ is None else environ
        limits = cls.profile(env.get(PROFILE_ENV, "local").strip().lower() or "local")
        for f in fields(cls):
            name = f"HITL_REALTIME_{f.name.upper()}"
            raw = env.get(name)
            if raw is None:
                continue
            kind = type(getattr(limits, f.name))
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name}: must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{name}: must be greater than 0, got {raw!r}")
            setattr(limits, f.name, value)
        return limits


# supabase/supabase apps/docs/content/guides/realtime/limits.mdx, "Limits by plan": concurrent
# connections, messages per second, channel joins per second, channels per connection, presence
# messages per second, broadcast payload size (KB; Tenants.validate_payload_size adds 500 bytes).
PROFILES: dict[str, RealtimeLimits] = {
    "free": RealtimeLimits(
        max_concurrent_users=200,
        max_events_per_second=100,
        max_joins_per_second=100,
        max_channels_per_client=100,
        max_presence_events_per_second=20,
        max_payload_bytes=256 * 1000 + 500,
    ),
    "pro": RealtimeLimits(
        max_concurrent_users=500,
        max_events_per_second=500,
        max_joins_per_second=500,
        max_channels_per_client=100,
        max_presence_events_per_second=50,
        max_payload_bytes=3_000 * 1000 + 500,
    ),
    "local": RealtimeLimits(),
}


class RateCounter:
    """Count events; `triggered` once the average rate over the last `buckets` ticks reaches
    `limit` per second, cleared when it falls below (RateCounter.maybe_trigger_limit)."""

    def __init__(
        self,
        limit: float,
        tick_s: float,
        buckets: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.tick_s = tick_s
        self._clock = clock
        self._count = 0
        self._buckets: deque[int] = deque(maxlen=max(1, buckets))
        self._tick_end = clock() + tick_s
        self.avg = 0.0
        self._triggered = False

    def _roll(self) -> None:
        now = self._clock()
        if now < self._tick_end:
            return
        ticks = int((now - self._tick_end) // self.tick_s) + 1
        self._buckets.appendleft(self._count)
        for _ in range(min(ticks - 1, self._buckets.maxlen or 1)):
            self._buckets.appendleft(0)  # ticks that passed without a single event
        self._count = 0
        self._tick_end += ticks * self.tick_s
        self.avg = sum(self._buckets) / len(self._buckets) / self.tick_s
        self._triggered = self.avg >= self.limit  # on at >= limit, off again below it

    @property
    def triggered(self) -> bool:
        self._roll()
        return self._triggered

    def current_avg(self) -> float:
        self._roll()
        return self.avg

    def add(self, n: int = 1) -> None:
        self._roll()
        self._count += n
