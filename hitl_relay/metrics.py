"""Prometheus metrics: what the relay counts and times, served at `/metrics`.

Names and labels are a contract with the Grafana dashboard in `deploy/grafana/`: change them
only together. All metrics live in one registry (`REGISTRY`), so tests and `/metrics` see
exactly the relay's own series (plus process metrics).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

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
for _status in ("expired", "cancelled"):
    recovered_sessions.labels(status=_status)


def exposition() -> bytes:
    """The registry in Prometheus' text format, for `/metrics`."""
    return generate_latest(REGISTRY)


__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "auth_failures",
    "breaker_state",
    "case_creation_seconds",
    "delivery_seconds",
    "exposition",
    "fallbacks",
    "invocations",
    "rate_limited",
    "realtime_channels",
    "realtime_sockets",
    "recovered_sessions",
    "wait_seconds",
    "waiting_calls",
]
