"""Supabase Realtime's limits and its rate counter.

Defaults: supabase/realtime `config/runtime.exs` and docs `guides/realtime/limits.mdx` (see
/work/shared/notes/supabase-protocol.md §7). Joins and events per second are counted per
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
from dataclasses import dataclass, fields


@dataclass
class RealtimeLimits:
    """Each field can be set with HITL_REALTIME_<FIELD> (e.g. HITL_REALTIME_MAX_JOINS_PER_SECOND=100
    for the Free tier). Joins and messages per second default to the Pro (no spend cap) / Team
    tier, so a burst of 1,000 calls behaves as on a production project. The backoffs are
    Supabase's (`CHANNEL_ERROR_BACKOFF_MS`, `CONNECT_ERROR_BACKOFF_MS`); tests set them small."""

    max_channels_per_client: int = 100
    max_joins_per_second: int = 2500
    max_events_per_second: int = 2500
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RealtimeLimits:
        env = os.environ if environ is None else environ
        limits = cls()
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
