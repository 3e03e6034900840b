"""The security edge against the real schema (devstack: PostgREST + Realtime over Postgres, the
relay on its Supabase adapter): Retell retries join one case in the database, invalid requests
write no row, SQL injection attempts are stored verbatim, refusals land in `hil_audit`, and the
replay guard holds across replicas (the shared rate limits: tests/contract)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from security_support import KEY_A, RETELL_KEY, RetellSigner, bearer, make_settings, retell_body

from hitl_devstack.server import Devstack
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.retell import PATH
from hitl_relay.security import SecurityLayer

ANSWER = "Yes, the Saturday slot is free."
INJECTIONS = [
    "'; drop table public.cases; --",
    "Robert'); DROP TABLE public.messages;--",
    "' or '1'='1",
    '"; select pg_sleep(10); --',
    "$$; delete from public.hil_sessions; $$",
    "\\'; truncate public.hil_audit; --",
    "<img src=x onerror=alert(1)>",
]


def devstack_settings(devstack: Devstack, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "supabase",
        "supabase_url": devstack.url,
        "supabase_service_role_key": devstack.keys.service_role_key,
        "supabase_anon_key": devstack.keys.anon_key,
        "no_operator_answers_at_once": False,
        "retell_api_key": RETELL_KEY,
        "audit_sink": "supabase",
    }
    values.update(overrides)
    return make_settings(**values)


@dataclass
class Relay:
    url: str
    layer: SecurityLayer


@asynccontextmanager
async def relay_on(devstack: Devstack, **overrides: Any) -> AsyncIterator[Relay]:
    config = devstack_settings(devstack, **overrides)
    layer = SecurityLayer(config)
    async with running(create_app(config, security=layer)) as url:
        yield Relay(url, layer)


class Broadcasts:
    """Database broadcasts (the devstack's NOTIFY hook), to wait on instead of sleeping."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.queue.put_nowait(json.loads(payload))

    async def next(self, match: Callable[[dict[str, Any]], bool], within_s: float = 10) -> Any:
        async with asyncio.timeout(within_s):
            while True:
                message = await self.queue.get()
                if match(message):
                    return message


@pytest.fixture
async def broadcasts(db: asyncpg.Connection) -> AsyncIterator[Broadcasts]:
    listener = Broadcasts()
    await db.add_listener("hitl_realtime", listener)
    try:
        yield listener
    finally:
        await db.remove_listener("hitl_realtime", listener)


async def answer(db: asyncpg.Connection, case_id: str, text: str) -> None:
    await db.execute(
        "insert into public.messages (case_id, sender_type, sender_id, content, kind) "
        "values ($1, 'human', gen_random_uuid(), $2, 'answer')",
        case_id,
        text,
    )


async def counts(db: asyncpg.Connection) -> tuple[int, int, int]:
    row = await db.fetchrow(
        "select (select count(*) from public.cases) as cases, "
        "(select count(*) from public.hil_sessions) as sessions, "
        "(select count(*) from public.messages) as messages"
    )
    assert row is not None
    return row["cases"], row["sessions"], row["messages"]


async def test_a_retell_retry_joins_the_same_case_and_session_in_the_database(
    devstack: Devstack, db: asyncpg.Connection, broadcasts: Broadcasts
) -> None:
    signer = RetellSigner()
    body = retell_body("Is the Saturday slot still free?", call_id="call_db_retry")
    async with relay_on(devstack) as relay, httpx.AsyncClient(base_url=relay.url) as http:
        first = asyncio.ensure_future(
            http.post(PATH, content=body, headers=signer.headers(body), timeout=30)
        )
        opened = await broadcasts.next(lambda m: m["event"] == "case_opened")
        case_id = opened["payload"]["case_id"]
        first.cancel()  # Retell gave up on this attempt
        await broadcasts.next(
            lambda m: m["event"] == "session" and m["payload"]["status"] == "cancelled"
        )
        retry = asyncio.ensure_future(
            http.post(PATH, content=body, headers=signer.headers(body), timeout=30)
        )
        await broadcasts.next(
            lambda m: m["event"] == "session" and m["payload"]["status"] == "waiting"
        )
        await answer(db, case_id, ANSWER)
        response = await retry
    assert response.status_code == 200
    assert response.json()["case_id"] == case_id
    assert response.json()["answer"] == ANSWER
    rows = await db.fetch(
        "select c.id::text as case_id, s.status from public.cases c "
        "join public.hil_sessions s on s.case_id = c.id "
        "where c.metadata->>'retell_call_id' = 'call_db_retry'"
    )
    assert [(r["case_id"], r["status"]) for r in rows] == [(case_id, "answered")]


async def test_invalid_requests_write_no_row(devstack: Devstack, db: asyncpg.Connection) -> None:
    signer = RetellSigner()
    invalid_bodies = [
        retell_body(""),
        retell_body("ok?", priority=9),
        retell_body("ok?", urgency="whenever"),
        retell_body("ok?", timeout_seconds=1),
        retell_body("ok?", caller_info={"blob": "x" * 20_000}),
        retell_body("x" * 2001),
        retell_body("a NUL \x00 Postgres cannot store?"),
        retell_body("ok?", caller_info={"name": "nul\x00"}),
        json.dumps({"args": {"question": "no call at all?"}}).encode(),
    ]
    mcp_headers = {
        **bearer(KEY_A),
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2025-06-18",
    }
    invalid_tool_args = [
        {"question": "", "session_id": "s", "call_id": "c", "agent_id": "a"},
        {"question": "q?", "session_id": "s", "call_id": "c\n", "agent_id": "a"},
        {"question": "q?", "session_id": "s", "call_id": "c", "agent_id": "a", "priority": 0},
        {"question": "q?"},
    ]
    async with relay_on(devstack) as relay, httpx.AsyncClient(base_url=relay.url) as http:
        for body in invalid_bodies:
            response = await http.post(PATH, content=body, headers=signer.headers(body))
            assert response.status_code == 200
            assert response.json()["error"] == "invalid_request"
        for arguments in invalid_tool_args:
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "ask_human", "arguments": arguments},
            }
            response = await http.post("/mcp", content=json.dumps(call), headers=mcp_headers)
            assert '"isError":true' in response.text
        ready = await http.get("/readyz")
    assert await counts(db) == (0, 0, 0)
    # refused at the edge, not failed on the platform
    assert ready.json()["checks"]["breaker"]["state"] == "closed"


async def test_sql_injection_in_every_field_is_stored_verbatim_and_harmless(
    devstack: Devstack, db: asyncpg.Connection, broadcasts: Broadcasts
) -> None:
    signer = RetellSigner()
    question, context, reply = INJECTIONS[0], INJECTIONS[1], INJECTIONS[2]
    call_id, agent_id = INJECTIONS[3], INJECTIONS[4]
    payload = {
        "name": "ask_human",
        "call": {
            "call_id": call_id,
            "agent_id": agent_id,
            "from_number": INJECTIONS[5],
            "transcript_object": [{"role": "user", "content": INJECTIONS[6]}],
        },
        "args": {"question": question, "context": context, "caller_info": {"note": INJECTIONS[5]}},
    }
    body = json.dumps(payload).encode()
    async with relay_on(devstack) as relay, httpx.AsyncClient(base_url=relay.url) as http:
        asked = asyncio.ensure_future(
            http.post(PATH, content=body, headers=signer.headers(body), timeout=30)
        )
        opened = await broadcasts.next(lambda m: m["event"] == "case_opened")
        await answer(db, opened["payload"]["case_id"], reply)
        response = await asked
    assert response.json()["answer"] == reply
    row = await db.fetchrow(
        "select description, metadata from public.cases where id = $1",
        opened["payload"]["case_id"],
    )
    assert row is not None
    meta = json.loads(row["metadata"])
    assert row["description"] == question
    assert meta["context"] == context
    assert (meta["retell_call_id"], meta["retell_agent_id"]) == (call_id, agent_id)
    assert meta["caller_info"] == {"from_number": INJECTIONS[5], "note": INJECTIONS[5]}
    assert meta["conversation_history"] == [{"role": "caller", "content": INJECTIONS[6]}]
    stored_reply = await db.fetchval("select content from public.messages")
    assert stored_reply == reply
    session = await db.fetchrow("select retell_call_id, retell_agent_id from public.hil_sessions")
    assert session is not None
    assert (session["retell_call_id"], session["retell_agent_id"]) == (call_id, agent_id)
    assert await counts(db) == (1, 1, 1)  # every table is still there, nothing else changed


async def test_edge_refusals_are_recorded_in_hil_audit(
    devstack: Devstack, db: asyncpg.Connection
) -> None:
    signer = RetellSigner()
    body = retell_body()
    async with relay_on(devstack) as relay, httpx.AsyncClient(base_url=relay.url) as http:
        wrong_key = await http.post("/mcp", content=b"{}", headers=bearer("wrong-key-wrong-key"))
        forged = await http.post(PATH, content=body, headers={"x-retell-signature": "v=1,d=00"})
        stale = await http.post(
            PATH, content=body, headers=signer.headers(body, timestamp_ms=1_000_000)
        )
    # leaving the app flushed the audit writer
    assert (wrong_key.status_code, forged.status_code, stale.status_code) == (401, 401, 401)
    rows = await db.fetch(
        "select actor, action, outcome, detail from public.hil_audit "
        "where actor like 'ip:%' order by id"
    )
    seen = [(r["actor"], r["action"], r["outcome"], json.loads(r["detail"])) for r in rows]
    assert [(a, b, c) for a, b, c, _ in seen] == [
        ("ip:127.0.0.1", "auth_failed", "refused"),
        ("ip:127.0.0.1", "retell_signature", "refused"),
        ("ip:127.0.0.1", "retell_signature", "refused"),
    ]
    assert [d.get("reason") for *_, d in seen] == ["wrong", "malformed", "stale"]
    assert not any(KEY_A in json.dumps(d) or RETELL_KEY in json.dumps(d) for *_, d in seen)


async def test_the_rate_limit_table_and_functions_are_closed_to_everyone_but_the_relay(
    devstack: Devstack, db: asyncpg.Connection
) -> None:
    body = {"p_key": "key:x", "p_limits": [{"limit": 1, "window_seconds": 60}]}
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        for token in (devstack.keys.anon_key, devstack.keys.user_token("u1", operator=True)):
            headers = {"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {token}"}
            rpc = await http.post("/rest/v1/rpc/hitl_rate_limit_hit", json=body, headers=headers)
            table = await http.get("/rest/v1/hil_rate_limits", headers=headers)
            assert rpc.status_code in (401, 403, 404), rpc.text
            assert table.status_code in (401, 403, 404), table.text
    with pytest.raises(asyncpg.RaiseError, match="invalid p_limits"):
        await db.fetchval("select public.hitl_rate_limit_hit('k', '[]'::jsonb)")


async def test_a_signature_replayed_to_another_replica_is_refused(devstack: Devstack) -> None:
    signer = RetellSigner()
    # Invalid arguments: replica A answers at once (the signature is spent before parsing).
    body = retell_body("", call_id="call_replay")
    headers = signer.headers(body)
    shared = {"rate_limit_storage": "postgres", "audit_sink": "none"}
    async with (
        relay_on(devstack, **shared) as a,
        relay_on(devstack, **shared) as b,
        httpx.AsyncClient() as http,
    ):
        original = await http.post(a.url + PATH, content=body, headers=headers)
        replayed = await http.post(b.url + PATH, content=body, headers=headers)
        fresh = await http.post(b.url + PATH, content=body, headers=signer.headers(body))
    assert original.status_code == 200
    assert replayed.status_code == 401
    assert fresh.status_code == 200
