"""The Supabase adapter's pure parts, without a platform: error translation, broadcast parsing,
how a refused join is told from a dropped socket, the reconnect backoff's bounds, and the event
key's reading (retried until the platform answers)."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import stamina
import websockets
from postgrest.exceptions import APIError

from hitl_relay.adapters.realtime_events import parse_message, parse_session
from hitl_relay.adapters.realtime_tuning import RealtimeTuning, refusal_reason
from hitl_relay.adapters.signed_events import EventKey
from hitl_relay.adapters.supabase import load_event_key
from hitl_relay.adapters.supabase_channel import SupabasePresence
from hitl_relay.adapters.supabase_shapes import ShapeError, parse_answer, parse_opened
from hitl_relay.adapters.supabase_store import api_error
from hitl_relay.adapters.supabase_tasks import parse_task
from hitl_relay.errors import InvalidRequest, NotFound, PlatformUnavailable, SchemaBehind
from hitl_relay.ports import Answer


def test_a_raised_rule_becomes_invalid_request_naming_field_and_rule() -> None:
    error = api_error(
        "hitl_open_case",
        APIError(
            {
                "code": "P0001",
                "message": "invalid urgency: must be one of low, medium, high",
                "details": "urgency",
                "hint": "must be one of low, medium, high",
            }
        ),
    )
    assert isinstance(error, InvalidRequest)
    assert (error.field, error.rule) == ("urgency", "must be one of low, medium, high")


def test_an_unknown_session_is_not_found() -> None:
    error = api_error(
        "hitl_close_session",
        APIError({"code": "P0001", "details": "p_session_id", "hint": "no such session"}),
    )
    assert isinstance(error, NotFound)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("42501", "permission denied for function hitl_open_case"),
        ("PGRST202", "Could not find the function public.hitl_open_case(p) in the schema cache"),
        ("502", "Bad Gateway"),  # a proxy's HTML page: supabase-py puts the status in `code`
    ],
)
def test_every_other_platform_error_is_platform_unavailable_with_its_code(
    code: str, message: str
) -> None:
    error = api_error("hitl_open_case", APIError({"code": code, "message": message}))
    assert isinstance(error, PlatformUnavailable)
    assert error.detail == f"hitl_open_case: {code} {message}"


@pytest.mark.parametrize(
    ("code", "missing"),
    [("PGRST202", True), ("42883", True), ("42501", False), ("502", False)],
)
def test_a_missing_function_is_told_apart_as_a_schema_behind(code: str, missing: bool) -> None:
    """PostgREST's 'function not found' (PGRST202; Postgres' 42883) says a migration is missing:
    still a platform failure to every caller, but one that asking again cannot fix."""
    error = api_error("hitl_case_replies", APIError({"code": code, "message": "m"}))
    assert isinstance(error, SchemaBehind) is missing


def test_a_reply_without_the_contracts_shape_is_refused() -> None:
    with pytest.raises(ShapeError, match="session_id: Field required"):
        parse_opened(
            {
                "case_id": str(uuid.uuid4()),
                "expires_at": "2026-01-01T00:00:00+00:00",
                "existed": False,
                "status": "waiting",
            }
        )
    with pytest.raises(ShapeError, match="status: Input should be 'waiting'"):
        parse_opened(
            {
                "case_id": str(uuid.uuid4()),
                "session_id": str(uuid.uuid4()),
                "expires_at": "2026-01-01T00:00:00Z",
                "existed": False,
                "status": "sleeping",
            }
        )


def test_a_message_broadcast_is_parsed_and_is_answer_must_be_literally_true() -> None:
    case_id, message_id = uuid.uuid4(), uuid.uuid4()
    payload = {
        "id": str(message_id),
        "case_id": str(case_id),
        "sender_type": "human",
        "sender_id": None,
        "content": "Yes",
        "kind": "answer",
        "created_at": "2026-11-25T08:00:00.123456+00:00",
        "is_answer": "true",  # not a boolean: not the answer
    }
    message = parse_message(payload)
    assert (message.message_id, message.case_id, message.content) == (message_id, case_id, "Yes")
    assert message.is_answer is False
    assert parse_message({**payload, "is_answer": True}).is_answer is True
    with pytest.raises(ShapeError, match="sender_type: Input should be"):
        parse_message({**payload, "sender_type": "robot"})
    with pytest.raises(ShapeError, match=r"created_at: .*time zone"):
        parse_message({**payload, "created_at": "2026-11-25T08:00:00"})


def test_a_session_broadcast_without_expiry_is_parsed() -> None:
    session_id, case_id = uuid.uuid4(), uuid.uuid4()
    event = parse_session(
        {"session_id": str(session_id), "case_id": str(case_id), "status": "expired"}
    )
    assert (event.session_id, event.case_id, event.status, event.expires_at) == (
        session_id,
        case_id,
        "expired",
        None,
    )


def test_a_refused_join_is_told_apart_from_a_dropped_socket() -> None:
    refused = Exception('{"reason": "Unauthorized: You do not have permissions"}')
    system = Exception('{"channel": "x", "extension": "system", "message": "Token has expired"}')
    dropped = websockets.exceptions.ConnectionClosedError(None, None)
    assert refusal_reason(refused) == "Unauthorized: You do not have permissions"
    assert refusal_reason(system) == "Token has expired"
    assert refusal_reason(dropped) is None
    assert refusal_reason(Exception("not json")) is None
    assert refusal_reason(None) is None


def test_reconnect_delays_double_to_the_cap_and_stay_in_their_upper_half() -> None:
    tuning = RealtimeTuning(reconnect_initial_s=0.1, reconnect_max_s=2.0)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (40, 2.0)]:
        delays = [tuning.reconnect_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 1  # jittered


class EventKeyRpc:
    """A supabase client whose `rpc("hitl_event_key")` gives each outcome in turn."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def rpc(self, name: str, params: dict[str, Any]) -> EventKeyRpc:
        assert (name, params) == ("hitl_event_key", {})
        return self

    async def execute(self) -> SimpleNamespace:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return SimpleNamespace(data=outcome)


async def test_the_event_key_is_read_again_until_the_platform_answers() -> None:
    unavailable = APIError({"code": "PGRST002", "message": "schema cache", "hint": None})
    client = EventKeyRpc(httpx.ConnectError("refused"), unavailable, "ab" * 32)
    key = EventKey()
    assert not key.settled
    with stamina.set_testing(True, attempts=3):  # no waits; a fourth attempt would fail
        await load_event_key(client, key, timeout_s=1.0)  # type: ignore[arg-type]
    assert (key.key, client.calls, key.settled) == (bytes.fromhex("ab" * 32), 3, True)


async def test_a_schema_without_the_event_key_function_is_not_asked_again() -> None:
    missing = APIError({"code": "PGRST202", "message": "function not found", "hint": None})
    client = EventKeyRpc(missing)
    key = EventKey()
    await load_event_key(client, key, timeout_s=1.0)  # type: ignore[arg-type]
    # Settled without a key: events stay wake-ups, and whoever waits for the key goes on.
    assert (key.key, client.calls, key.settled) == (None, 1, True)


def test_an_answer_reply_names_its_wrong_field_and_defaults_its_optional_ones() -> None:
    reply = {
        "message_id": str(uuid.uuid4()),
        "case_id": str(uuid.uuid4()),
        "content": None,
        "created_at": "2026-11-25T08:00:00Z",
        "option": "Tuesday",  # without an option_index: no option was chosen
    }
    answer = parse_answer(reply)
    assert (answer.content, answer.kind, answer.option_index, answer.option) == (
        "",
        "answer",
        None,
        None,
    )
    chosen = parse_answer({**reply, "option_index": 1})
    assert (chosen.option_index, chosen.option) == (1, "Tuesday")
    with pytest.raises(ShapeError, match="option_index: Input should be greater than or equal"):
        parse_answer({**reply, "option_index": -1})
    with pytest.raises(ShapeError, match="option_index: Input should be a valid integer"):
        parse_answer({**reply, "option_index": True})
    with pytest.raises(ShapeError, match="message_id: Input should be a valid UUID"):
        parse_answer({**reply, "message_id": "not-a-uuid"})


def test_a_task_row_is_parsed_and_a_wrong_one_names_its_field() -> None:
    case_id, answer_id = uuid.uuid4(), uuid.uuid4()
    at = "2026-11-25T08:00:00+00:00"
    row = {
        "id": "task-1",
        "case_id": str(case_id),
        "tool": "ask_human",
        "call": None,
        "era": "2025-11-25",
        "status": "working",
        "created_at": at,
        "last_updated_at": at,
        "deadline_at": at,
        "ttl_ms": 60000,
        "poll_interval_ms": 1000,
        "now": at,
        "reply": {
            "answer": {"message_id": str(answer_id), "case_id": str(case_id), "created_at": at},
            "clarification": None,
        },
    }
    task = parse_task(row)
    assert (task.call, task.status, task.ttl_ms) == ({}, "working", 60000)
    assert isinstance(task.reply, Answer)
    assert task.reply.message_id == answer_id
    assert parse_task({**row, "reply": None}).reply is None
    with pytest.raises(ShapeError, match="status: Input should be"):
        parse_task({**row, "status": "sleeping"})
    with pytest.raises(ShapeError, match="now: Field required"):
        parse_task({k: v for k, v in row.items() if k != "now"})


class _JoiningPool:
    """A pool whose presence join confirms (presence_state first, as the server sends it) while
    something reads the count, before `attach` returns the channel."""

    def __init__(self, presence_reads: list[int | None]) -> None:
        self.reads = presence_reads
        self.presence: SupabasePresence | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.channel = SimpleNamespace(
            rt=SimpleNamespace(presence=SimpleNamespace(state={})), state="joined"
        )

    def spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def attach(self, topic: str, kind: str, listener: Any) -> Any:
        assert self.presence is not None
        self.presence.on_presence_sync()
        # e.g. the monitor's gauge, in the moment between the sync and attach's return
        self.reads.append(await self.presence.operators_online())
        return self.channel


async def test_a_presence_count_read_while_the_join_confirms_is_not_kept_once_joined() -> None:
    reads: list[int | None] = []
    pool = _JoiningPool(reads)
    presence = SupabasePresence(pool, ttl_s=60.0)  # type: ignore[arg-type]
    pool.presence = presence
    presence.start()
    try:
        async with asyncio.timeout(5):
            while not presence.joined:
                await presence.changed.wait()
        # The read during the join saw no channel yet; once joined, nobody is present is 0
        # (not the cached "unknown", which would make the relay wait for nobody).
        assert reads == [None]
        assert await presence.operators_online() == 0
    finally:
        for task in pool.tasks:
            task.cancel()
        await asyncio.gather(*pool.tasks, return_exceptions=True)
