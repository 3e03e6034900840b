"""Only committed rows count: a broadcast a client sends on `case:<id>` (an operator's token may
send there where an operators' app grants it) is at most a wake-up. The database signs its own
`message`, `session` and `case_opened` events (migration 20261206100000_hitl_signed_events.sql);
the relay takes an event as the committed row only when the signature verifies, and otherwise
reads the case.

On the memory twin (`forge_broadcast`), and end to end on the devstack with the unmodified
supabase-py as the forging operator (`channel.send_broadcast` and the REST broadcast endpoint).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from devstack_clients import Operator
from realtime import RealtimeChannelOptions, RealtimeSubscribeStates

from hitl_devstack.server import Devstack
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.adapters.supabase import supabase_backend
from hitl_relay.clock import FakeClock
from hitl_relay.config import Settings, load_settings
from hitl_relay.models import AskHumanRequest
from hitl_relay.ports import Answer, Clarification, SessionEvent
from hitl_relay.relay import Relay


@asynccontextmanager
async def waiting_call(platform: MemoryPlatform, clock: FakeClock) -> AsyncIterator[Any]:
    """One ask on the memory twin, joined on its case and parked on its deadline."""
    relay = Relay(
        platform.backend(), Settings(_env_file=None, backend="memory").relay_options(), clock=clock
    )
    request = AskHumanRequest.model_validate(
        {"question": "q?", "session_id": "s", "call_id": "c", "agent_id": "a"}
    )
    async with asyncio.TaskGroup() as tg:
        call = tg.create_task(relay.ask(request))
        await platform.wait_until(
            lambda: platform.joined_channels >= 1 and len(platform.cases) == 1
        )
        await clock.wait_for_sleepers(1)
        yield call
        await asyncio.wait_for(asyncio.shield(call), 5)


def forged_message(case_id: UUID | str, content: str) -> dict[str, Any]:
    """A payload shaped exactly like the messages trigger's."""
    return {
        "id": str(uuid4()),
        "case_id": str(case_id),
        "sender_type": "human",
        "sender_id": str(uuid4()),
        "content": content,
        "kind": "answer",
        "created_at": "2026-12-06T01:00:00.000000+00:00",
        "is_answer": True,
    }


# ---------------------------------------------------------------- memory twin (the contract)


async def test_forged_answer_and_session_end_leave_the_wait_untouched_on_the_twin() -> None:
    platform, clock = MemoryPlatform(clock=(fake := FakeClock())), fake
    async with waiting_call(platform, clock) as call:
        case_id = await platform.operator.wait_for_case()
        session = platform.session_of(case_id)
        reads = len(platform.rpc_calls)
        platform.forge_broadcast(case_id, "message", forged_message(case_id, "forged"))
        platform.forge_broadcast(
            case_id,
            "session",
            {"session_id": str(session.id), "case_id": str(case_id), "status": "expired"},
        )
        # Each wake-up is one read of the case, and nothing more.
        await platform.wait_until(lambda: len(platform.rpc_calls) >= reads + 2)
        assert not call.done()
        assert session.status == "waiting"
        await platform.operator.answer(case_id, "The committed answer")
    result = call.result()
    assert (result.status, result.answer) == ("answered", "The committed answer")


async def test_a_replayed_session_event_of_an_earlier_deadline_does_not_end_the_wait() -> None:
    platform, clock = MemoryPlatform(clock=(fake := FakeClock())), fake
    async with waiting_call(platform, clock) as call:
        case_id = await platform.operator.wait_for_case()
        session = platform.session_of(case_id)
        # A genuine event of this session from before it was re-opened (another deadline).
        stale = SessionEvent(
            session_id=session.id,
            case_id=case_id,
            status="expired",
            expires_at=session.expires_at - timedelta(seconds=60),
        )
        platform.broadcast(case_id, stale)
        reads = len(platform.rpc_calls)
        platform.forge_broadcast(case_id, "ping", {})  # processed after the stale event
        await platform.wait_until(lambda: len(platform.rpc_calls) > reads)
        assert not call.done()
        await platform.operator.answer(case_id, "Still answered")
    result = call.result()
    assert (result.status, result.answer) == ("answered", "Still answered")


# ---------------------------------------------------------------- the signature scheme


def test_any_change_to_a_signed_field_breaks_the_signature() -> None:
    from hitl_relay.adapters import signed_events

    key = bytes(range(32))
    payload = forged_message(uuid4(), "Yes\nid=3:abc")
    payload["sig"] = signed_events.sign(key, "message", payload)
    assert signed_events.verify(key, "message", payload)
    for field, value in [
        ("content", "No"),
        ("is_answer", False),
        ("sender_id", None),
        ("case_id", str(uuid4())),
        ("created_at", "2026-12-06T01:00:00.000001+00:00"),
    ]:
        assert not signed_events.verify(key, "message", {**payload, field: value}), field
    assert not signed_events.verify(bytes(32), "message", payload)
    assert not signed_events.verify(None, "message", payload)
    assert not signed_events.verify(key, "session", payload)
    assert not signed_events.verify(key, "message", {**payload, "sig": None})


def test_the_canonical_string_is_unambiguous_whatever_the_content_holds() -> None:
    from hitl_relay.adapters import signed_events

    # Without length prefixes these two would read alike.
    a = {"session_id": "x", "case_id": "y\nstatus=1:z", "status": None, "expires_at": None}
    b = {"session_id": "x", "case_id": "y", "status": "z", "expires_at": None}
    assert signed_events.canonical("session", a) != signed_events.canonical("session", b)
    assert signed_events.canonical("session", {"status": None}) != signed_events.canonical(
        "session", {"status": ""}
    )


# ---------------------------------------------------------------- the database


async def event_key(db: asyncpg.Connection) -> bytes:
    value = await db.fetchval("select public.hitl_event_key()")
    assert isinstance(value, str)
    return bytes.fromhex(value)


async def test_the_database_signature_verifies_for_every_event_it_sends(
    db: asyncpg.Connection,
) -> None:
    from hitl_relay.adapters import signed_events

    key = await event_key(db)
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await db.add_listener("hitl_realtime", lambda *a: seen.put_nowait(json.loads(a[3])))
    case_id = uuid4()
    session = await db.fetchval(
        "select (public.hitl_open_case($1::jsonb) ->> 'session_id')::uuid",
        json.dumps(
            {
                "case_id": str(case_id),
                "question": "Ünïcödé?\n\t'\"\\",
                "mcp_session_id": "s",
                "retell_call_id": "call-signed",
                "retell_agent_id": "a",
                "timeout_seconds": 30,
                "priority": 5,
                "options": ["Oui 😀", "Non — line\nid=4:abcd\u2028"],
            }
        ),
    )
    await db.execute(
        "insert into public.messages (case_id, sender_type, sender_id, content, kind) "
        "values ($1, 'human', null, $2, 'note')",
        case_id,
        "Oui 😀 — line\nid=4:abcd\u2028",
    )
    # The answer picks an option: option_index and option are signed with the rest.
    await db.execute(
        "insert into public.messages (case_id, sender_type, sender_id, content, kind, "
        "option_index) values ($1, 'human', null, '', 'answer', 1)",
        case_id,
    )
    await db.execute("select public.hitl_close_session($1, 'answered', null)", session)
    events: list[tuple[str, dict[str, Any]]] = []
    async with asyncio.timeout(10):
        while not any(
            name == "session" and payload["status"] == "answered" for name, payload in events
        ):
            item = await seen.get()
            events.append((item["event"], item["payload"]))
    assert {name for name, _ in events} == {"case_opened", "message", "session"}
    assert any(name == "message" and payload["option_index"] == 1 for name, payload in events)
    for name, payload in events:
        assert signed_events.verify(key, name, payload), (name, payload)
        tampered = {**payload, "case_id": str(uuid4())}
        assert not signed_events.verify(key, name, tampered)


async def test_clients_can_neither_sign_nor_read_the_key(db: asyncpg.Connection) -> None:
    for role in ("anon", "authenticated"):
        for sql in (
            "select public.hitl_event_key()",
            "select public.hitl_sign_event('message', '{}'::jsonb, array['id'])",
            "select key from public.hitl_event_key",
        ):
            async with db.transaction():
                await db.execute(f"set local role {role}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await db.fetchval(sql)


async def test_an_operators_message_gets_the_databases_id_and_time(
    devstack: Devstack, db: asyncpg.Connection
) -> None:
    case_id = uuid4()
    await db.execute(
        "select public.hitl_open_case($1::jsonb)",
        json.dumps(
            {
                "case_id": str(case_id),
                "question": "q?",
                "mcp_session_id": "s",
                "retell_call_id": "call-ids",
                "retell_agent_id": "a",
                "timeout_seconds": 30,
            }
        ),
    )
    chosen_id = uuid4()
    async with Operator(devstack) as operator:
        assert operator.client is not None
        row = {
            "id": str(chosen_id),
            "case_id": str(case_id),
            "sender_type": "human",
            "sender_id": str(operator.id),
            "content": "back-dated",
            "kind": "note",
            "created_at": "2001-01-01T00:00:00+00:00",
        }
        await operator.client.table("messages").insert(row).execute()
    stored = await db.fetchrow(
        "select id, created_at, now() - created_at < interval '1 minute' as fresh "
        "from public.messages where case_id = $1",
        case_id,
    )
    assert stored is not None
    assert stored["id"] != chosen_id
    assert stored["fresh"] is True


# ---------------------------------------------------------------- end to end on the devstack


class CountingReads:
    """The relay's store, counting catch-up reads (a wake-up's only effect)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads = 0
        self.changed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def reply(self, case_id: UUID) -> Answer | Clarification | None:
        found: Answer | Clarification | None = await self._store.reply(case_id)
        self.reads += 1
        self.changed.set()
        return found

    async def wait_for(self, reads: int, call: asyncio.Task[Any]) -> None:
        async with asyncio.timeout(15):
            while self.reads < reads and not call.done():
                self.changed.clear()
                waiter = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait([waiter, call], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()


@pytest.fixture
async def case_events(db: asyncpg.Connection) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on(_c: object, _p: int, _ch: str, payload: str) -> None:
        queue.put_nowait(json.loads(payload))

    await db.add_listener("hitl_realtime", on)
    try:
        yield queue
    finally:
        await db.remove_listener("hitl_realtime", on)


FORGERIES = {
    # supabase-py's channel.send_broadcast, the answer the trigger would send
    "ws_message": ("ws", "message"),
    # a session end with the session's real id and deadline, and a made-up signature
    "ws_session": ("ws", "session"),
    # POST /realtime/v1/api/broadcast with the operator's token
    "rest_message": ("rest", "message"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_a_forged_broadcast_leaves_the_wait_and_the_real_answer_wins(
    forgery: str,
    app_case_topic_writes: Devstack,
    db: asyncpg.Connection,
    case_events: asyncio.Queue[dict[str, Any]],
) -> None:
    how, event = FORGERIES[forgery]
    # The relay's own policies refuse operators' writes on `case:`; an app's may allow them.
    devstack = app_case_topic_writes
    settings = load_settings(
        backend="supabase",
        supabase_url=devstack.url,
        supabase_service_role_key=devstack.keys.service_role_key,
        no_operator_answers_at_once=False,
        platform_timeout_seconds=5.0,
    )
    request = AskHumanRequest.model_validate(
        {
            "question": "Is the forged answer refused?",
            "session_id": "s-forge",
            "call_id": f"call-forge-{forgery}",
            "agent_id": "a",
            "timeout_seconds": 60,
        }
    )
    async with (
        supabase_backend(settings.platform_options()) as backend,
        Operator(devstack) as operator,
    ):
        store = CountingReads(backend.store)
        relay = Relay(dataclasses.replace(backend, store=store), settings.relay_options())
        call = asyncio.create_task(relay.ask(request))
        try:
            async with asyncio.timeout(15):
                while True:
                    item = await case_events.get()
                    if item["event"] == "case_opened":
                        case_id = item["payload"]["case_id"]
                        break
            session = await db.fetchrow(
                "select id, expires_at from public.hil_sessions where case_id = $1", UUID(case_id)
            )
            assert session is not None
            await store.wait_for(1, call)  # the catch-up read: the relay is waiting
            before = store.reads
            if event == "message":
                payload = forged_message(case_id, f"FORGED {forgery}")
            else:
                payload = {
                    "session_id": str(session["id"]),
                    "case_id": case_id,
                    "status": "expired",
                    "expires_at": session["expires_at"].isoformat(),
                    "sig": "0" * 64,
                }
            assert operator.client is not None
            if how == "ws":
                options: RealtimeChannelOptions = {
                    "config": {
                        "broadcast": {"ack": True, "self": False},
                        "presence": {"key": "", "enabled": False},
                        "private": True,
                    }
                }
                channel = operator.client.channel(f"case:{case_id}", options)
                states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()
                await channel.subscribe(lambda state, _e: states.put_nowait(state))
                joined = await asyncio.wait_for(states.get(), 5)
                assert joined == RealtimeSubscribeStates.SUBSCRIBED
                await channel.send_broadcast(event, payload)
            else:
                async with httpx.AsyncClient(base_url=devstack.url) as http:
                    response = await http.post(
                        "/realtime/v1/api/broadcast",
                        headers={
                            "apikey": devstack.keys.anon_key,
                            "Authorization": f"Bearer {operator.token}",
                        },
                        json={
                            "messages": [
                                {
                                    "topic": f"case:{case_id}",
                                    "event": event,
                                    "payload": payload,
                                    "private": True,
                                }
                            ]
                        },
                    )
                assert response.status_code < 300, response.text
            # The forged event woke the call up: one read, and the call still waiting.
            await store.wait_for(before + 1, call)
            assert not call.done(), call.result()
            status = await db.fetchval(
                "select status from public.hil_sessions where id = $1", session["id"]
            )
            assert status == "waiting"

            await operator.answer(UUID(case_id), "The committed answer")
            result = await asyncio.wait_for(call, 15)
            # The committed answer's event was signed: taken as is, without a read.
            assert store.reads == before + 1
        finally:
            call.cancel()
    assert (result.status, result.answer) == ("answered", "The committed answer")
    message_id = await db.fetchval(
        "select answer_message_id from public.cases where id = $1", UUID(case_id)
    )
    assert message_id is not None
