"""A call's thread as the agent sees it (`get_call_history`)."""

from __future__ import annotations

from collections.abc import Sequence

from hitl_relay.models import CallHistory, ThreadExchange, ThreadItem
from hitl_relay.ports import ThreadEntry


def history_of(call_id: str, entries: Sequence[ThreadEntry]) -> CallHistory:
    """The agent's view of a call's thread (`get_call_history`)."""
    items = [
        ThreadItem(
            case_id=str(e.case_id),
            question=e.question,
            status=e.status,
            asked_at=e.asked_at.isoformat(),
            answer=e.answer,
            answer_kind=e.answer_kind,
            answered_at=e.answered_at.isoformat() if e.answered_at else None,
            exchanges=[
                ThreadExchange(
                    sender_type=m.sender_type,
                    kind=m.kind,
                    content=m.content,
                    created_at=m.created_at.isoformat(),
                )
                for m in e.exchanges
            ],
        )
        for e in entries
    ]
    if not items:
        message = "No questions were asked to colleagues in this call yet."
    else:
        answered = sum(1 for i in items if i.answer is not None)
        message = f"{len(items)} question(s) asked to colleagues in this call, {answered} answered."
    return CallHistory(status="ok", call_id=call_id, entries=items, message=message)


def history_unavailable(call_id: str) -> CallHistory:
    return CallHistory(
        status="platform_unreachable",
        call_id=call_id,
        message="The colleagues' system cannot be reached right now; the call history is "
        "unavailable.",
    )
