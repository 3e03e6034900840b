"""Callbacks through the platform's outbox (devstack): an answered case and a timed-out one are
POSTed signed to the case's callback_url, a late answer after a timeout too; failures retry
later, SSRF targets fail for good, two replicas never deliver one callback twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from security_support import RETELL_KEY, RetellSigner, retell_body
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from supabase import acreate_client
from test_security_on_devstack import Broadcasts, answer, relay_on

from hitl_devstack.server import Devstack
from hitl_relay.adapters.supabase_services import SupabaseServices
from hitl_relay.adapters.supabase_store import SupabaseCaseStore
from hitl_relay.callbacks import (
    SIGNATURE_HEADER,
    CallbackSender,
    CallbackWorker,
    verify_callback_signature,
)
from hitl_relay.http_app import running
from hitl_relay.retell import PATH
from hitl_relay.service_ports import CallbackOutbox

SECRET = "whsec-outbox-0123456789"
ANSWER = "Yes, we can deliver on Saturday."


@dataclass
class Receiver:
    url: str = ""
    statuses: list[int] = field(default_factory=list)
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    verified: list[bool] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.verified.append(
            verify_callback_signature(SECRET, body, request.headers.get(SIGNATURE_HEADER))
        )
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.events.put_nowait(json.loads(body))
        return JSONResponse({}, status_code=status)

    async def next(self, within_s: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            return await self.events.get()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = Starlette(routes=[Route("/hook", r.hook, methods=["POST"])])
    async with running(app, "127.0.0.1", 0) as base:
        r.url = base + "/hook"
        yield r


@pytest.fixture
async def broadcasts(db: asyncpg.Connection) -> AsyncIterator[Broadcasts]:
    listener = Broadcasts()
    await db.add_listener("hitl_realtime", listener)
    try:
        yield listener
    finally:
        await db.remove_listener("hitl_realtime", listener)


@pytest.fixture
async def platform(devstack: Devstack) -> AsyncIterator[CallbackOutbox]:
    """The adapter's outbox port on a service-role supabase-py client, as the relay has it."""
    client = await acreate_client(devstack.url, devstack.keys.service_role_key)
    try:
        yield SupabaseServices(client, SupabaseCaseStore(client, 10.0))
    finally:
        await client.postgrest.aclose()


def worker(outbox: CallbackOutbox) -> CallbackWorker:
    sender = CallbackSender(allow_private=True, first_backoff_s=0.01, budget_s=1.0)
    return CallbackWorker(outbox, sender)


async def open_case(db: asyncpg.Connection, callback_url: str, call_id: str = "call-cb") -> Any:
    opened = await db.fetchval(
        "select public.hitl_open_case($1::jsonb)",
        json.dumps(
            {
                "case_id": str(uuid.uuid4()),
                "question": f"Can we deliver on Saturday? ({uuid.uuid4().hex[:6]})",
                "mcp_session_id": "s-1",
                "retell_call_id": call_id,
                "retell_agent_id": "agent-1",
                "timeout_seconds": 30,
                "callback_url": callback_url,
                "webhook_secret": SECRET,
            }
        ),
    )
    return json.loads(opened)


async def test_a_relay_with_a_callback_url_posts_the_answer_signed(
    devstack: Devstack, db: asyncpg.Connection, broadcasts: Broadcasts, receiver: Receiver
) -> None:
    signer = RetellSigner()
    body = retell_body("Can we deliver on Saturday?", call_id="call_cb_live")
    settings = {
        "callback_url": receiver.url,
        "callback_secret": SECRET,
        "callback_allow_private": True,
    }
    async with relay_on(devstack, **settings) as relay, httpx.AsyncClient() as http:
        asked = asyncio.ensure_future(
            http.post(relay.url + PATH, content=body, headers=signer.headers(body), timeout=30)
        )
        opened = await broadcasts.next(lambda m: m["event"] == "case_opened")
        case_id = opened["payload"]["case_id"]
        await answer(db, case_id, ANSWER)
        response = await asked
        delivered = await receiver.next()
    assert response.json()["answer"] == ANSWER
    assert receiver.verified == [True]
    assert delivered["event"] == "answer"
    assert (delivered["case_id"], delivered["call_id"]) == (case_id, "call_cb_live")
    assert (delivered["status"], delivered["answer"]) == ("answered", ANSWER)
    assert RETELL_KEY not in json.dumps(delivered)
    secret_in_case = await db.fetchval(
        "select count(*) from public.cases where metadata::text like '%' || $1 || '%'", SECRET
    )
    assert secret_in_case == 0  # the secret lives in hil_case_secrets only


async def test_a_timeout_and_then_the_late_answer_both_reach_the_callback(
    platform: CallbackOutbox, db: asyncpg.Connection, receiver: Receiver
) -> None:
    opened = await open_case(db, receiver.url)
    await db.execute(
        "select public.hitl_close_session($1::uuid, 'timed_out')", opened["session_id"]
    )
    outbox = worker(platform)
    assert await outbox.run_once() == 1
    timed_out = await receiver.next()
    await answer(db, opened["case_id"], ANSWER)
    assert await outbox.run_once() == 1
    late = await receiver.next()
    assert await outbox.run_once() == 0
    assert (timed_out["event"], timed_out["status"], timed_out["answer"]) == (
        "timeout",
        "timeout",
        None,
    )
    assert timed_out["session_id"] == opened["session_id"]
    assert (late["event"], late["status"], late["answer"]) == ("answer", "answered", ANSWER)
    assert receiver.verified == [True, True]
    rows = await db.fetch(
        "select event, attempts, delivered_at is not null as delivered "
        "from public.hil_callbacks order by id"
    )
    assert [tuple(r) for r in rows] == [("timeout", 1, True), ("answer", 1, True)]
    audited = await db.fetch(
        "select action, outcome from public.hil_audit where action like 'callback_%' order by id"
    )
    assert [tuple(r) for r in audited] == [
        ("callback_timeout", "delivered"),
        ("callback_answer", "delivered"),
    ]


async def test_a_failing_receiver_is_retried_later_not_hammered(
    platform: CallbackOutbox, db: asyncpg.Connection, receiver: Receiver
) -> None:
    receiver.statuses = [503] * 50
    opened = await open_case(db, receiver.url)
    await answer(db, opened["case_id"], ANSWER)
    outbox = worker(platform)
    assert await outbox.run_once() == 1
    assert await outbox.run_once() == 0  # not due again yet
    row = await db.fetchrow(
        "select attempts, last_status, delivered_at, failed_at, "
        "next_attempt_at > now() + interval '50 seconds' as later from public.hil_callbacks"
    )
    assert row is not None
    assert (row["attempts"], row["last_status"]) == (1, 503)
    assert (row["delivered_at"], row["failed_at"], row["later"]) == (None, None, True)


async def test_a_callback_to_a_private_address_fails_for_good_without_a_request(
    platform: CallbackOutbox, db: asyncpg.Connection
) -> None:
    opened = await open_case(db, "https://169.254.169.254/latest/meta-data/")
    await answer(db, opened["case_id"], ANSWER)
    strict = CallbackWorker(platform, CallbackSender(allow_private=False))
    assert await strict.run_once() == 1
    row = await db.fetchrow(
        "select failed_at is not null as failed, last_error from public.hil_callbacks"
    )
    assert row is not None
    assert row["failed"] is True
    assert "public addresses" in row["last_error"]


async def test_two_replicas_never_deliver_the_same_callback_twice(
    platform: CallbackOutbox, db: asyncpg.Connection, receiver: Receiver
) -> None:
    cases = [await open_case(db, receiver.url, call_id=f"call-{i}") for i in range(6)]
    for opened in cases:
        await answer(db, opened["case_id"], ANSWER)
    replicas = [worker(platform), worker(platform)]
    claimed = await asyncio.gather(*(w.run_once() for w in replicas))
    assert sum(claimed) == 6
    delivered = [receiver.events.get_nowait() for _ in range(receiver.events.qsize())]
    assert sorted(d["case_id"] for d in delivered) == sorted(c["case_id"] for c in cases)


async def test_operators_cannot_read_or_claim_callbacks(devstack: Devstack) -> None:
    token = devstack.keys.user_token(str(uuid.uuid4()), operator=True)
    headers = {"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        table = await http.get("/rest/v1/hil_callbacks", headers=headers)
        claim = await http.post("/rest/v1/rpc/hitl_callbacks_claim", json={}, headers=headers)
    assert table.status_code in (401, 403, 404)
    assert claim.status_code in (401, 403, 404)
