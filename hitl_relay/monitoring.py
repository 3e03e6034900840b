"""What the alert rules need that no request measures: watched in the background while the
relay serves (`http_app`'s lifespan runs `Monitor.run`).

- `hitl_operators_online`: operators present on `operators` (the presence port), every
  `interval_s`; NaN while presence is unknown.
- `hitl_ready`: the readiness verdict (`ReadinessMonitor.check` sets it), every `interval_s`,
  so a replica that is not ready shows even when nothing polls `/readyz`.
- `hitl_expiry_last_run_timestamp_seconds`: when the expiry job last succeeded
  (`hitl_expiry_job`), every `expiry_interval_s`; NaN where it is not scheduled or unreadable.
- `hitl_event_loop_lag_seconds`: how late a `LAG_TICK_S` timer fires (the loop was blocked or
  paused: a long garbage collection, a CPU-starved process).

Each read is bounded by the platform timeout; a failure leaves its gauge at NaN (unknown), never
ends the monitor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio
from loguru import logger

from hitl_relay import metrics
from hitl_relay.errors import HitlError
from hitl_relay.ports import JobHealthSource, OperatorPresence

LAG_TICK_S = 0.5


class Monitor:
    def __init__(
        self,
        presence: OperatorPresence,
        check_ready: Callable[[], Awaitable[object]] | None,
        jobs: JobHealthSource | None,
        *,
        interval_s: float = 15.0,
        expiry_interval_s: float = 60.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.presence = presence
        self.check_ready = check_ready
        self.jobs = jobs
        self.interval_s = interval_s
        self.expiry_interval_s = expiry_interval_s
        self.timeout_s = timeout_s

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_lag)
            tg.start_soon(self._every, self.interval_s, self.sample)
            if self.jobs is not None:
                tg.start_soon(self._every, self.expiry_interval_s, self.sample_expiry)

    async def _every(self, interval_s: float, sample: Callable[[], Awaitable[None]]) -> None:
        while True:
            await sample()
            await anyio.sleep(interval_s)  # the sampling period

    async def sample(self) -> None:
        """Presence and readiness, once."""
        with anyio.move_on_after(self.timeout_s):
            online = await self.presence.operators_online()
            metrics.operators_online.set(math.nan if online is None else online)
        if self.check_ready is not None:
            with anyio.move_on_after(self.timeout_s):
                await self.check_ready()  # sets hitl_ready

    async def sample_expiry(self) -> None:
        """The expiry job's last succeeded run, once."""
        assert self.jobs is not None
        value = math.nan
        with anyio.move_on_after(self.timeout_s):
            try:
                job = await self.jobs.expiry_job()
            except HitlError as e:
                logger.bind(detail=str(e)).debug("reading the expiry job's health failed")
            else:
                if job.scheduled:
                    value = job.last_success.timestamp() if job.last_success else 0.0
        metrics.expiry_last_run.set(value)

    async def _watch_lag(self) -> None:
        while True:
            due = time.monotonic() + LAG_TICK_S
            await anyio.sleep(LAG_TICK_S)  # the timer whose lateness is measured
            metrics.event_loop_lag.observe(max(0.0, time.monotonic() - due))
