"""The clarification loop and the call thread end to end on the production adapter: the relay
core over `supabase_backend` (PostgREST RPC + Realtime) against a devstack, the operator as the
operators' app is (supabase-py with an operator JWT, so RLS applies). Progress is followed on
the database's own broadcast feed (LISTEN `hitl_realtime`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_devstack.server import Devstack
from hitl_relay.adapters.supabase import supabase_backend
from hitl_relay.config import load_settings
from hitl_relay.models import AskHumanRequest, AskResult
from hitl_relay.relay import Relay

CALL = "call-continuity-e2e"


class Broadcasts:
    """Every database broadcast (the devstack's NOTIFY feed), as {topic, event, payload}."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.queue.put_nowait(json.loads(payload))

    async def next(self, topic: str, event: str, within_s: float = 10.0, **match: Any) -> Any:
        async with asyncio.timeout(within_s):
            while True:
                item = await self.queue.get()
                body = item.get("payload") or {}
                if (
                    item["topic"] == topic
                    and item["event"] == event
                    and all(body.get(k) == v for k, v in match.items())
                ):
                    return body


class Operator:
    """The operators' app: supabase-py with an operator JWT; messages under its own id (RLS)."""

    def __init__(self, client: AsyncClient, operator_id: str) -> None:
        self.client = client
        self.id = operator_id

    async def post(self, case_id: str, content: str, kind: str = "answer") -> None:
        row = {
            "case_id": case_id,
            "sender_type": "human",
            "sender_id": self.id,
            "content": content,
            "kind": kind,
        }
        await self.client.table("messages").insert(row).execute()


@asynccontextmanager
async def operator_on(devstack: Devstack) -> AsyncIterator[Operator]:
    operator_id = str(uuid4())
    token = devstack.keys.user_token(operator_id, operator=True)
    client = await acreate_client(
        devstack.url,
        devstack.keys.anon_key,
        options=AsyncClientOptions(headers={"Authorization": f"Bearer {token}"}),
    )
    try:
        yield Operator(client, operator_id)
    finally:
        await client.postgrest.aclose()


def ask(question: str, **extra: Any) -> AskHumanRequest:
    return AskHumanRequest.model_validate(
        {
            "question": question,
            "session_id": "session-1",
            "call_id": CALL,
            "agent_id": "agent-1",
            "timeout_seconds": 30,
            **extra,
        }
    )


async def test_question_back_follow_up_and_thread_through_the_supabase_adapter(
    devstack: Devstack, db: asyncpg.Connection
) -> None:
    broadcasts = Broadcasts()
    await db.add_listener("hitl_realtime", broadcasts)
    settings = load_settings(
        backend="supabase",
        supabase_url=devstack.url,
        supabase_service_role_key=devstack.keys.service_role_key,
        no_operator_answers_at_once=False,
        platform_timeout_seconds=5.0,
    )
    async with (
        supabase_backend(settings.platform_options()) as backend,
        operator_on(devstack) as operator,
        asyncio.TaskGroup() as tg,  # a failed step cancels the asks still running
    ):
        relay = Relay(backend, settings.relay_options())

        # 1. The operator asks back instead of answering: the call returns needs_info.
        first = tg.create_task(relay.ask(ask("Can we deliver on Saturday?")))
        opened = await broadcasts.next("operators", "case_opened")
        case_id = opened["case_id"]
        assert opened["thread"] == []
        await operator.post(case_id, "Which delivery address?", kind="clarification")
        asked_back: AskResult = await asyncio.wait_for(first, 10)
        assert (asked_back.status, asked_back.clarification, asked_back.case_id) == (
            "needs_info",
            "Which delivery address?",
            case_id,
        )

        # 2. The follow-up puts the caller's reply into the same case and waits there again.
        follow_up = tg.create_task(
            relay.ask(ask("12 Main Street", case_id=case_id, timeout_seconds=20))
        )
        reply = await broadcasts.next(f"case:{case_id}", "message", sender_type="ai")
        assert (reply["content"], reply["kind"], reply["is_answer"]) == (
            "12 Main Street",
            "note",
            False,
        )
        await operator.post(case_id, "Yes, Saturday to 12 Main Street works.")
        answered: AskResult = await asyncio.wait_for(follow_up, 10)
        assert (answered.status, answered.answer, answered.case_id, answered.deadline_s) == (
            "answered",
            "Yes, Saturday to 12 Main Street works.",
            case_id,
            20,
        )

        # 3. The next question of the call shows the operator the thread so far.
        second = tg.create_task(relay.ask(ask("Gift wrap as well?")))
        opened_second = await broadcasts.next("operators", "case_opened")
        assert [(e["case_id"], e["answer"]) for e in opened_second["thread"]] == [
            (case_id, "Yes, Saturday to 12 Main Street works.")
        ]
        await operator.post(opened_second["case_id"], "Yes, free of charge.")
        assert (await asyncio.wait_for(second, 10)).answer == "Yes, free of charge."

        history = await relay.call_history(CALL)

    assert history.status == "ok"
    assert [(e.case_id, e.status) for e in history.entries] == [
        (case_id, "answered"),
        (opened_second["case_id"], "answered"),
    ]
    assert [(x.sender_type, x.kind) for x in history.entries[0].exchanges] == [
        ("human", "clarification"),
        ("ai", "note"),
        ("human", "answer"),
    ]
    statuses = await db.fetch(
        "select status from public.hil_sessions where case_id = $1 order by created_at",
        UUID(case_id),
    )
    assert [r["status"] for r in statuses] == ["needs_info", "answered"]
