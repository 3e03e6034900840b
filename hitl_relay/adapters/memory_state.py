"""The memory twin's records and the rules of the SQL it mirrors that need no platform: input
checks as the SQL functions make them, and the success figures as `hitl_success_metrics`
computes them."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

import anyio

from hitl_relay.errors import InvalidRequest, PlatformUnavailable
from hitl_relay.models import ID_MAX, ID_RULE
from hitl_relay.ports import HumanMessage, SessionStatus, SuccessMetrics

DEFAULT_CASE_TTL_S = 3600
CLOSE_STATUSES = ("answered", "timed_out", "expired", "failed", "cancelled", "needs_info")


@dataclass
class MemCase:
    id: UUID
    question: str
    priority: int
    urgency: str
    status: str  # open | answered | expired | cancelled | closed
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    answer_message_id: UUID | None = None
    answered_at: datetime | None = None
    options: list[str] | None = None
    skills: tuple[str, ...] = ()
    escalated_for: list[str] = field(default_factory=list)
    escalated_at: datetime | None = None


# hil_settings.escalate_unclaimed_seconds's default, per priority (20261206800200).
ESCALATE_UNCLAIMED_S = {5: 5, 4: 8, 3: 10, 2: 10, 1: 10}


@dataclass
class MemNotification:
    id: int
    case_id: UUID
    reason: str
    payload: dict[str, Any]
    attempts: int = 0
    sent_at: datetime | None = None
    last_error: str | None = None


@dataclass
class MemSession:
    id: UUID
    case_id: UUID
    idempotency_key: str
    mcp_session_id: str
    retell_call_id: str
    status: SessionStatus
    expires_at: datetime
    created_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)
    follow_up: bool = False
    # The relay instance waiting on it (the `x-hitl-instance` header of the request that made
    # it wait), for session recovery after a restart.
    instance_id: str | None = None


@dataclass
class Faults:
    """Faults a test switches on; each applies to the calls made while it is on."""

    # Joins wait here until `release_joins()` (an answer can land before the join confirms).
    join_gate: anyio.Event | None = None
    refuse_joins: bool = False
    # Session closes wait here until it is set (the caller must not wait for a close).
    close_gate: anyio.Event | None = None
    # A new case is committed, then its reply waits here until it is set (a slow reply).
    open_reply_gate: anyio.Event | None = None
    # RPC name ("open_case", "reply", "close_session", "continue_case", "call_history") → how
    # many next calls fail.
    rpc_failures: dict[str, int] = field(default_factory=dict)
    rpc_down: bool = False
    # Realtime lost its database connection while the sockets stay joined: what is committed
    # meanwhile is never broadcast (Supabase's broadcast-from-database replication slot is
    # temporary), and no subscription is told.
    drop_broadcasts: bool = False

    def hold_joins(self) -> None:
        self.join_gate = anyio.Event()

    def release_joins(self) -> None:
        if self.join_gate is not None:
            self.join_gate.set()
            self.join_gate = None

    def fail_rpc(self, name: str, times: int = 1) -> None:
        self.rpc_failures[name] = self.rpc_failures.get(name, 0) + times


def as_postgres_would_store(params: Mapping[str, Any]) -> None:
    """Fail as the real platform does on what Postgres cannot hold: a non-finite number is not
    JSON (PostgREST refuses the body), U+0000 is not text (22P05). Both reach the relay as
    `PlatformUnavailable`, so input that slips past validation shows up in the breaker here
    as it would in production."""
    try:
        text = json.dumps(params, allow_nan=False)
    except ValueError:
        raise PlatformUnavailable("hitl_open_case: PGRST102 non-finite number in JSON") from None
    if "\\u0000" in text.replace("\\\\", ""):
        raise PlatformUnavailable(
            "hitl_open_case: 22P05 unsupported Unicode escape sequence (\\u0000)"
        )


def text_rule(value: object, name: str, limit: int, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidRequest(name, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(name, "must be a string")
    if required and not value.strip():
        raise InvalidRequest(name, "must not be empty")
    if len(value) > limit:
        raise InvalidRequest(name, f"must be at most {limit} characters")
    return value


def id_rule(value: object, name: str) -> str:
    """`hitl_id`: a required text of at most ID_MAX characters without control characters."""
    text = text_rule(value, name, ID_MAX, required=True)
    assert text is not None
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidRequest(name, ID_RULE)
    return text


def int_rule(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(name, f"must be an integer from {low} to {high}")
    return value


def success_figures(
    all_cases: Mapping[UUID, MemCase],
    sessions: Mapping[UUID, MemSession],
    messages: Sequence[HumanMessage],
    availability: Sequence[tuple[str, datetime, datetime]],
    start: datetime,
    end: datetime,
) -> SuccessMetrics:
    """`hitl_success_metrics`, as the SQL computes it (20261125000800, busy time: 002400,
    "cannot answer" apart: 20261206800000)."""
    cases = [c for c in all_cases.values() if start <= c.created_at < end]
    finished: list[tuple[MemCase, str, datetime]] = []
    for case in cases:
        mine = [s for s in sessions.values() if s.case_id == case.id]
        last = max(mine, key=lambda s: s.created_at) if mine else None
        if last is not None and last.status != "waiting":
            asked = min(s.created_at for s in mine)
            finished.append((case, last.status, asked))
    by_id = {m.message_id: m for m in messages}

    def outcome(case: MemCase, status: str) -> str:
        if status == "answered":
            answer = by_id.get(case.answer_message_id) if case.answer_message_id else None
            return "cannot_answer" if answer and answer.kind == "cannot_answer" else "answered"
        return "timed_out" if status in ("timed_out", "expired") else "other"

    outcomes = [(c, outcome(c, status), asked) for c, status, asked in finished]
    responses = [
        c.answered_at - asked
        for c, kind, asked in outcomes
        if kind == "answered" and c.answered_at is not None
    ]
    counts = {k: sum(1 for _, kind, _ in outcomes if kind == k) for k in _OUTCOMES}
    # Handling: case creation → its answer, per operator; busy time counts once.
    handling = [
        (m.sender_id, c.created_at, m.created_at)
        for c in all_cases.values()
        if c.answer_message_id is not None
        and (m := by_id[c.answer_message_id]).sender_id is not None
    ]
    busy = _merged(handling, start, end)
    available = _merged(list(availability), start, end)
    handled_us = sum(
        _us(min(h_end, a_end) - max(h_start, a_start))
        for operator, spans in busy.items()
        for h_start, h_end in spans
        for a_start, a_end in available.get(operator, ())
        if h_start < a_end and a_start < h_end
    )
    available_us = sum(_us(e - s) for spans in available.values() for s, e in spans)
    return SuccessMetrics(
        cases=len(cases),
        finished=len(finished),
        answered=counts["answered"],
        cannot_answer=counts["cannot_answer"],
        timed_out=counts["timed_out"],
        other=counts["other"],
        avg_response_s=(
            _round(Decimal(sum(_us(r) for r in responses)) / len(responses) / 10**6, 3)
            if responses
            else None
        ),
        success_rate=_rate(counts["answered"], len(finished)),
        cannot_answer_rate=_rate(counts["cannot_answer"], len(finished)),
        timeout_rate=_rate(counts["timed_out"], len(finished)),
        operator_utilisation=(
            _round(Decimal(handled_us) / available_us, 4) if available_us else None
        ),
        handled_s=_round(Decimal(handled_us) / 10**6, 3),
        available_s=_round(Decimal(available_us) / 10**6, 3),
    )


# The outcome of a finished case, as hitl_success_metrics tells them apart.
_OUTCOMES = ("answered", "cannot_answer", "timed_out", "other")


def _rate(count: int, finished: int) -> float | None:
    return _round(Decimal(count) / finished, 4) if finished else None


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _round(value: Decimal, places: int) -> float:
    """SQL's round(numeric, places): half away from zero."""
    return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _merged(
    rows: list[tuple[str, datetime, datetime]], start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per operator, intervals clipped to [start, end), overlapping ones merged."""
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for operator, s, e in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        if e <= start or s >= end:
            continue
        s, e = max(s, start), min(e, end)
        merged = spans.setdefault(operator, [])
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return spans
