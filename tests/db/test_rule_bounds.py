"""The input rules have one home (hitl_relay/rules.py); the SQL functions that check them again
on the platform (`hitl_open_case`, `hitl_continue_case`, `hitl_id`) must agree with it. Each
test calls the SQL at the bound and one past it, so a migration and the constant cannot
silently drift apart."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from hitl_relay.models import (
    ID_MAX,
    ID_RULE,
    QUESTION_MAX,
    TIMEOUT_DEFAULT,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
)

TIMEOUT_RULE = f"must be an integer from {TIMEOUT_MIN} to {TIMEOUT_MAX}"


def case(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "case_id": str(uuid.uuid4()),
        "question": f"May we deliver on Saturday? ({uuid.uuid4().hex[:8]})",
        "mcp_session_id": "session-1",
        "retell_call_id": f"call-{uuid.uuid4().hex[:8]}",
        "retell_agent_id": "agent-1",
        "timeout_seconds": 30,
    }
    values.update(overrides)
    return values


async def open_case(db: asyncpg.Connection, params: dict[str, Any]) -> dict[str, Any]:
    opened = await db.fetchval("select public.hitl_open_case($1::jsonb)", json.dumps(params))
    return dict(json.loads(opened))


async def refusal(db: asyncpg.Connection, function: str, params: dict[str, Any]) -> tuple[str, str]:
    """(field, rule) of the `hitl_invalid` error `function` raises for `params`."""
    with pytest.raises(asyncpg.RaiseError) as refused:
        await db.fetchval(f"select public.{function}($1::jsonb)", json.dumps(params))
    return refused.value.detail, refused.value.hint  # type: ignore[attr-defined]


async def test_a_call_s_time_limit_is_accepted_exactly_within_the_models_bounds(
    db: asyncpg.Connection,
) -> None:
    for timeout in (TIMEOUT_MIN, TIMEOUT_MAX):
        opened = await open_case(db, case(timeout_seconds=timeout))
        assert opened["session_id"]
    for timeout in (TIMEOUT_MIN - 1, TIMEOUT_MAX + 1):
        assert await refusal(db, "hitl_open_case", case(timeout_seconds=timeout)) == (
            "timeout_seconds",
            TIMEOUT_RULE,
        )


async def test_without_a_time_limit_the_sql_default_is_the_models(db: asyncpg.Connection) -> None:
    params = case()
    del params["timeout_seconds"]
    opened = await open_case(db, params)
    waits = await db.fetchval(
        "select extract(epoch from expires_at - created_at) from public.hil_sessions "
        "where id = $1::uuid",
        opened["session_id"],
    )
    assert round(float(waits)) == TIMEOUT_DEFAULT


async def test_a_follow_up_s_time_limit_has_the_same_bounds(db: asyncpg.Connection) -> None:
    first = case()
    opened = await open_case(db, first)

    def follow_up(timeout: int) -> dict[str, Any]:
        return {
            "case_id": opened["case_id"],
            "question": f"The reply ({uuid.uuid4().hex[:6]})",
            "mcp_session_id": "session-1",
            "retell_call_id": first["retell_call_id"],
            "retell_agent_id": "agent-1",
            "timeout_seconds": timeout,
        }

    for timeout in (TIMEOUT_MIN, TIMEOUT_MAX):
        continued = await db.fetchval(
            "select public.hitl_continue_case($1::jsonb)", json.dumps(follow_up(timeout))
        )
        assert json.loads(continued)["session_id"]
    for timeout in (TIMEOUT_MIN - 1, TIMEOUT_MAX + 1):
        assert await refusal(db, "hitl_continue_case", follow_up(timeout)) == (
            "timeout_seconds",
            TIMEOUT_RULE,
        )


async def test_ids_follow_the_models_id_rule(db: asyncpg.Connection) -> None:
    longest = "c" * ID_MAX
    assert (await open_case(db, case(retell_call_id=longest)))["session_id"]
    field, _ = await refusal(db, "hitl_open_case", case(retell_call_id="c" * (ID_MAX + 1)))
    assert field == "retell_call_id"
    assert await refusal(db, "hitl_open_case", case(retell_call_id="call\x07one")) == (
        "retell_call_id",
        ID_RULE,
    )


async def test_the_question_s_length_is_the_models(db: asyncpg.Connection) -> None:
    assert (await open_case(db, case(question="q" * QUESTION_MAX)))["session_id"]
    assert await refusal(db, "hitl_open_case", case(question="q" * (QUESTION_MAX + 1))) == (
        "question",
        f"must be at most {QUESTION_MAX} characters",
    )
