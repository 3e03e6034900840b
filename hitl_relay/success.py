"""The integration plan's success figures on `/metrics`, refreshed in the background.

The figures (average response, success rate, timeout rate, operator utilisation) are computed
by the database (`hitl_success_metrics`) over a rolling window. Computing them is a query over
cases, sessions, messages and operator activity, too heavy for a scrape, so the relay reads
them here at most every `interval_s` and publishes them as gauges; a scrape only reads the
gauges. A failed read leaves the last values in place and logs one warning until a read
succeeds again.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import anyio
from loguru import logger

from hitl_relay import metrics
from hitl_relay.errors import InvalidRequest, PlatformUnavailable
from hitl_relay.ports import Clock, SuccessMetrics, SuccessMetricsSource


def publish(figures: SuccessMetrics) -> None:
    """Set the success gauges from one read (NaN where the window has no data for a figure)."""
    for gauge, value in (
        (metrics.response_seconds_avg, figures.avg_response_s),
        (metrics.success_rate, figures.success_rate),
        (metrics.cannot_answer_rate, figures.cannot_answer_rate),
        (metrics.timeout_rate, figures.timeout_rate),
        (metrics.operator_utilisation, figures.operator_utilisation),
    ):
        gauge.set(math.nan if value is None else value)
    for state, count in (
        ("all", figures.cases),
        ("finished", figures.finished),
        ("answered", figures.answered),
        ("cannot_answer", figures.cannot_answer),
        ("timed_out", figures.timed_out),
        ("other", figures.other),
    ):
        metrics.success_window_cases.labels(state=state).set(count)
    metrics.success_refreshed.set(time.time())


class SuccessRefresher:
    """Reads the success figures over the last `window_s` every `interval_s`, into the gauges."""

    def __init__(
        self,
        source: SuccessMetricsSource,
        clock: Clock,
        *,
        window_s: float,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._source = source
        self._clock = clock
        self._window = timedelta(seconds=window_s)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failing = False
        self.last: SuccessMetrics | None = None

    async def refresh(self) -> SuccessMetrics | None:
        """One read; the figures published, or None when the read failed (gauges untouched)."""
        end = self._clock.now()
        try:
            with anyio.fail_after(self._timeout_s):
                figures = await self._source.success_metrics(end - self._window, end)
        except (PlatformUnavailable, InvalidRequest, TimeoutError) as e:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "success figures not refreshed, keeping the last values: {}",
                    str(e) or "no reply in time",
                )
            return None
        if self._failing:
            self._failing = False
            logger.info("success figures refreshed again")
        publish(figures)
        self.last = figures
        return figures

    async def run(self) -> None:
        """Refresh now and then every `interval_s`, until cancelled (the app's task group)."""
        while True:
            await self.refresh()
            await self._clock.sleep(self._interval_s)
