"""Conversation continuity on the in-memory twin: one thread per call, the
clarification loop (`needs_info` → follow-up on the same case → answer), and the catch-up reads
that make sure a question back or an answer is never lost. Fake clock, no waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest
from mcp import Client
from relay_support import Rig, ask_request, asking, make_settings

from hitl_relay import metrics
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.config import Settings
from hitl_relay.errors import InvalidRequest
from hitl_relay.http_app import create_app, running
from hitl_relay.mcp_client import connect
from hitl_relay.metrics import MetricsObserver
from hitl_relay.models import parse_ask_request
from hitl_relay.ports import Backend, MessageKind
from hitl_relay.relay import Relay

CALL = "call-continuity"


@pytest.fixture
def rig() -> Rig:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    settings = make_settings()
    return Rig(
        platform,
        clock,
        Relay(
            platform.backend(), settings.relay_options(), clock=clock, observer=MetricsObserver()
        ),
        settings,
    )


def messages_of(platform: MemoryPlatform, case_id: UUID) -> list[tuple[str, str, str]]:
    return [(m.sender_type, m.kind, m.content) for m in platform.messages if m.case_id == case_id]


async def ask_and_get_asked_back(rig: Rig, clarification: str, **request: object) -> UUID:
    """One ask whose operator replies with a question; returns the case id."""
    async with asking(rig.relay, ask_request(call_id=CALL, **request)) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.ask_back(case_id, clarification)
        result = await call.wait()
    assert result.status == "needs_info"
    return case_id


# ------------------------------------------------------------------ one thread per call


async def test_second_question_in_a_call_carries_the_first_question_and_answer(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(call_id=CALL, question="Deliver Saturday?")) as (
        first,
    ):
        await rig.waiting()
        first_case = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(first_case, "Yes, before noon.")
        assert (await first.wait()).status == "answered"

    async with asking(rig.relay, ask_request(call_id=CALL, question="Gift wrap?")) as (second,):
        await rig.waiting()
        second_case = await rig.platform.operator.wait_for_case()
        thread = rig.platform.cases[second_case].metadata["thread"]
        await rig.platform.operator.answer(second_case, "Yes, 3 euros.")
        await second.wait()

    assert second_case != first_case
    assert [(e["case_id"], e["question"], e["answer"], e["status"]) for e in thread] == [
        (str(first_case), "Deliver Saturday?", "Yes, before noon.", "answered")
    ]
    assert [(x["sender_type"], x["kind"], x["content"]) for x in thread[0]["exchanges"]] == [
        ("human", "answer", "Yes, before noon.")
    ]
    assert "thread" not in rig.platform.cases[first_case].metadata  # nothing earlier in the call

    history = await rig.relay.call_history(CALL)
    assert history.status == "ok"
    assert [(e.case_id, e.question, e.answer) for e in history.entries] == [
        (str(first_case), "Deliver Saturday?", "Yes, before noon."),
        (str(second_case), "Gift wrap?", "Yes, 3 euros."),
    ]
    assert history.message == "2 question(s) asked to colleagues in this call, 2 answered."
    text = history.text()
    assert "1. Question: Deliver Saturday?" in text
    assert "Answer: Yes, 3 euros." in text


async def test_other_calls_do_not_enter_a_calls_thread(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(call_id="call-other", question="Other?")) as (call,):
        await rig.waiting()
        await rig.platform.operator.answer(await rig.platform.operator.wait_for_case(), "No")
        await call.wait()
    async with asking(rig.relay, ask_request(call_id=CALL, question="Mine?")) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "Yes")
        await call.wait()
    assert "thread" not in rig.platform.cases[case_id].metadata
    assert [e.question for e in (await rig.relay.call_history(CALL)).entries] == ["Mine?"]
    empty = await rig.relay.call_history("call-never-seen")
    assert (empty.status, empty.entries) == ("ok", [])
    assert empty.text() == "No questions were asked to colleagues in this call yet."


async def test_call_history_when_the_platform_is_down_says_so(rig: Rig) -> None:
    rig.platform.faults.rpc_down = True
    history = await rig.relay.call_history(CALL)
    assert history.status == "platform_unreachable"
    assert history.entries == []
    assert "cannot be reached" in history.text()


# ------------------------------------------------------------------ the clarification loop


async def test_operator_asking_back_ends_the_wait_with_needs_info_and_the_question(
    rig: Rig,
) -> None:
    before = metrics.REGISTRY.get_sample_value("hitl_invocations_total", {"outcome": "needs_info"})
    async with asking(rig.relay, ask_request(call_id=CALL, timeout_seconds=40)) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.clock.advance(3)
        await rig.platform.operator.ask_back(case_id, "  Which delivery address?  ")
        result = await call.wait()
    assert result.status == "needs_info"
    assert result.clarification == "Which delivery address?"
    assert result.message == "Which delivery address?"
    assert result.answer is None
    assert result.case_id == str(case_id)
    assert (result.waited_ms, result.deadline_s) == (3000, 40)
    assert "call ask_human again with case_id " + str(case_id) in result.text()
    assert rig.platform.session_of(case_id).status == "needs_info"
    assert rig.platform.cases[case_id].status == "open"  # still the operator's to answer
    assert rig.platform.joined_channels == 0
    after = metrics.REGISTRY.get_sample_value("hitl_invocations_total", {"outcome": "needs_info"})
    assert after == (before or 0) + 1


async def test_follow_up_with_the_callers_reply_continues_the_same_case_to_an_answer(
    rig: Rig,
) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which delivery address?")
    follow_up = ask_request(call_id=CALL, case_id=str(case_id), question="12 Main Street")
    async with asking(rig.relay, follow_up) as (call,):
        await rig.waiting()
        # The old question is replied to: the follow-up waits instead of returning needs_info.
        assert not call.done.is_set()
        assert set(rig.platform.subscriptions) == {case_id}
        await rig.platform.operator.answer(case_id, "Yes, Saturday to 12 Main Street works.")
        result = await call.wait()

    assert result.status == "answered"
    assert result.answer == "Yes, Saturday to 12 Main Street works."
    assert result.case_id == str(case_id)
    assert list(rig.platform.cases) == [case_id]  # no second case
    assert messages_of(rig.platform, case_id) == [
        ("human", "clarification", "Which delivery address?"),
        ("ai", "note", "12 Main Street"),
        ("human", "answer", "Yes, Saturday to 12 Main Street works."),
    ]
    sessions = [s for s in rig.platform.sessions.values() if s.case_id == case_id]
    assert [(s.status, s.follow_up) for s in sessions] == [
        ("needs_info", False),
        ("answered", True),
    ]
    (entry,) = (await rig.relay.call_history(CALL)).entries
    assert [(x.sender_type, x.kind) for x in entry.exchanges] == [
        ("human", "clarification"),
        ("ai", "note"),
        ("human", "answer"),
    ]
    assert "Colleague asked: Which delivery address?" in (await rig.relay.call_history(CALL)).text()


async def test_operator_may_ask_back_again_after_the_callers_reply(rig: Rig) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which address?")
    follow_up = ask_request(call_id=CALL, case_id=str(case_id), question="Main Street")
    async with asking(rig.relay, follow_up) as (call,):
        await rig.waiting()
        await rig.platform.operator.ask_back(case_id, "Which house number?")
        result = await call.wait()
    assert (result.status, result.clarification) == ("needs_info", "Which house number?")
    assert [s.status for s in rig.platform.sessions.values()] == ["needs_info", "needs_info"]


async def test_clarification_sent_before_the_join_is_confirmed_is_still_seen(rig: Rig) -> None:
    rig.platform.faults.hold_joins()
    async with asking(rig.relay, ask_request(call_id=CALL)) as (call,):
        await rig.platform.wait_until(lambda: len(rig.platform.cases) == 1)
        case_id = next(iter(rig.platform.cases))
        await rig.platform.operator.ask_back(case_id, "Which order number?")
        assert rig.platform.joins_confirmed == 0  # nobody heard the broadcast
        rig.platform.faults.release_joins()
        result = await call.wait()
    assert (result.status, result.clarification) == ("needs_info", "Which order number?")
    assert rig.platform.session_of(case_id).status == "needs_info"


async def test_clarification_sent_while_reconnecting_is_seen_by_the_catch_up(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(call_id=CALL)) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.platform.disconnect()
        await rig.platform.operator.ask_back(case_id, "Is the caller the account holder?")
        assert not call.done.is_set()
        rig.platform.reconnect()
        result = await call.wait()
    assert result.status == "needs_info"
    assert result.clarification == "Is the caller the account holder?"


async def test_an_answer_wins_over_a_clarification_found_by_the_catch_up(rig: Rig) -> None:
    rig.platform.faults.hold_joins()
    async with asking(rig.relay, ask_request(call_id=CALL)) as (call,):
        await rig.platform.wait_until(lambda: len(rig.platform.cases) == 1)
        case_id = next(iter(rig.platform.cases))
        rig.platform.post_message(case_id, "Which address?", kind="clarification")
        rig.platform.post_message(case_id, "Never mind: yes, we deliver.")
        rig.platform.faults.release_joins()
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Never mind: yes, we deliver.")
    assert rig.platform.session_of(case_id).status == "answered"


async def test_an_answer_committed_right_after_a_live_clarification_wins(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(call_id=CALL)) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        # Both land before the relay reads its queue: the clarification is no longer pending.
        rig.platform.post_message(case_id, "Which address?", kind="clarification")
        rig.platform.post_message(case_id, "Yes, any address.")
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Yes, any address.")


async def test_follow_up_arriving_after_the_operator_already_answered_returns_it_at_once(
    rig: Rig,
) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which address?")
    # The operator decides before the caller's reply comes back.
    await rig.platform.operator.answer(case_id, "Yes, whatever the address.")
    follow_up = ask_request(call_id=CALL, case_id=str(case_id), question="Main Street")
    async with asking(rig.relay, follow_up) as (call,):
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Yes, whatever the address.")
    assert result.waited_ms == 0  # no clock advance: the catch-up read returned it
    # The caller's reply is still recorded on the case for the operator.
    assert ("ai", "note", "Main Street") in messages_of(rig.platform, case_id)
    follow_session = next(s for s in rig.platform.sessions.values() if s.follow_up)
    assert follow_session.status == "answered"


async def test_follow_up_has_its_own_deadline_stated_in_the_result(rig: Rig) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which address?", timeout_seconds=60)
    follow_up = ask_request(
        call_id=CALL, case_id=str(case_id), question="Main Street", timeout_seconds=20
    )
    async with asking(rig.relay, follow_up) as (call,):
        await rig.waiting()
        assert rig.clock.next_wake() == pytest.approx(20)
        rig.clock.advance(20)
        result = await call.wait()
    assert result.status == "timeout"
    assert (result.deadline_s, result.waited_ms) == (20, 20_000)
    assert result.case_id == str(case_id)
    follow_session = next(s for s in rig.platform.sessions.values() if s.follow_up)
    assert follow_session.status == "timed_out"
    # get_human_answer still picks up the late answer of the continued case.
    await rig.platform.operator.answer(case_id, "Yes")
    late = await rig.relay.get_answer(str(case_id))
    assert (late.status, late.answer) == ("answered", "Yes")


async def test_cannot_answer_after_a_follow_up_is_unclear_with_the_operators_note(
    rig: Rig,
) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which address?")
    follow_up = ask_request(call_id=CALL, case_id=str(case_id), question="Abroad, in Norway")
    async with asking(rig.relay, follow_up) as (call,):
        await rig.waiting()
        await rig.platform.operator.answer(case_id, "Shipping team decides", kind="cannot_answer")
        result = await call.wait()
    assert result.status == "unclear_answer"
    assert result.case_id == str(case_id)
    assert result.message.startswith(rig.settings.fallback_unclear_answer)
    assert "Shipping team decides" in result.message


async def test_get_human_answer_reports_a_question_back_as_needs_info(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(call_id=CALL, timeout_seconds=10)) as (call,):
        await rig.waiting()
        rig.clock.advance(10)
        timed_out = await call.wait()
    case_id = UUID(str(timed_out.case_id))
    await rig.platform.operator.ask_back(case_id, "Which store?")
    result = await rig.relay.get_answer(str(case_id))
    assert (result.status, result.clarification, result.case_id) == (
        "needs_info",
        "Which store?",
        str(case_id),
    )


async def test_follow_up_skips_the_no_operator_shortcut_so_the_reply_is_recorded() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock, operators=1)
    settings = make_settings(no_operator_answers_at_once=True)
    rig = Rig(
        platform,
        clock,
        Relay(
            platform.backend(), settings.relay_options(), clock=clock, observer=MetricsObserver()
        ),
        settings,
    )
    case_id = await ask_and_get_asked_back(rig, "Which address?")
    await platform.operator.go_offline("operator-0")
    clock.advance(1)  # past the presence cache
    follow_up = ask_request(call_id=CALL, case_id=str(case_id), question="Main Street")
    async with asking(rig.relay, follow_up) as (call,):
        await rig.waiting()
        await platform.operator.answer(case_id, "Yes")
        result = await call.wait()
    assert result.status == "answered"
    assert ("ai", "note", "Main Street") in messages_of(platform, case_id)


# ------------------------------------------------------------------ follow-ups refused


async def test_follow_up_on_an_unknown_case_is_refused_naming_case_id(rig: Rig) -> None:
    request = ask_request(call_id=CALL, case_id=str(uuid4()), question="Main Street")
    with pytest.raises(InvalidRequest) as raised:
        await rig.relay.ask(request)
    assert (raised.value.field, raised.value.rule) == ("case_id", "no such case")
    assert rig.platform.joined_channels == 0


async def test_follow_up_from_another_call_is_refused(rig: Rig) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which address?")
    request = ask_request(call_id="call-intruder", case_id=str(case_id), question="Main Street")
    with pytest.raises(InvalidRequest) as raised:
        await rig.relay.ask(request)
    assert (raised.value.field, raised.value.rule) == ("case_id", "belongs to another call")
    assert ("ai", "note", "Main Street") not in messages_of(rig.platform, case_id)


async def test_follow_up_on_an_expired_case_is_refused(rig: Rig) -> None:
    case_id = await ask_and_get_asked_back(rig, "Which address?")
    rig.clock.advance(3601)  # past the case's answerable window (default 1 h)
    assert rig.platform.expire_sessions() >= 1
    request = ask_request(call_id=CALL, case_id=str(case_id), question="Main Street")
    with pytest.raises(InvalidRequest) as raised:
        await rig.relay.ask(request)
    assert (raised.value.field, raised.value.rule) == (
        "case_id",
        "is expired and can no longer be continued",
    )


def test_a_malformed_case_id_is_refused_before_anything_happens() -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_ask_request(
            {"question": "Main St", "session_id": "s", "call_id": "c", "agent_id": "a",
             "caseId": "case-7"}
        )  # fmt: skip
    assert (raised.value.field, raised.value.rule) == ("case_id", "must be a case id (a UUID)")


# ------------------------------------------------------------------ over MCP, as the agent

KEY = "continuity-key-0123456789"


@asynccontextmanager
async def mcp_client(platform: MemoryPlatform, mode: str) -> AsyncIterator[Client]:
    """The HTTP app on a free port with the twin behind it, and the SDK's client as the agent."""
    config: Settings = make_settings(api_keys=KEY)

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    async with (
        running(create_app(config, backend=backend)) as url,
        connect(url + "/mcp", KEY, mode=mode) as client,
    ):
        yield client


def tool_args(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "question": "Can we deliver order 4411 on Saturday?",
        "session_id": "session-1",
        "call_id": CALL,
        "agent_id": "agent-1",
    }
    values.update(overrides)
    return values


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


async def answer_when_waiting(
    platform: MemoryPlatform, text: str, *, kind: MessageKind = "answer", waiting: int = 1
) -> UUID:
    """As the operator: once the relay waits on the newest case's channel, post `text`."""
    await platform.wait_until(
        lambda: platform.joined_channels == 1 and len(platform.sessions) >= waiting
    )
    (case_id,) = platform.subscriptions
    platform.post_message(case_id, text, kind=kind)
    return case_id


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_needs_info_round_trip_through_the_mcp_client(mode: str) -> None:
    platform = MemoryPlatform()
    async with mcp_client(platform, mode) as client, anyio.create_task_group() as tg:
        tg.start_soon(lambda: answer_when_waiting(platform, "Which address?", kind="clarification"))
        asked = await client.call_tool("ask_human", tool_args(timeout_seconds=30))
        first = asked.structured_content
        assert first is not None
        case_id = first["case_id"]
        assert (first["status"], first["clarification"], first["deadline_s"]) == (
            "needs_info",
            "Which address?",
            30,
        )
        assert "Which address?" in text_of(asked)
        assert case_id in text_of(asked)

        tg.start_soon(lambda: answer_when_waiting(platform, "Yes, to Main Street.", waiting=2))
        followed = await client.call_tool(
            "ask_human", tool_args(case_id=case_id, question="12 Main Street")
        )
    assert followed.is_error is False
    assert text_of(followed) == "Yes, to Main Street."
    assert followed.structured_content is not None
    assert followed.structured_content["status"] == "answered"
    assert followed.structured_content["case_id"] == case_id
    assert followed.structured_content["deadline_s"] == 45
    assert [m.content for m in platform.messages] == [
        "Which address?",
        "12 Main Street",
        "Yes, to Main Street.",
    ]


async def test_get_call_history_over_mcp_returns_the_thread_as_text_and_structured() -> None:
    platform = MemoryPlatform()
    async with mcp_client(platform, "auto") as client, anyio.create_task_group() as tg:
        tg.start_soon(lambda: answer_when_waiting(platform, "Yes, Saturday."))
        await client.call_tool("ask_human", tool_args(question="Deliver Saturday?"))
        tg.start_soon(
            lambda: answer_when_waiting(platform, "Which colour?", kind="clarification", waiting=2)
        )
        asked = await client.call_tool("ask_human", tool_args(question="Gift wrap?"))
        history = await client.call_tool("get_call_history", {"callId": CALL})
        other = await client.call_tool("get_call_history", {"call_id": "call-elsewhere"})
        invalid = await client.call_tool("get_call_history", {"call_id": ""})
    assert asked.structured_content is not None
    assert asked.structured_content["status"] == "needs_info"
    assert history.is_error is False
    structured = history.structured_content
    assert structured is not None
    assert structured["status"] == "ok"
    assert structured["call_id"] == CALL
    entries = structured["entries"]
    assert [(e["question"], e["status"], e["answer"]) for e in entries] == [
        ("Deliver Saturday?", "answered", "Yes, Saturday."),
        ("Gift wrap?", "open", None),
    ]
    assert [(x["sender_type"], x["kind"], x["content"]) for x in entries[1]["exchanges"]] == [
        ("human", "clarification", "Which colour?")
    ]
    text = text_of(history)
    assert "1. Question: Deliver Saturday?" in text
    assert "Answer: Yes, Saturday." in text
    assert "Colleague asked: Which colour?" in text
    assert other.structured_content is not None
    assert other.structured_content["entries"] == []
    assert invalid.is_error is True
    assert "call_id: must be 1 to 128 printable characters" in text_of(invalid)


async def test_tool_schemas_tell_the_agent_about_follow_ups_and_the_history() -> None:
    from hitl_relay.composition import build_relay
    from hitl_relay.mcp_server import RelayMcpServer

    relay = build_relay(MemoryPlatform().backend(), make_settings())
    async with Client(RelayMcpServer(lambda: relay).server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    ask = tools["ask_human"]
    assert "needs_info" in (ask.description or "")
    assert "case_id" in (ask.description or "")
    assert "needs_info" in ask.input_schema["properties"]["case_id"]["description"]
    assert "case_id" not in ask.input_schema["required"]
    assert ask.output_schema is not None
    assert {"clarification", "deadline_s"} <= set(ask.output_schema["properties"])
    history = tools["get_call_history"]
    assert history.input_schema["required"] == ["call_id"]
    assert history.output_schema is not None
    assert "entries" in history.output_schema["properties"]


def test_a_retell_custom_function_follow_up_carries_its_case_id() -> None:
    from hitl_relay.retell import retell_arguments

    case_id = str(uuid4())
    body = {
        "name": "ask_human",
        "call": {"call_id": CALL, "agent_id": "agent-1"},
        "args": {"question": "12 Main Street", "case_id": case_id},
    }
    request = parse_ask_request(retell_arguments(body))
    assert (request.case_id, request.call_id, request.question) == (case_id, CALL, "12 Main Street")
    camel = parse_ask_request(
        retell_arguments({**body, "args": {"question": "x", "caseId": case_id}})
    )
    assert camel.case_id == case_id
