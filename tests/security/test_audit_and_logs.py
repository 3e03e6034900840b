"""The audit sinks (bounded, throttled, never blocking) and log redaction (HITL_REDACT_LOGS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

from hitl_relay.security import (
    AuditEvent,
    LogAuditSink,
    MemoryAuditSink,
    PlatformAuditSink,
    ThrottledAuditSink,
)
from hitl_relay.security.audit import install_log_redaction, redacted


def event(actor: str = "ip:198.51.100.7", action: str = "auth_failed") -> AuditEvent:
    return AuditEvent(actor=actor, action=action, outcome="refused", detail={"path": "/mcp"})


def test_a_flood_from_one_actor_is_recorded_as_a_few_rows_and_a_count() -> None:
    now = [0.0]
    inner = MemoryAuditSink()
    sink = ThrottledAuditSink(inner, per_minute=3, clock=lambda: now[0])
    for _ in range(100):
        sink.record(event())
    sink.record(event(actor="ip:203.0.113.1"))
    assert len(inner.events) == 4
    now[0] = 61.0
    sink.record(event())
    assert inner.events[-1].detail == {"path": "/mcp", "suppressed": 97}


def test_the_platform_sink_queue_is_bounded_and_counts_what_it_drops() -> None:
    sink = PlatformAuditSink(max_queue=2)
    for _ in range(5):
        sink.record(event())
    assert sink.dropped == 3


@pytest.fixture
def captured() -> Iterator[list[dict[str, object]]]:
    records: list[dict[str, object]] = []
    sink_id = logger.add(lambda m: records.append(dict(m.record["extra"])), level="INFO")
    try:
        yield records
    finally:
        logger.remove(sink_id)
        install_log_redaction(True)


def test_redaction_keeps_question_text_out_of_plain_logs(
    captured: list[dict[str, object]],
) -> None:
    install_log_redaction(True)
    logger.bind(question="Is my divorce final?", call_id="call-1").info("asked")
    install_log_redaction(False)
    logger.bind(question="Is my divorce final?", call_id="call-1").info("asked")
    assert captured[0] == {"question": "<redacted: 20 chars>", "call_id": "call-1"}
    assert captured[1] == {"question": "Is my divorce final?", "call_id": "call-1"}
    assert redacted("secret text") == "<redacted: 11 chars>"
    assert redacted("secret text", enabled=False) == "secret text"


def test_the_log_sink_writes_one_structured_line_per_event(
    captured: list[dict[str, object]],
) -> None:
    LogAuditSink().record(event())
    assert captured[-1]["audit"] is True
    assert captured[-1]["action"] == "auth_failed"
    assert captured[-1]["actor"] == "ip:198.51.100.7"
