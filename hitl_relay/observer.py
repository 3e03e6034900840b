"""The observer port: what the relay core reports about its calls (metrics and the per-call log
line). `LogObserver` writes the log line; the edge's `metrics.MetricsObserver` adds Prometheus."""

from __future__ import annotations

from typing import Protocol

from loguru import logger

from hitl_relay.calls import CallRecord


class Observer(Protocol):
    def call_started(self) -> None:
        """An `ask_human` call came in (it waits until `call_ended`)."""
        ...

    def case_created(self, seconds: float) -> None:
        """The call's case was committed `seconds` after the call came in."""
        ...

    def answer_delivered(self, seconds: float) -> None:
        """A live answer reached the relay `seconds` after the database committed it."""
        ...

    def call_ended(self, call: CallRecord, outcome: str, waited_s: float) -> None:
        """The call returned (or failed) with `outcome` after `waited_s`."""
        ...


class LogObserver:
    """One structured log line per call; counts nothing."""

    def call_started(self) -> None:
        return None

    def case_created(self, seconds: float) -> None:
        return None

    def answer_delivered(self, seconds: float) -> None:
        return None

    def call_ended(self, call: CallRecord, outcome: str, waited_s: float) -> None:
        logger.bind(
            call_id=call.call_id,
            case_id=str(call.case_id) if call.case_id else None,
            outcome=outcome,
            waited_ms=round(waited_s * 1000),
            create_ms=call.create_ms,
            delivery_ms=call.delivery_ms,
            deadline_s=call.deadline_s,
            priority=call.priority,
            urgency=call.urgency,
            follow_up=call.follow_up_of is not None,
        ).info("ask_human {}", outcome)
