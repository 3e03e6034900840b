"""Prometheus metrics: what the relay counts and times, served at `/metrics`.

Names and labels are a contract with the Grafana dashboard in `deploy/grafana/`: change them
only together. All metrics live in one registry (`REGISTRY`), so tests and `/metrics` see
exactly the relay's own series (plus process metrics).
"""

from __future__ import annotations

import weakref

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from hitl_relay import gc_tuning
from hitl_relay.calls import CallRecord
from hitl_relay.observer import LogObserver
from hitl_relay.ports import RealtimeCounts

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
gc_pauses = gc_tuning.install(REGISTRY)  # hitl_gc_pause_seconds{generation}

SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip

# outcome: answered | timeout | no_operator | platform_unreachable | unclear_answer | invalid |
# cancelled | needs_info (the operator asked back; the follow-up call counts on its own)
OUTCOMES = (
    "answered",
    "needs_info",
    "timeout",
    "no_operator",
    "platform_unreachable",
    "unclear_answer",
    "invalid",
    "cancelled",
)
FALLBACK_KINDS = ("timeout", "no_operator", "platform_unreachable", "unclear_answer")

invocations = Counter(
    "hitl_invocations", "ask_human calls by outcome.", ["outcome"], registry=REGISTRY
)
fallbacks = Counter(
    "hitl_fallbacks", "Fallback lines returned instead of an answer, by kind.", ["kind"],
    registry=REGISTRY,
)  # fmt: skip
wait_seconds = Histogram(
    "hitl_wait_seconds",
    "Tool call received to returned, by outcome.",
    ["outcome"],
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
delivery_seconds = Histogram(
    "hitl_delivery_seconds",
    "Answer message created (in the database) to the relay having it.",
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
case_creation_seconds = Histogram(
    "hitl_case_creation_seconds",
    "Tool call received to hitl_open_case done.",
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
waiting_calls = Gauge("hitl_waiting_calls", "Calls waiting for an answer now.", registry=REGISTRY)
realtime_sockets = Gauge(
    "hitl_realtime_sockets", "Open Realtime sockets (set by the adapter).", registry=REGISTRY
)
realtime_channels = Gauge(
    "hitl_realtime_channels", "Joined Realtime channels (set by the adapter).", registry=REGISTRY
)
breaker_state = Gauge(
    "hitl_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", registry=REGISTRY
)
auth_failures = Counter(
    "hitl_auth_failures", "Requests refused for missing or wrong credentials.", registry=REGISTRY
)
rate_limited = Counter("hitl_rate_limited", "Requests refused by a rate limit.", registry=REGISTRY)

# The integration plan's success figures over a rolling window, read from the database
# (`hitl_success_metrics`) by `hitl_relay.success` in the background, never on a scrape.
# NaN until the first read, and while the window has nothing to compute a figure from.
# `hitl_target{figure}` holds each figure's target, for the dashboards' threshold lines.
TARGETS = {
    "response_seconds_avg": 30.0,  # below
    "success_rate": 0.95,  # above
    "timeout_rate": 0.05,  # below
    "operator_utilisation": 0.70,  # above
}
response_seconds_avg = Gauge(
    "hitl_response_seconds_avg",
    "Average case asked → answered (s) over the success window; target < 30.",
    registry=REGISTRY,
)
success_rate = Gauge(
    "hitl_success_rate",
    'Finished cases answered (a real answer, not "cannot answer") / finished, over the success '
    "window; target > 0.95.",
    registry=REGISTRY,
)
cannot_answer_rate = Gauge(
    "hitl_cannot_answer_rate",
    'Finished cases closed by an operator\'s "cannot answer" / finished, over the success window.',
    registry=REGISTRY,
)
timeout_rate = Gauge(
    "hitl_timeout_rate",
    "Finished cases timed out or expired / finished, over the success window; target < 0.05.",
    registry=REGISTRY,
)
operator_utilisation = Gauge(
    "hitl_operator_utilisation",
    "Operator time handling cases / time available, over the success window; target > 0.70.",
    registry=REGISTRY,
)
target = Gauge(
    "hitl_target", "The plan's target for each success figure.", ["figure"], registry=REGISTRY
)
success_window_cases = Gauge(
    "hitl_success_window_cases",
    "Relay cases in the success window: all, finished, and the finished by outcome (answered, "
    "cannot_answer, timed_out, other: they add up to finished).",
    ["state"],
    registry=REGISTRY,
)
success_refreshed = Gauge(
    "hitl_success_refreshed_timestamp_seconds",
    "When the success figures were last read from the database (Unix time; 0: never).",
    registry=REGISTRY,
)
# Watched in the background by `hitl_relay.monitoring` (the alert rules in deploy/prometheus/
# use them): NaN means unknown (not read yet, or it could not be read).
operators_online = Gauge(
    "hitl_operators_online",
    "Operators present on the operators channel (NaN: presence unknown).",
    registry=REGISTRY,
)
ready = Gauge(
    "hitl_ready", "1 when /readyz would answer ready, 0 when not (NaN: not checked yet).",
    registry=REGISTRY,
)  # fmt: skip
expiry_last_run = Gauge(
    "hitl_expiry_last_run_timestamp_seconds",
    "When the expiry job (pg_cron hitl-expire-sessions) last succeeded (Unix time; 0: never; "
    "NaN: unknown or not scheduled in the relay's database).",
    registry=REGISTRY,
)
event_loop_lag = Histogram(
    "hitl_event_loop_lag_seconds",
    "How late a 0.5 s timer fired: the event loop was busy or paused (a full GC, CPU starvation).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
recovered_sessions = Counter(
    "hitl_recovered_sessions",
    "Sessions a restarted relay closed (its calls died with the old process), by status.",
    ["status"],
    registry=REGISTRY,
)

# Every labelled series exists from the start, so dashboards show zeros instead of gaps.
for _outcome in OUTCOMES:
    invocations.labels(outcome=_outcome)
    wait_seconds.labels(outcome=_outcome)
for _kind in FALLBACK_KINDS:
    fallbacks.labels(kind=_kind)
for _figure, _target in TARGETS.items():
    target.labels(figure=_figure).set(_target)
for _gauge in (
    response_seconds_avg,
    success_rate,
    cannot_answer_rate,
    timeout_rate,
    operator_utilisation,
    operators_online,
    ready,
    expiry_last_run,
):
    _gauge.set(float("nan"))
for _state in ("all", "finished", "answered", "cannot_answer", "timed_out", "other"):
    success_window_cases.labels(state=_state)
for _status in ("expired", "cancelled"):
    recovered_sessions.labels(status=_status)


def track_realtime(source: RealtimeCounts) -> None:
    """The Realtime gauges follow `source` (the newest one), read at each scrape."""
    ref = weakref.ref(source)

    def count(index: int) -> float:
        found = ref()
        return float(found.realtime_counts()[index]) if found is not None else 0.0

    realtime_sockets.set_function(lambda: count(0))
    realtime_channels.set_function(lambda: count(1))


class MetricsObserver(LogObserver):
    """The core's observer at the edge: the per-call log line plus the call metrics."""

    def call_started(self) -> None:
        waiting_calls.inc()

    def case_created(self, seconds: float) -> None:
        case_creation_seconds.observe(seconds)

    def answer_delivered(self, seconds: float) -> None:
        delivery_seconds.observe(seconds)

    def call_ended(self, call: CallRecord, outcome: str, waited_s: float) -> None:
        waiting_calls.dec()
        if outcome in OUTCOMES:
            invocations.labels(outcome=outcome).inc()
            wait_seconds.labels(outcome=outcome).observe(waited_s)
        if outcome in FALLBACK_KINDS:
            fallbacks.labels(kind=outcome).inc()
        super().call_ended(call, outcome, waited_s)


def exposition() -> bytes:
    """The registry in Prometheus' text format, for `/metrics`."""
    return generate_latest(REGISTRY)


__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "TARGETS",
    "MetricsObserver",
    "auth_failures",
    "breaker_state",
    "cannot_answer_rate",
    "case_creation_seconds",
    "delivery_seconds",
    "event_loop_lag",
    "expiry_last_run",
    "exposition",
    "fallbacks",
    "gc_pauses",
    "invocations",
    "operator_utilisation",
    "operators_online",
    "rate_limited",
    "ready",
    "realtime_channels",
    "realtime_sockets",
    "recovered_sessions",
    "response_seconds_avg",
    "success_rate",
    "success_refreshed",
    "success_window_cases",
    "target",
    "timeout_rate",
    "track_realtime",
    "wait_seconds",
    "waiting_calls",
]
