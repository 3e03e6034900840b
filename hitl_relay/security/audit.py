"""The audit trail of the HTTP edge: auth failures, rate-limit refusals, webhook events.

`AuditSink.record()` never blocks and never raises, so auditing cannot slow or break a request.
Sinks:

- `PlatformAuditSink`: rows in the platform's audit trail (actor, action, case_id, session_id,
  outcome, detail; the time is the platform's), inserted in batches through the backend's
  `AuditStore` port by a writer task the app's lifespan owns (`running(store)`). A full queue
  drops events and counts them, it never grows without bound.
- `LogAuditSink`: one structured log line per event (`audit=True`).
- `MemoryAuditSink`: a list, for tests.

`ThrottledAuditSink` wraps any of them so a flood (thousands of bad keys from one address) is
recorded as a few rows plus a count, not thousands of inserts. Invocations and case state
changes are audited by the database functions themselves (`hitl_open_case`, ...).

Log redaction (`HITL_REDACT_LOGS`, default on): `install_log_redaction()` scrubs question,
context and answer text from every log record's extra fields; `redacted()` is for messages.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from loguru import logger

from hitl_relay.errors import HitlError
from hitl_relay.service_ports import AuditStore

# Extra fields never written to plain logs in clear when redaction is on.
SENSITIVE_FIELDS = frozenset(
    {"question", "context", "answer", "content", "conversation_history", "caller_info"}
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit row: who did what, to which case, with what outcome."""

    actor: str
    action: str
    outcome: str
    case_id: str | None = None
    session_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "action": self.action,
            "outcome": self.outcome,
            "case_id": self.case_id,
            "session_id": self.session_id,
            "detail": dict(self.detail),
        }


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Queue `event`; never blocks, never raises."""
        ...


class NullAuditSink:
    def record(self, event: AuditEvent) -> None:
        return None


class LogAuditSink:
    def record(self, event: AuditEvent) -> None:
        logger.bind(audit=True, **event.row()).info(
            "audit {} {} {}", event.action, event.outcome, event.actor
        )


@dataclass
class MemoryAuditSink:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def actions(self) -> list[tuple[str, str]]:
        return [(e.action, e.outcome) for e in self.events]


class ThrottledAuditSink:
    """At most `per_minute` events per (action, actor) reach `inner`; the rest are counted and
    reported in the next event that passes (`detail.suppressed`)."""

    def __init__(
        self,
        inner: AuditSink,
        per_minute: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.per_minute = per_minute
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[float, int, int]] = {}

    def record(self, event: AuditEvent) -> None:
        now = self._clock()
        key = (event.action, event.actor)
        start, passed, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= 60:
            start, passed = now, 0
        if passed >= self.per_minute:
            self._windows[key] = (start, passed, suppressed + 1)
            return
        if suppressed:
            event = AuditEvent(
                event.actor,
                event.action,
                event.outcome,
                event.case_id,
                event.session_id,
                {**event.detail, "suppressed": suppressed},
            )
        self._windows[key] = (start, passed + 1, 0)
        if len(self._windows) > 10_000:  # forget the oldest actors first
            for stale in list(self._windows)[:1000]:
                del self._windows[stale]
        self.inner.record(event)


class PlatformAuditSink:
    """Batched rows in the platform's audit trail (`AuditStore`, the backend's `audit` port),
    written by a writer task the app's lifespan owns (`running(store)`)."""

    def __init__(self, *, max_queue: int = 10_000, batch: int = 200) -> None:
        self._queue: deque[dict[str, Any]] = deque()
        self._max_queue = max_queue
        self._batch = batch
        self._wake = anyio.Event()
        self.dropped = 0
        self.written = 0

    def record(self, event: AuditEvent) -> None:
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append(event.row())
        self._wake.set()

    async def flush(self, store: AuditStore) -> None:
        """Write everything queued now (in batches); a failed batch is logged and dropped."""
        while self._queue:
            rows = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                await store.insert_audit(rows)
            except HitlError as e:
                self.dropped += len(rows)
                logger.warning("audit: {} rows not written: {}", len(rows), e)
            else:
                self.written += len(rows)

    @asynccontextmanager
    async def running(self, store: AuditStore) -> AsyncIterator[None]:
        """The writer task, for the app's lifetime; what is queued at exit is flushed."""
        async with anyio.create_task_group() as tg:

            async def writer() -> None:
                while True:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    await self.flush(store)

            tg.start_soon(writer)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        with anyio.move_on_after(5, shield=True):
            await self.flush(store)


def redacted(text: str | None, enabled: bool = True) -> str:
    """`text`, or `<redacted: N chars>` when redaction is on."""
    if text is None:
        return ""
    return f"<redacted: {len(text)} chars>" if enabled else text


def _scrub(record: Any) -> None:
    extra = record["extra"]
    for name in SENSITIVE_FIELDS.intersection(extra):
        value = extra[name]
        extra[name] = f"<redacted: {len(str(value))} chars>"


def _keep(record: Any) -> None:
    return None


def install_log_redaction(enabled: bool) -> None:
    """Scrub sensitive extra fields from every loguru record (or stop doing so)."""
    # (loguru reads patcher=None as "leave it as it is", hence the no-op patcher)
    logger.configure(patcher=_scrub if enabled else _keep)
