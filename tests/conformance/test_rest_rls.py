"""Row-level security seen through REST: each request runs under its JWT's role and claims.

Expected statuses are PostgREST's: SQLSTATE 42501 is 401 for the anon role and 403 for any
other role (src/PostgREST/Error.hs, `mapSQLtoHTTP`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from rest_support import SUPABASE_TIMEOUT_WARNING, Clients, case_input

from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)


@pytest.fixture
async def clients(devstack: Devstack) -> AsyncIterator[Clients]:
    made = Clients(devstack)
    yield made
    await made.close()


@pytest.fixture
async def case_ids(clients: Clients) -> list[str]:
    """Two open cases, created by the relay's path (service role, hitl_open_case)."""
    sb = await clients.service()
    return [
        (await sb.rpc("hitl_open_case", {"p": case_input()}).execute()).data["case_id"]
        for _ in range(2)
    ]


async def test_anon_sees_no_cases(clients: Clients, case_ids: list[str]) -> None:
    sb = await clients.anon()

    rows = await sb.table("cases").select("id").execute()

    assert rows.data == []


async def test_operator_sees_the_cases(clients: Clients, case_ids: list[str]) -> None:
    sb = await clients.operator()

    rows = await sb.table("cases").select("id, status").order("created_at").execute()

    assert sorted(r["id"] for r in rows.data) == sorted(case_ids)
    assert {r["status"] for r in rows.data} == {"open"}


async def test_authenticated_non_operator_sees_nothing(
    devstack: Devstack, clients: Clients, case_ids: list[str]
) -> None:
    sb = await clients.user(devstack.keys.user_token(str(uuid.uuid4()), operator=False))

    cases = await sb.table("cases").select("id").execute()
    sessions = await sb.table("hil_sessions").select("id").execute()

    assert cases.data == []
    assert sessions.data == []


async def test_service_role_sees_everything_including_the_audit_log(
    clients: Clients, case_ids: list[str]
) -> None:
    sb = await clients.service()

    cases = await sb.table("cases").select("id").execute()
    audit = await sb.table("hil_audit").select("action", count="exact").execute()

    assert sorted(r["id"] for r in cases.data) == sorted(case_ids)
    assert audit.count == 2


async def test_operator_may_not_read_the_audit_log(clients: Clients) -> None:
    sb = await clients.operator()

    with pytest.raises(APIError) as e:
        await sb.table("hil_audit").select("*").execute()

    assert e.value.code == "42501"
    assert e.value.message == "permission denied for table hil_audit"


async def test_operator_inserts_a_human_answer_as_themselves(
    clients: Clients, case_ids: list[str], db: asyncpg.Connection
) -> None:
    operator_id = str(uuid.uuid4())
    sb = await clients.operator(operator_id)

    inserted = (
        await sb.table("messages")
        .insert(
            {
                "case_id": case_ids[0],
                "sender_type": "human",
                "sender_id": operator_id,
                "content": "Yes, waive it.",
            }
        )
        .execute()
    )

    assert inserted.data[0]["content"] == "Yes, waive it."
    answer = await db.fetchval(
        "select answer_message_id from public.cases where id = $1", uuid.UUID(case_ids[0])
    )
    assert str(answer) == inserted.data[0]["id"]


async def test_operator_insert_of_an_ai_message_is_refused_with_403(
    devstack: Devstack, case_ids: list[str], db: asyncpg.Connection
) -> None:
    operator_id = str(uuid.uuid4())
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{devstack.url}/rest/v1/messages",
            json={
                "case_id": case_ids[0],
                "sender_type": "ai",
                "sender_id": operator_id,
                "content": "I am the AI",
            },
            headers={
                "apikey": devstack.keys.anon_key,
                "Authorization": f"Bearer {devstack.keys.user_token(operator_id)}",
                "Prefer": "return=representation",
            },
        )

    assert r.status_code == 403
    assert r.json() == {
        "code": "42501",
        "details": None,
        "hint": None,
        "message": 'new row violates row-level security policy for table "messages"',
    }
    assert await db.fetchval("select count(*) from public.messages") == 0


async def test_anon_insert_is_refused_with_401(
    devstack: Devstack, case_ids: list[str], db: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{devstack.url}/rest/v1/messages",
            json={"case_id": case_ids[0], "sender_type": "human", "content": "hi"},
            headers={"apikey": devstack.keys.anon_key},
        )

    assert r.status_code == 401
    assert r.json()["code"] == "42501"
    assert r.headers["www-authenticate"] == "Bearer"
    assert await db.fetchval("select count(*) from public.messages") == 0


async def test_the_request_context_is_what_postgrest_sets(
    devstack: Devstack, clients: Clients, db: asyncpg.Connection
) -> None:
    await db.execute(
        """
        create function public.whoami() returns jsonb language sql stable as $$
          select jsonb_build_object(
            'role', current_user::text,
            'uid', auth.uid(),
            'jwt_role', auth.role(),
            'method', current_setting('request.method', true),
            'path', current_setting('request.path', true),
            'client', current_setting('request.headers', true)::jsonb ->> 'x-client-info',
            'search_path', current_setting('search_path'))
        $$;
        """
    )
    operator_id = str(uuid.uuid4())
    sb = await clients.operator(operator_id)

    me = (await sb.rpc("whoami", {}).execute()).data

    assert me["role"] == "authenticated"
    assert me["uid"] == operator_id
    assert me["jwt_role"] == "authenticated"
    assert me["method"] == "POST"
    assert me["path"] == "/rpc/whoami"
    assert me["client"].startswith("supabase-py/")
    assert me["search_path"] == "public, extensions"
