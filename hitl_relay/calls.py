"""One `ask` call's record (what it has learnt so far) and how its outcome becomes the result the
agent gets and the status its session is closed with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from hitl_relay.models import AskResult, Status
from hitl_relay.options import Fallbacks
from hitl_relay.ports import Answer, Clarification, OpenedCase, SessionOutcome

Expired = Literal["expired"]
# How a wait ends: the answer, the operator's question back, the session expired, or None (the
# deadline passed).
Outcome = Answer | Clarification | Expired | None


@dataclass
class CallRecord:
    """What one `ask` has learnt so far; read by the `finally` that closes the session."""

    started: float
    call_id: str
    case_id: UUID | None = None
    # The case a follow-up continues: it exists already, so every result names it.
    follow_up_of: UUID | None = None
    # This call's own time limit in seconds (stated in the result).
    deadline_s: int | None = None
    opened: OpenedCase | None = None
    close_as: SessionOutcome = "failed"
    detail: dict[str, Any] = field(default_factory=dict)
    # The breaker was told how the platform did for this call (success or failure).
    recorded: bool = False
    # The wait was ended by `Relay.drain()` (the relay is shutting down).
    drained: bool = False
    # The wait was ended by a recovery sweep that read this answer or clarification.
    swept: Answer | Clarification | None = None
    # For the per-call log line: tool call → case opened, answer committed → relay has it (live
    # answers only), and the case's priority and urgency.
    create_ms: int | None = None
    delivery_ms: int | None = None
    priority: int | None = None
    urgency: str | None = None


class Results:
    """Renders a call's outcome as the agent's `AskResult`, with the configured fallback lines."""

    def __init__(self, fallbacks: Fallbacks, monotonic: Callable[[], float]) -> None:
        self.fallbacks = fallbacks
        self._monotonic = monotonic

    def finish(self, outcome: Outcome, call: CallRecord) -> AskResult:
        """The result of a wait that ended with `outcome`; sets how the session closes."""
        if isinstance(outcome, Answer):
            result = self.from_answer(outcome, call)
            call.close_as = "answered"
            call.detail["message_id"] = str(outcome.message_id)
            return result
        if isinstance(outcome, Clarification):
            call.close_as = "needs_info"
            call.detail["message_id"] = str(outcome.message_id)
            return self.needs_info(outcome, call)
        if call.drained:
            call.close_as = "cancelled"
            call.detail["reason"] = "relay shutting down"
        else:
            call.close_as = "expired" if outcome == "expired" else "timed_out"
        return self.fallback("timeout", call)

    def from_answer(self, answer: Answer, call: CallRecord) -> AskResult:
        text = answer.content.strip()
        if answer.kind == "cannot_answer" or not text:
            message = self.fallbacks.unclear_answer
            if answer.kind == "cannot_answer" and text:
                message += f" (My colleague noted: {text})"
            return self.fallback("unclear_answer", call, message=message, case_id=answer.case_id)
        return AskResult(
            status="answered",
            answer=text,
            case_id=str(answer.case_id),
            waited_ms=self.waited_ms(call),
            deadline_s=call.deadline_s,
            message=text,
            option_index=answer.option_index,
            option=answer.option,
            answered_by=answer.sender_id,
        )

    def needs_info(self, clarification: Clarification, call: CallRecord) -> AskResult:
        question = clarification.content.strip()
        return AskResult(
            status="needs_info",
            clarification=question,
            case_id=str(clarification.case_id),
            waited_ms=self.waited_ms(call),
            deadline_s=call.deadline_s,
            message=question,
        )

    def pending(self, case_id: UUID, call: CallRecord) -> AskResult:
        return AskResult(
            status="pending",
            case_id=str(case_id),
            waited_ms=self.waited_ms(call),
            message="No answer yet. You may check again a little later in the call.",
        )

    def fallback(
        self,
        status: Status,
        call: CallRecord,
        *,
        message: str | None = None,
        case_id: UUID | None = None,
    ) -> AskResult:
        if case_id is None:
            # Only a case that exists is worth naming (a follow-up's case exists already).
            case_id = call.opened.case_id if call.opened is not None else call.follow_up_of
        return AskResult(
            status=status,
            case_id=str(case_id) if case_id is not None else None,
            waited_ms=self.waited_ms(call),
            deadline_s=call.deadline_s,
            message=message or self.fallbacks.line(status),
        )

    def waited_ms(self, call: CallRecord) -> int:
        return max(0, round((self._monotonic() - call.started) * 1000))
