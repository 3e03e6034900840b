"""postgres_changes with the unmodified realtime-py (what supabase-py's AsyncClient uses).

What hosted Realtime does, from supabase/realtime's sources (each test names its own):
- lib/realtime_web/channels/realtime_channel.ex: the join reply lists each binding with its `id`
  (add_id_to_postgres_changes/1); then `handle_info(:postgres_subscribe)` pushes the system
  message `{"extension": "postgres_changes", "status": "ok", "message": "Subscribed to
  PostgreSQL"}` or `status: error` with the reason;
- lib/extensions/postgres_cdc_rls/subscriptions.ex: a binding that matches no table of the
  publication inserts no row: "Unable to subscribe to changes with given parameters. Please
  check Realtime is enabled for the given connect parameters: [...]";
- priv/repo/tenant_schema/realtime/functions/apply_rls.sql: each change is checked against each
  subscriber's filters and, under the subscriber's role and claims, the table's RLS; the
  payload is `{schema, table, commit_timestamp, type, columns, record, old_record, errors}`
  with `record` only for INSERT/UPDATE, `old_record` only for UPDATE/DELETE, and on a table
  with RLS a DELETE's `old_record` holds the primary key only;
- lib/extensions/postgres_cdc_rls/message_dispatcher.ex: a `config` join receives
  `postgres_changes {ids, data}`.

Hosted projects deliver changes only for tables in the publication `supabase_realtime`
(the dashboard's "Enable Realtime"); the operators' platform has `cases` and `messages` in it,
so the fixture adds them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from realtime import AsyncRealtimeChannel, RealtimeSubscribeStates
from realtime_support import (
    PUBLIC,
    TIMEOUT_S,
    V1,
    RtClients,
    collector,
    get,
    next_state,
    state_log,
    subscribe,
)
from waiting import wait_until

from hitl_devstack.server import Devstack

SUBSCRIBED = {
    "channel": "",
    "extension": "postgres_changes",
    "message": "Subscribed to PostgreSQL",
    "status": "ok",
}
ISO_MS_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture(scope="module")
async def published(stack: Devstack) -> Devstack:
    """`cases` and `messages` enabled for Realtime, as on the operators' hosted project."""
    conn = await asyncpg.connect(stack.db_url)
    try:
        await conn.execute(
            "do $$ begin"
            " if not exists (select 1 from pg_publication_tables where pubname ="
            " 'supabase_realtime' and tablename = 'cases') then"
            " alter publication supabase_realtime add table public.cases, public.messages;"
            " end if; end $$"
        )
    finally:
        await conn.close()
    return stack


@pytest.fixture
async def db(published: Devstack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(published.db_url)
    try:
        yield conn
    finally:
        await conn.close()


async def open_case(db: asyncpg.Connection, priority: int = 3) -> str:
    """A case opened the way the relay opens one (`hitl_open_case`, service side)."""
    call = f"call_{uuid.uuid4().hex[:10]}"
    p = {
        "case_id": str(uuid.uuid4()),
        "question": f"Changes question {call}?",
        "mcp_session_id": f"mcp-{call}",
        "retell_call_id": call,
        "retell_agent_id": "agent_pc",
        "priority": priority,
        "urgency": "medium",
        "timeout_seconds": 30,
    }
    opened = json.loads(await db.fetchval("select public.hitl_open_case($1::jsonb)", json.dumps(p)))
    return str(opened["case_id"])


async def answer(db: asyncpg.Connection, case_id: str, operator_id: str, text: str) -> str:
    """An operator's answer, inserted under the operator's role and claims (as via REST)."""
    claims = json.dumps(
        {"sub": operator_id, "role": "authenticated", "app_metadata": {"hitl_role": "operator"}}
    )
    async with db.transaction():
        await db.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', $1, true)",
            claims,
        )
        row_id = await db.fetchval(
            "insert into public.messages (case_id, sender_type, sender_id, content, kind)"
            " values ($1, 'human', $2, $3, 'answer') returning id",
            uuid.UUID(case_id),
            operator_id,
            text,
        )
    return str(row_id)


class Watch:
    """A channel with postgres_changes bindings; changes and system messages on queues."""

    def __init__(self, channel: AsyncRealtimeChannel, topic: str) -> None:
        self.channel = channel
        self.topic = topic
        self.changes, on_change = collector()
        self.system, on_system = collector()
        self._on_change = on_change
        channel.on_system(lambda p: on_system(p.model_dump()))

    def on(self, event: str, table: str, filter: str | None = None) -> Watch:
        self.channel.on_postgres_changes(
            event,  # type: ignore[arg-type]
            self._on_change,
            table=table,
            schema="public",
            filter=filter,
        )
        return self

    async def subscribed(self) -> None:
        state, err = await subscribe(self.channel)
        assert state == RealtimeSubscribeStates.SUBSCRIBED, err
        # realtime_channel.ex handle_info(:postgres_subscribe): the system message, channel named
        assert await get(self.system) == {**SUBSCRIBED, "channel": self.topic}

    async def change(self) -> dict[str, Any]:
        got: dict[str, Any] = await get(self.changes)
        return got


async def watch(rt: RtClients, stack: Devstack, token: str) -> Watch:
    client = await rt.connect(stack, token)
    topic = f"changes-{uuid.uuid4().hex[:8]}"
    # broadcast `self`: the tests' barrier is a broadcast the client sends to itself
    return Watch(client.channel(topic, {"config": {"broadcast": {"self": True}}}), topic)


async def test_an_operator_sees_the_relays_new_case_and_the_answer(
    published: Devstack, rt: RtClients, db: asyncpg.Connection
) -> None:
    operator_id = str(uuid.uuid4())
    w = await watch(rt, published, published.keys.user_token(operator_id, operator=True))
    w.on("INSERT", "cases").on("INSERT", "messages")
    await w.subscribed()

    case_id = await open_case(db)
    opened = await w.change()
    message_id = await answer(db, case_id, operator_id, "Yes, waive it.")
    answered = await w.change()

    data = opened["data"]
    # apply_rls.sql: INSERT carries `record` and no `old_record`; replication_poller.ex
    # generate_record/1 adds `errors` (null when empty)
    assert set(data) == {
        "schema",
        "table",
        "commit_timestamp",
        "type",
        "columns",
        "record",
        "errors",
    }
    assert (data["schema"], data["table"], data["type"], data["errors"]) == (
        "public",
        "cases",
        "INSERT",
        None,
    )
    assert data["record"]["id"] == case_id
    assert data["record"]["status"] == "open"
    assert {"name": "id", "type": "uuid"} in data["columns"]
    assert re.match(ISO_MS_Z, data["commit_timestamp"])
    # message_dispatcher.ex: `ids` are the join reply's ids of the bindings that matched
    ids = {c.id for c in w.channel.postgres_changes_callbacks}
    assert len(opened["ids"]) == 1
    assert set(opened["ids"]) <= ids
    assert answered["data"]["table"] == "messages"
    assert answered["data"]["record"]["id"] == message_id
    assert answered["data"]["record"]["content"] == "Yes, waive it."
    assert answered["data"]["record"]["case_id"] == case_id
    assert opened["ids"] != answered["ids"]


async def test_a_signed_in_non_operator_sees_nothing_rls_is_applied_per_subscriber(
    published: Devstack, rt: RtClients, db: asyncpg.Connection
) -> None:
    operator = await watch(rt, published, published.keys.user_token(operator=True))
    outsider = await watch(rt, published, published.keys.user_token(operator=False))
    anon = await watch(rt, published, published.keys.anon_key)
    for w in (operator, outsider, anon):
        w.on("*", "cases").on("*", "messages")
    for w in (operator, outsider, anon):
        await w.subscribed()  # apply_rls.sql checks per change, not at subscribe

    case_id = await open_case(db)
    assert (await operator.change())["data"]["record"]["id"] == case_id

    # A barrier per socket: a self-broadcast queued after the change would have been.
    for w in (outsider, anon):
        got, on_b = collector()
        w.channel.on_broadcast("barrier", on_b)
        await w.channel.send_broadcast("barrier", {"n": 1})
        await get(got)
        assert w.changes.empty(), "RLS must hide the case from a non-operator"


async def test_update_and_delete_carry_old_record_and_star_receives_every_event(
    published: Devstack, rt: RtClients, db: asyncpg.Connection
) -> None:
    w = await watch(rt, published, published.keys.service_role_key)
    w.on("*", "cases")
    await w.subscribed()
    # apply_rls.sql checks RLS by reading the row when the change is polled: a row already
    # deleted by then is not delivered, so each change is awaited before the next one.
    case_id = await open_case(db)
    inserted = (await w.change())["data"]
    await db.execute("update public.cases set priority = 5 where id = $1", uuid.UUID(case_id))
    updated = (await w.change())["data"]
    await db.execute("delete from public.cases where id = $1", uuid.UUID(case_id))
    deleted = (await w.change())["data"]

    assert [d["type"] for d in (inserted, updated, deleted)] == ["INSERT", "UPDATE", "DELETE"]
    # apply_rls.sql: UPDATE has record and old_record (identity columns: the primary key
    # without REPLICA IDENTITY FULL); DELETE has old_record and no record
    assert updated["record"]["priority"] == 5
    assert updated["old_record"] == {"id": case_id}
    assert "record" not in deleted
    # ... and, the table having RLS, only the primary key of a deleted row
    assert deleted["old_record"] == {"id": case_id}


@pytest.mark.parametrize(
    ("flt", "first", "second"),
    [
        ("priority=eq.5", 1, 5),
        ("priority=neq.1", 1, 4),
        ("priority=lt.3", 5, 2),
        ("priority=lte.2", 4, 2),
        ("priority=gt.3", 2, 4),
        ("priority=gte.4", 3, 4),
        ("priority=in.(4,5)", 2, 5),
    ],
)
async def test_a_filter_delivers_only_matching_rows(
    published: Devstack,
    rt: RtClients,
    db: asyncpg.Connection,
    flt: str,
    first: int,
    second: int,
) -> None:
    w = await watch(rt, published, published.keys.user_token(operator=True))
    w.on("INSERT", "cases", filter=flt)
    await w.subscribed()

    skipped = await open_case(db, priority=first)
    matching = await open_case(db, priority=second)

    # Committed in this order: had the filter let the first through, it would come first.
    got = (await w.change())["data"]["record"]
    assert (got["id"], got["priority"]) == (matching, second)
    assert skipped != matching


async def test_a_missing_table_gets_realtimes_error_and_realtime_py_reports_it(
    published: Devstack, rt: RtClients
) -> None:
    client = await rt.connect(published, published.keys.user_token(operator=True))
    topic = f"changes-{uuid.uuid4().hex[:8]}"
    channel = client.channel(topic, PUBLIC)
    channel.on_postgres_changes("INSERT", lambda _p: None, table="no_such_table", schema="public")
    states: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
    queue, cb = state_log(states)
    await channel.subscribe(cb)

    await next_state(queue, RealtimeSubscribeStates.SUBSCRIBED)
    err = await next_state(queue, RealtimeSubscribeStates.CHANNEL_ERROR)

    # subscriptions.ex create/5 (no row inserted) through push_system_message/5
    assert json.loads(str(err)) == {
        "channel": topic,
        "extension": "postgres_changes",
        "message": "Unable to subscribe to changes with given parameters. Please check Realtime"
        " is enabled for the given connect parameters: [event: INSERT, schema: public, table:"
        " no_such_table, filters: [], select: nil]",
        "status": "error",
    }


async def test_a_bad_filter_and_a_bad_column_get_realtimes_errors(
    published: Devstack, rt: RtClients
) -> None:
    client = await rt.connect(published, published.keys.service_role_key)
    errors = []
    for flt in ("priority=foo.5", "nope=eq.5"):
        topic = f"changes-{uuid.uuid4().hex[:8]}"
        channel = client.channel(topic, PUBLIC)
        channel.on_postgres_changes("INSERT", lambda _p: None, table="cases", filter=flt)
        states: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
        queue, cb = state_log(states)
        await channel.subscribe(cb)
        errors.append(
            json.loads(str(await next_state(queue, RealtimeSubscribeStates.CHANNEL_ERROR)))
        )

    # subscriptions.ex parse_subscription_params/1 ("An unsupported operator ...")
    assert errors[0]["message"] == 'Error parsing `filter` params: ["foo", "5"]'
    # subscription_check_filters.sql raises; create/5 reports the Postgrex exception
    assert errors[1]["message"] == (
        "Unable to subscribe to changes with given parameters. An exception happened so please"
        " check your connect parameters: [event: INSERT, schema: public, table: cases, filters:"
        ' [{"nope", "eq", "5", false}], select: nil]. Exception: ERROR P0001 (raise_exception)'
        " invalid column for filter nope"
    )


async def test_leaving_deletes_the_channels_subscriptions(
    published: Devstack, rt: RtClients, db: asyncpg.Connection
) -> None:
    user_id = str(uuid.uuid4())
    w = await watch(rt, published, published.keys.user_token(user_id, operator=True))
    w.on("INSERT", "messages").on("UPDATE", "cases")
    await w.subscribed()

    async def rows() -> int:
        n = await db.fetchval(
            "select count(*) from realtime.subscription where claims ->> 'sub' = $1", user_id
        )
        return int(n)

    # subscriptions.ex create/5: one row per binding, with the subscriber's claims
    assert await rows() == 2

    await w.channel.unsubscribe()

    # subscription_manager.ex deletes the rows of a channel that ended
    async def gone() -> bool:
        return await rows() == 0

    await wait_until(gone, "the channel's realtime.subscription rows deleted", TIMEOUT_S)


async def test_the_pre_config_api_topic_names_the_table_and_events_come_named_by_type(
    published: Devstack, raw: Any, db: asyncpg.Connection
) -> None:
    # realtime_channel.ex pg_change_params(false, ...): `realtime:<schema>:<table>[:<filter>]`;
    # message_dispatcher.ex sends such joins the change as event INSERT/UPDATE/DELETE
    sock = await raw(published, published.keys.service_role_key, vsn=V1)
    reply = await sock.join("public:cases", {})
    assert reply["payload"]["status"] == "ok"
    (binding,) = reply["payload"]["response"]["postgres_changes"]
    assert {k: v for k, v in binding.items() if k != "id"} == {"schema": "public", "table": "cases"}
    system, _ = await sock.recv_until(lambda f: f["event"] == "system")
    assert system["payload"]["message"] == "Subscribed to PostgreSQL"

    case_id = await open_case(db)

    change, _ = await sock.recv_until(lambda f: f["event"] == "INSERT")
    assert change["topic"] == "realtime:public:cases"
    assert change["ref"] is None
    assert change["payload"]["type"] == "INSERT"
    assert change["payload"]["record"]["id"] == case_id
