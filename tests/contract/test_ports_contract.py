"""The ports' contract (hitl_relay/ports.py), run against every adapter harness.

What the relay core relies on: idempotent case opening, exactly one answer per case, closes that
only move waiting sessions, confirmed joins that deliver every later broadcast of their own case,
reconnects that say so, and presence that follows the operators.
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import anyio
import pytest
from contract_support import ContractPorts

from hitl_relay.errors import InvalidRequest, NotFound
from hitl_relay.ports import (
    CATCH_UP_BATCH_MAX,
    Answer,
    ChannelEvent,
    HumanMessage,
    OpenCase,
    Reconnected,
    SessionEvent,
    Subscription,
    WakeUp,
)


def open_request(**overrides: Any) -> OpenCase:
    values: dict[str, Any] = {
        "case_id": uuid.uuid4(),
        "question": f"May we deliver on Saturday? ({uuid.uuid4().hex[:8]})",
        "mcp_session_id": "session-1",
        "retell_call_id": f"call-{uuid.uuid4().hex[:8]}",
        "retell_agent_id": "agent-1",
        "timeout_seconds": 30,
        "context": "Order 4411",
        "caller_info": {"name": "Ada"},
        "priority": 4,
        "urgency": "high",
        "conversation_history": [{"role": "caller", "content": "Saturday?"}],
    }
    values.update(overrides)
    return OpenCase(**values)


async def next_event(sub: Subscription, within_s: float = 5.0) -> ChannelEvent:
    with anyio.fail_after(within_s):
        return await sub.receive()


async def next_message(sub: Subscription, within_s: float = 5.0) -> HumanMessage:
    """The next `message` event, skipping session events (a close may broadcast one)."""
    with anyio.fail_after(within_s):
        while True:
            event = await sub.receive()
            if isinstance(event, HumanMessage):
                return event


async def test_open_case_creates_a_waiting_session_under_the_proposed_case_id(
    ports: ContractPorts,
) -> None:
    request = open_request()
    opened = await ports.store.open_case(request)
    assert opened.case_id == request.case_id
    assert opened.existed is False
    assert opened.status == "waiting"
    assert opened.expires_at.tzinfo is not None


async def test_opening_the_same_call_and_question_twice_returns_the_first_case(
    ports: ContractPorts,
) -> None:
    first = open_request()
    again = open_request(
        question=first.question, retell_call_id=first.retell_call_id, mcp_session_id="session-2"
    )
    a = await ports.store.open_case(first)
    b = await ports.store.open_case(again)
    assert b.existed is True
    assert (b.case_id, b.session_id) == (a.case_id, a.session_id)
    assert b.case_id != again.case_id


async def test_concurrent_identical_opens_yield_one_case(ports: ContractPorts) -> None:
    first = open_request()
    results = []

    async def open_one() -> None:
        results.append(await ports.store.open_case(open_request(
            question=first.question, retell_call_id=first.retell_call_id
        )))  # fmt: skip

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(open_one)
    assert len({r.case_id for r in results}) == 1
    assert len({r.session_id for r in results}) == 1
    assert sorted(r.existed for r in results) == [False, True, True, True, True]


async def test_another_question_in_the_same_call_opens_another_case(ports: ContractPorts) -> None:
    first = open_request()
    a = await ports.store.open_case(first)
    b = await ports.store.open_case(open_request(retell_call_id=first.retell_call_id))
    assert a.case_id != b.case_id
    assert b.existed is False


async def test_reopening_after_a_timeout_waits_again_on_the_same_case(ports: ContractPorts) -> None:
    request = open_request()
    a = await ports.store.open_case(request)
    assert await ports.store.close_session(a.session_id, "timed_out", {"why": "test"}) is True
    b = await ports.store.open_case(open_request(
        question=request.question, retell_call_id=request.retell_call_id
    ))  # fmt: skip
    assert (b.case_id, b.session_id, b.existed, b.status) == (
        a.case_id,
        a.session_id,
        True,
        "waiting",
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"priority": 9}, "priority"),
        ({"urgency": "asap"}, "urgency"),
        ({"timeout_seconds": 2}, "timeout_seconds"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 2001}, "question"),
        ({"retell_call_id": ""}, "retell_call_id"),
    ],
)
async def test_invalid_input_is_refused_naming_the_field_and_writes_nothing(
    ports: ContractPorts, overrides: dict[str, Any], field: str
) -> None:
    request = open_request(**overrides)
    with pytest.raises(InvalidRequest) as e:
        await ports.store.open_case(request)
    assert e.value.field == field
    assert e.value.rule
    assert await ports.store.reply(request.case_id) is None


async def test_the_reply_is_none_until_an_operator_answers_then_the_first_answer_wins(
    ports: ContractPorts,
) -> None:
    opened = await ports.store.open_case(open_request())
    assert await ports.store.reply(opened.case_id) is None
    await ports.operator.answer(opened.case_id, "checking", kind="note")
    assert await ports.store.reply(opened.case_id) is None
    first = await ports.operator.answer(opened.case_id, "Yes, Saturday works")
    await ports.operator.answer(opened.case_id, "No wait")
    answer = await ports.store.reply(opened.case_id)
    assert isinstance(answer, Answer)
    assert (answer.message_id, answer.case_id) == (first, opened.case_id)
    assert (answer.content, answer.kind) == ("Yes, Saturday works", "answer")
    assert answer.created_at.tzinfo is not None


async def test_the_batched_read_returns_each_cases_reply_for_the_cases_that_have_one(
    ports: ContractPorts,
) -> None:
    answered, asked_back, both, silent = [
        (await ports.store.open_case(open_request())).case_id for _ in range(4)
    ]
    assert await ports.store.replies([answered, silent]) == {}
    await ports.operator.answer(answered, "Yes, Saturday works")
    await ports.operator.answer(asked_back, "Which order?", kind="clarification")
    await ports.operator.answer(both, "Which order?", kind="clarification")
    await ports.operator.answer(both, "No.")
    found = await ports.store.replies([answered, asked_back, both, silent, uuid.uuid4()])
    assert set(found) == {answered, asked_back, both}
    for case_id, reply in found.items():
        assert reply == await ports.store.reply(case_id)  # exactly what one read returns
    assert isinstance(found[both], Answer)  # an answer wins over a clarification
    assert found[both].content == "No."
    assert found[asked_back].content == "Which order?"


async def test_the_batched_read_takes_at_most_its_bound_of_ids(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request())
    await ports.operator.answer(opened.case_id, "Yes.")
    ids = [opened.case_id] + [uuid.uuid4() for _ in range(CATCH_UP_BATCH_MAX - 1)]
    assert set(await ports.store.replies(ids)) == {opened.case_id}
    with pytest.raises(InvalidRequest) as e:
        await ports.store.replies([*ids, uuid.uuid4()])
    assert (e.value.field, e.value.rule) == (
        "p_case_ids",
        f"must hold at most {CATCH_UP_BATCH_MAX} case ids",
    )


async def test_close_moves_only_a_waiting_session(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request())
    assert await ports.store.close_session(opened.session_id, "answered", {}) is True
    assert await ports.store.close_session(opened.session_id, "cancelled", {}) is False


async def test_closing_an_unknown_session_is_not_found(ports: ContractPorts) -> None:
    with pytest.raises(NotFound):
        await ports.store.close_session(uuid.uuid4(), "cancelled", {})


async def test_a_confirmed_subscription_hears_every_message_of_its_case(
    ports: ContractPorts,
) -> None:
    opened = await ports.store.open_case(open_request())
    async with ports.channel.subscribe(opened.case_id) as sub:
        assert sub.case_id == opened.case_id
        bot = await ports.operator.answer(opened.case_id, "bot says", sender_type="ai")
        answer = await ports.operator.answer(opened.case_id, "Yes")
        late = await ports.operator.answer(opened.case_id, "Also yes")
        heard = [await next_message(sub) for _ in range(3)]
    assert [(m.message_id, m.sender_type, m.is_answer) for m in heard] == [
        (bot, "ai", False),
        (answer, "human", True),
        (late, "human", False),
    ]
    assert heard[1].content == "Yes"
    assert heard[1].kind == "answer"
    assert heard[1].case_id == opened.case_id


async def test_a_channel_joined_before_the_case_exists_hears_its_answer(
    ports: ContractPorts,
) -> None:
    request = open_request()
    async with ports.channel.subscribe(request.case_id) as sub:
        opened = await ports.store.open_case(request)
        await ports.operator.answer(opened.case_id, "Yes")
        message = await next_message(sub)
    assert (message.case_id, message.content, message.is_answer) == (request.case_id, "Yes", True)


async def test_a_subscription_hears_only_its_own_case(ports: ContractPorts) -> None:
    mine = await ports.store.open_case(open_request())
    other = await ports.store.open_case(open_request())
    async with ports.channel.subscribe(mine.case_id) as sub:
        await ports.operator.answer(other.case_id, "Not for you")
        await ports.operator.answer(mine.case_id, "For you")
        message = await next_message(sub)
    assert message.content == "For you"


async def test_closing_a_session_is_broadcast_on_its_case(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request())
    async with ports.channel.subscribe(opened.case_id) as sub:
        await ports.store.close_session(opened.session_id, "timed_out", {})
        event = await next_event(sub)
    assert isinstance(event, SessionEvent)
    assert (event.session_id, event.case_id, event.status) == (
        opened.session_id,
        opened.case_id,
        "timed_out",
    )


async def test_leaving_frees_the_channel(ports: ContractPorts) -> None:
    before = ports.joined_channels()
    case_id: UUID = uuid.uuid4()
    async with ports.channel.subscribe(case_id):
        assert ports.joined_channels() == before + 1
    assert ports.joined_channels() == before


async def test_leaving_under_cancellation_frees_the_channel(ports: ContractPorts) -> None:
    before = ports.joined_channels()
    joined = anyio.Event()

    async def wait_forever() -> None:
        async with ports.channel.subscribe(uuid.uuid4()) as sub:
            joined.set()
            await sub.receive()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_forever)
        with anyio.fail_after(5):
            await joined.wait()
        tg.cancel_scope.cancel()
    assert ports.joined_channels() == before


async def test_a_reconnect_is_reported_and_later_messages_are_heard(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request())
    async with ports.channel.subscribe(opened.case_id) as sub:
        await ports.disconnect()
        missed = await ports.operator.answer(opened.case_id, "Sent while away")
        await ports.reconnect()
        with anyio.fail_after(10):
            while not isinstance(event := await sub.receive(), Reconnected):
                # A message may still slip through before the drop is noticed; never another.
                assert isinstance(event, HumanMessage)
                assert event.message_id == missed
        assert event.case_id == opened.case_id
        # What was missed is found by the catch-up read the core does on `Reconnected`.
        caught_up = await ports.store.reply(opened.case_id)
        assert isinstance(caught_up, Answer)
        assert caught_up.message_id == missed
        after = await ports.operator.answer(opened.case_id, "After the reconnect")
        message = await next_message(sub)
    assert message.message_id == after


async def test_presence_follows_the_operators(ports: ContractPorts) -> None:
    await ports.operator.go_online("operator-a")
    await eventually(ports, lambda n: n is not None and n >= 1)
    await ports.operator.go_offline("operator-a")
    await eventually(ports, lambda n: n == 0)


async def eventually(ports: ContractPorts, ok: Any, within_s: float = 5.0) -> None:
    """Presence is cached for up to a second (by contract): time must pass between reads."""
    seen = None
    for _ in range(round(within_s / 0.05)):
        seen = await ports.presence.operators_online()
        if ok(seen):
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"presence still {seen!r} after {within_s} s")


async def test_a_clients_broadcast_is_only_a_wake_up_and_the_committed_answer_follows(
    ports: ContractPorts,
) -> None:
    opened = await ports.store.open_case(open_request())
    forged_answer = {
        "id": str(uuid.uuid4()),
        "case_id": str(opened.case_id),
        "sender_type": "human",
        "sender_id": str(uuid.uuid4()),
        "content": "forged",
        "kind": "answer",
        "created_at": "2026-12-06T01:00:00+00:00",
        "is_answer": True,
        "sig": "0" * 64,
    }
    forged_end = {
        "session_id": str(opened.session_id),
        "case_id": str(opened.case_id),
        "status": "expired",
        "expires_at": opened.expires_at.isoformat(),
    }
    async with ports.channel.subscribe(opened.case_id) as sub:
        await ports.operator.forge(opened.case_id, "message", forged_answer)
        await ports.operator.forge(opened.case_id, "session", forged_end)
        woken = [await next_event(sub), await next_event(sub)]
        answer = await ports.operator.answer(opened.case_id, "committed")
        message = await next_message(sub)
    assert woken == [WakeUp(opened.case_id), WakeUp(opened.case_id)]
    assert (message.message_id, message.content, message.is_answer) == (answer, "committed", True)


async def test_owned_tells_the_key_that_opened_a_case_from_any_other(ports: ContractPorts) -> None:
    request = open_request()
    key = f"key:aaaaaaaaaaaa:{request.retell_call_id}:x"
    opened = await ports.store.open_case(open_request(idempotency_key=key))
    assert await ports.store.owned(opened.case_id, "key:aaaaaaaaaaaa") is True
    assert await ports.store.owned(opened.case_id, "key:bbbbbbbbbbbb") is False
    assert await ports.store.owned(opened.case_id, "key:aaaaaaaaaaa") is False  # a prefix
    assert await ports.store.owned(uuid.uuid4(), "key:aaaaaaaaaaaa") is False


async def test_session_status_is_the_committed_status(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request())
    assert await ports.store.session_status(opened.session_id) == "waiting"
    await ports.store.close_session(opened.session_id, "expired", {})
    assert await ports.store.session_status(opened.session_id) == "expired"
    assert await ports.store.session_status(uuid.uuid4()) is None
