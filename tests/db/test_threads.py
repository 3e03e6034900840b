"""Call threads and the clarification loop in SQL (`20261125000700_hitl_threads.sql`), called
as the relay calls them: `hitl_continue_case` (named errors that write nothing, the reply as an
`ai` note plus a new waiting session, idempotent retries), the thread a new case of the same
call carries, `hitl_pending_clarification` and `hitl_call_history`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

OPEN = "select public.hitl_open_case($1::jsonb)"
CONTINUE = "select public.hitl_continue_case($1::jsonb)"
PENDING = "select public.hitl_pending_clarification($1::uuid)"
HISTORY = "select public.hitl_call_history($1)"
CALL = "call-thread-1"
TABLES = ("public.cases", "public.messages", "public.hil_sessions", "public.hil_audit")


def open_request(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "case_id": str(uuid.uuid4()),
        "question": "May we deliver order 4411 on Saturday?",
        "mcp_session_id": "mcp-1",
        "retell_call_id": CALL,
        "retell_agent_id": "agent-1",
        "timeout_seconds": 30,
    }
    base.update(overrides)
    return base


def continue_request(case: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "case_id": case,
        "question": "12 Main Street",
        "mcp_session_id": "mcp-1",
        "retell_call_id": CALL,
        "retell_agent_id": "agent-1",
        "timeout_seconds": 20,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


async def call(db: asyncpg.Connection, sql: str, arg: Any) -> Any:
    raw = await db.fetchval(sql, json.dumps(arg) if isinstance(arg, dict) else arg)
    return None if raw is None else json.loads(raw)


async def open_case(db: asyncpg.Connection, **overrides: Any) -> dict[str, Any]:
    opened: dict[str, Any] = await call(db, OPEN, open_request(**overrides))
    return opened


async def post(db: asyncpg.Connection, case_id: str, content: str, kind: str = "answer") -> str:
    """As an operator's app does it: a human message on the case."""
    return str(
        await db.fetchval(
            "insert into public.messages (case_id, sender_type, content, kind)"
            " values ($1, 'human', $2, $3) returning id",
            uuid.UUID(case_id),
            content,
            kind,
        )
    )


async def row_counts(db: asyncpg.Connection) -> dict[str, int]:
    return {t: await db.fetchval(f"select count(*) from {t}") for t in TABLES}


async def sessions_of(db: asyncpg.Connection, case_id: str) -> list[tuple[str, bool]]:
    rows = await db.fetch(
        "select status, coalesce((metadata ->> 'follow_up')::boolean, false) as follow_up"
        " from public.hil_sessions where case_id = $1 order by created_at",
        uuid.UUID(case_id),
    )
    return [(r["status"], r["follow_up"]) for r in rows]


async def close(db: asyncpg.Connection, session_id: str, status: str) -> None:
    await db.fetchval(
        "select public.hitl_close_session($1::uuid, $2)", uuid.UUID(session_id), status
    )


# ------------------------------------------------------------------ hitl_continue_case refusals


async def expired_case(db: asyncpg.Connection) -> str:
    opened = await open_case(db)
    await db.execute(
        "update public.cases set status = 'expired' where id = $1", uuid.UUID(opened["case_id"])
    )
    return str(opened["case_id"])


async def other_calls_case(db: asyncpg.Connection) -> str:
    return str((await open_case(db, retell_call_id="call-someone-else"))["case_id"])


async def unknown_case(_db: asyncpg.Connection) -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize(
    ("make_case", "overrides", "field", "rule"),
    [
        (unknown_case, {}, "case_id", "no such case"),
        (other_calls_case, {}, "case_id", "belongs to another call"),
        (expired_case, {}, "case_id", "is expired and can no longer be continued"),
        (unknown_case, {"case_id": "case-7"}, "case_id", "must be a UUID"),
        (unknown_case, {"case_id": ...}, "case_id", "is required"),
        (unknown_case, {"question": "   "}, "question", "must not be empty"),
        (unknown_case, {"timeout_seconds": 601}, "timeout_seconds",
         "must be an integer from 5 to 600"),
    ],
    ids=[
        "unknown case",
        "another call's case",
        "expired case",
        "malformed case id",
        "missing case id",
        "blank reply",
        "timeout 601",
    ],
)  # fmt: skip
async def test_continue_case_refuses_with_a_named_error_and_writes_nothing(
    db: asyncpg.Connection, make_case: Any, overrides: dict[str, Any], field: str, rule: str
) -> None:
    case_id = await make_case(db)
    before = await row_counts(db)

    with pytest.raises(asyncpg.RaiseError) as raised:
        await call(db, CONTINUE, continue_request(case_id, **overrides))

    error = raised.value
    assert error.sqlstate == "P0001"
    assert error.args[0] == f"invalid {field}: {rule}"
    assert (error.detail, error.hint) == (field, rule)
    assert await row_counts(db) == before


# ------------------------------------------------------------------ hitl_continue_case effects


async def test_continue_case_adds_the_reply_as_an_ai_note_and_opens_a_new_waiting_session(
    db: asyncpg.Connection,
) -> None:
    opened = await open_case(db)
    case_id = opened["case_id"]
    await post(db, case_id, "Which address?", kind="clarification")
    await close(db, opened["session_id"], "needs_info")

    continued = await call(db, CONTINUE, continue_request(case_id))

    assert continued["case_id"] == case_id
    assert continued["session_id"] != opened["session_id"]
    assert (continued["existed"], continued["status"]) == (False, "waiting")
    messages = await db.fetch(
        "select sender_type, kind, content from public.messages where case_id = $1"
        " order by created_at",
        uuid.UUID(case_id),
    )
    assert [tuple(m) for m in messages] == [
        ("human", "clarification", "Which address?"),
        ("ai", "note", "12 Main Street"),
    ]
    assert await sessions_of(db, case_id) == [("needs_info", False), ("waiting", True)]
    deadline = await db.fetchval(
        "select (metadata ->> 'deadline_at')::timestamptz from public.cases where id = $1",
        uuid.UUID(case_id),
    )
    expires = await db.fetchval(
        "select expires_at from public.hil_sessions where id = $1",
        uuid.UUID(continued["session_id"]),
    )
    assert deadline == expires  # the console's countdown follows the follow-up's deadline
    # The ai note is broadcast to the case's channel like every message (the console shows it).
    broadcast = await db.fetchval(
        "select payload from realtime.messages where topic = $1 and event = 'message'"
        " and payload ->> 'sender_type' = 'ai'",
        f"case:{case_id}",
    )
    assert json.loads(broadcast)["is_answer"] is False


async def test_continue_case_supersedes_a_session_still_waiting_on_the_case(
    db: asyncpg.Connection,
) -> None:
    opened = await open_case(db)
    await call(db, CONTINUE, continue_request(opened["case_id"]))
    assert await sessions_of(db, opened["case_id"]) == [("needs_info", False), ("waiting", True)]


async def test_a_retried_continue_case_returns_the_same_session_and_writes_nothing(
    db: asyncpg.Connection,
) -> None:
    opened = await open_case(db)
    first = await call(db, CONTINUE, continue_request(opened["case_id"]))
    before = await row_counts(db)

    again = await call(db, CONTINUE, continue_request(opened["case_id"]))

    assert again["session_id"] == first["session_id"]
    assert again["existed"] is True
    assert await row_counts(db) == before


async def test_an_answered_case_may_still_be_continued_and_keeps_its_answer(
    db: asyncpg.Connection,
) -> None:
    opened = await open_case(db)
    answer_id = await post(db, opened["case_id"], "Yes, any address.")

    continued = await call(db, CONTINUE, continue_request(opened["case_id"]))

    assert continued["status"] == "waiting"
    answer = await call(db, "select public.hitl_answer($1::uuid)", uuid.UUID(opened["case_id"]))
    assert (answer["message_id"], answer["content"]) == (answer_id, "Yes, any address.")


# ------------------------------------------------------------------ the call's thread


async def test_a_new_case_of_the_call_carries_the_earlier_questions_and_answers(
    db: asyncpg.Connection,
) -> None:
    first = await open_case(db, question="Deliver on Saturday?")
    await post(db, first["case_id"], "Which address?", kind="clarification")
    await call(db, CONTINUE, continue_request(first["case_id"]))
    await post(db, first["case_id"], "Yes, before noon.")
    await open_case(db, retell_call_id="call-unrelated", question="Unrelated?")

    second = await open_case(db, question="Gift wrap too?")

    metadata = json.loads(
        await db.fetchval(
            "select metadata from public.cases where id = $1", uuid.UUID(second["case_id"])
        )
    )
    (entry,) = metadata["thread"]
    assert entry["case_id"] == first["case_id"]
    assert (entry["question"], entry["status"]) == ("Deliver on Saturday?", "answered")
    assert (entry["answer"], entry["answer_kind"]) == ("Yes, before noon.", "answer")
    assert [(x["sender_type"], x["kind"], x["content"]) for x in entry["exchanges"]] == [
        ("human", "clarification", "Which address?"),
        ("ai", "note", "12 Main Street"),
        ("human", "answer", "Yes, before noon."),
    ]
    # Operators see it in the case_opened broadcast too.
    opened_payload = json.loads(
        await db.fetchval(
            "select payload from realtime.messages where topic = 'operators'"
            " and event = 'case_opened' and payload ->> 'case_id' = $1",
            second["case_id"],
        )
    )
    assert [e["case_id"] for e in opened_payload["thread"]] == [first["case_id"]]


async def test_the_first_case_of_a_call_has_no_thread(db: asyncpg.Connection) -> None:
    opened = await open_case(db)
    metadata = json.loads(
        await db.fetchval(
            "select metadata from public.cases where id = $1", uuid.UUID(opened["case_id"])
        )
    )
    assert "thread" not in metadata
    payload = json.loads(
        await db.fetchval(
            "select payload from realtime.messages where event = 'case_opened'"
            " and payload ->> 'case_id' = $1",
            opened["case_id"],
        )
    )
    assert payload["thread"] == []


async def test_call_history_lists_the_calls_cases_oldest_first(db: asyncpg.Connection) -> None:
    first = await open_case(db, question="First?")
    await post(db, first["case_id"], "Cannot say", kind="cannot_answer")
    second = await open_case(db, question="Second?")

    history = await call(db, HISTORY, CALL)

    assert [(e["case_id"], e["question"], e["status"]) for e in history] == [
        (first["case_id"], "First?", "answered"),
        (second["case_id"], "Second?", "open"),
    ]
    assert (history[0]["answer"], history[0]["answer_kind"]) == ("Cannot say", "cannot_answer")
    assert history[0]["answered_at"] is not None
    assert (history[1]["answer"], history[1]["answered_at"], history[1]["exchanges"]) == (
        None,
        None,
        [],
    )
    assert await call(db, HISTORY, "call-never-seen") == []


# ------------------------------------------------------------------ hitl_pending_clarification


async def test_pending_clarification_is_the_newest_question_back_not_yet_replied_to(
    db: asyncpg.Connection,
) -> None:
    opened = await open_case(db)
    case_id = uuid.UUID(opened["case_id"])
    assert await call(db, PENDING, case_id) is None

    await post(db, opened["case_id"], "Which address?", kind="clarification")
    await post(db, opened["case_id"], "FYI: checking stock", kind="note")
    newest = await post(db, opened["case_id"], "And which day?", kind="clarification")
    pending = await call(db, PENDING, case_id)
    assert (pending["message_id"], pending["content"], pending["kind"]) == (
        newest,
        "And which day?",
        "clarification",
    )
    assert pending["case_id"] == opened["case_id"]

    await call(db, CONTINUE, continue_request(opened["case_id"]))
    assert await call(db, PENDING, case_id) is None  # the caller's reply came after it

    await post(db, opened["case_id"], "Ground floor?", kind="clarification")
    assert (await call(db, PENDING, case_id))["content"] == "Ground floor?"


async def test_no_clarification_is_pending_once_the_case_has_an_answer(
    db: asyncpg.Connection,
) -> None:
    opened = await open_case(db)
    await post(db, opened["case_id"], "Yes.")
    await post(db, opened["case_id"], "Which address, by the way?", kind="clarification")
    assert await call(db, PENDING, uuid.UUID(opened["case_id"])) is None


async def test_pending_clarification_of_an_unknown_case_is_null(db: asyncpg.Connection) -> None:
    assert await call(db, PENDING, uuid.uuid4()) is None


async def test_a_session_may_close_as_needs_info(db: asyncpg.Connection) -> None:
    opened = await open_case(db)
    closed = await db.fetchval(
        "select public.hitl_close_session($1::uuid, 'needs_info', '{\"message_id\": \"m\"}')",
        uuid.UUID(opened["session_id"]),
    )
    assert json.loads(closed) == {
        "session_id": opened["session_id"],
        "status": "needs_info",
        "changed": True,
    }
