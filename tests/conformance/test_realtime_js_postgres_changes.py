"""postgres_changes with the unmodified `@supabase/supabase-js` 2.119 (Node 22), as the
operators' app listens to `cases` and `messages` (scenario `js/scenarios/postgres_changes.mjs`).

Expected values come from supabase/realtime (`realtime_channel.ex` join reply ids and system
messages, `postgres_cdc_rls/subscriptions.ex` errors, `tenant_schema/realtime/functions/
apply_rls.sql` payload and per-subscriber RLS, `postgres_cdc_rls/message_dispatcher.ex`
`{ids, data}`) and supabase/realtime-js (`RealtimeChannel.ts` `_trigger` turns `data` into
`{schema, table, commit_timestamp, eventType, new, old, errors}`), never from the devstack.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from test_supabase_js import V1, V2, frames, join_reply, run_scenario

from hitl_devstack.server import Devstack

pytestmark = pytest.mark.node

MISSING = (
    "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for"
    " the given connect parameters: [event: INSERT, schema: public, table: no_such_table,"
    " filters: [], select: nil]"
)


def case_input(priority: int) -> str:
    call = f"call_{uuid.uuid4().hex[:10]}"
    return json.dumps(
        {
            "case_id": str(uuid.uuid4()),
            "question": f"Changes question {call}?",
            "mcp_session_id": f"mcp-{call}",
            "retell_call_id": call,
            "retell_agent_id": "agent_js",
            "priority": priority,
            "urgency": "medium",
            "timeout_seconds": 30,
        }
    )


def changes_of(rec: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = rec["changes"]
    return found


@pytest.mark.parametrize("vsn", [V2, V1])
async def test_operator_app_sees_cases_and_answers_filtered_and_under_rls(
    devstack: Devstack, db: asyncpg.Connection, vsn: str
) -> None:
    # Hosted: only tables in the publication supabase_realtime ("Enable Realtime") are sent.
    await db.execute("alter publication supabase_realtime add table public.cases, public.messages")
    keys = devstack.keys
    operator_id = str(uuid.uuid4())
    env = {
        "SUPABASE_URL": devstack.url,
        "SUPABASE_ANON_KEY": keys.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key,
        "HITL_OPERATOR_ID": operator_id,
        "HITL_OPERATOR_TOKEN": keys.user_token(operator_id, operator=True),
        "HITL_USER_TOKEN": keys.user_token(str(uuid.uuid4()), operator=False),
        "HITL_CASE_INPUT_LOW": case_input(2),
        "HITL_CASE_INPUT_HIGH": case_input(5),
        "REALTIME_VSN": vsn,
    }

    r = await run_scenario("postgres_changes", env)

    low, high = r["cases"]["low"], r["cases"]["high"]
    got = changes_of(r["operator"])
    assert [(c["table"], c["new"]["id"]) for c in got] == [
        ("cases", low),
        ("cases", high),
        ("messages", r["answer_id"]),
    ]
    for c in got:
        # RealtimeChannel.ts: the server's `data` as {schema, table, commit_timestamp,
        # eventType, new, old, errors}; apply_rls.sql sends no old_record for an INSERT
        assert set(c) == {
            "schema",
            "table",
            "commit_timestamp",
            "eventType",
            "new",
            "old",
            "errors",
        }
        assert (c["schema"], c["eventType"], c["old"], c["errors"]) == (
            "public",
            "INSERT",
            {},
            None,
        )
    assert got[2]["new"]["case_id"] == high
    assert got[2]["new"]["content"] == "Waive it."
    # the filter priority=eq.5 let only the second case through
    assert [c["new"]["id"] for c in changes_of(r["filtered"])] == [high]
    # apply_rls.sql: the table's RLS under each subscriber's claims
    assert changes_of(r["user"]) == []
    assert changes_of(r["anon"]) == []

    # realtime_channel.ex: system messages after the join (channel = the sub-topic)
    ok = [m for m in r["operator"]["system"] if m.get("extension") == "postgres_changes"]
    assert [(m["status"], m["message"]) for m in ok] == [("ok", "Subscribed to PostgreSQL")]
    missing = [m for m in r["missing"]["system"] if m.get("extension") == "postgres_changes"]
    assert [(m["status"], m["message"]) for m in missing] == [("error", MISSING)]

    # the join reply echoes each binding with an integer id; changes carry the matching ids
    fo = frames(r, "operator")
    join, reply = join_reply(fo, f"realtime:{r['topics']['operator']}")
    sent = join["payload"]["config"]["postgres_changes"]
    echoed = reply["payload"]["response"]["postgres_changes"]
    assert [{k: v for k, v in e.items() if k != "id"} for e in echoed] == sent
    assert all(isinstance(e["id"], int) for e in echoed)
    pushes = [f for f in fo if f["dir"] == "in" and f.get("event") == "postgres_changes"]
    assert len(pushes) == 4  # three on the operator's channel, one on the filtered channel
    for p in pushes:
        assert p["ref"] is None
        assert set(p["payload"]) == {"ids", "data"}
