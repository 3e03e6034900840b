"""The ports' contract for conversation continuity, against every adapter harness:
`continue_case` (same case, new session, idempotent, named refusals), the pending clarification
as `reply` returns it (newest unanswered question back; an answer wins; a reply clears it),
`call_history`, and the broadcasts the clarification loop relies on (kind and is_answer of a
question back and of the caller's reply).
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import anyio
import pytest
from contract_support import ContractPorts

from hitl_relay.errors import InvalidRequest
from hitl_relay.ports import (
    Answer,
    Clarification,
    ContinueCase,
    HumanMessage,
    OpenCase,
    OpenedCase,
    Subscription,
)


def open_request(call_id: str, **overrides: Any) -> OpenCase:
    values: dict[str, Any] = {
        "case_id": uuid.uuid4(),
        "question": f"May we deliver on Saturday? ({uuid.uuid4().hex[:8]})",
        "mcp_session_id": "session-1",
        "retell_call_id": call_id,
        "retell_agent_id": "agent-1",
        "timeout_seconds": 30,
    }
    values.update(overrides)
    return OpenCase(**values)


def continue_request(opened: OpenedCase, call_id: str, **overrides: Any) -> ContinueCase:
    values: dict[str, Any] = {
        "case_id": opened.case_id,
        "question": "12 Main Street",
        "mcp_session_id": "session-1",
        "retell_call_id": call_id,
        "retell_agent_id": "agent-1",
        "timeout_seconds": 20,
    }
    values.update(overrides)
    return ContinueCase(**values)


@pytest.fixture
def call_id() -> str:
    return f"call-{uuid.uuid4().hex[:8]}"


async def next_message(sub: Subscription, within_s: float = 5.0) -> HumanMessage:
    with anyio.fail_after(within_s):
        while True:
            event = await sub.receive()
            if isinstance(event, HumanMessage):
                return event


async def test_continue_case_opens_a_new_waiting_session_on_the_same_case(
    ports: ContractPorts, call_id: str
) -> None:
    opened = await ports.store.open_case(open_request(call_id))
    await ports.operator.answer(opened.case_id, "Which address?", kind="clarification")
    assert await ports.store.close_session(opened.session_id, "needs_info") is True

    continued = await ports.store.continue_case(continue_request(opened, call_id))

    assert continued.case_id == opened.case_id
    assert continued.session_id != opened.session_id
    assert (continued.existed, continued.status) == (False, "waiting")
    assert continued.expires_at.tzinfo is not None
    # The new session is the one a close moves; the old one stays needs_info.
    assert await ports.store.close_session(continued.session_id, "timed_out") is True
    assert await ports.store.close_session(opened.session_id, "answered") is False


async def test_a_retried_continue_case_returns_the_first_session(
    ports: ContractPorts, call_id: str
) -> None:
    opened = await ports.store.open_case(open_request(call_id))
    first = await ports.store.continue_case(continue_request(opened, call_id))
    again = await ports.store.continue_case(continue_request(opened, call_id))
    assert (again.case_id, again.session_id, again.existed) == (
        first.case_id,
        first.session_id,
        True,
    )
    (entry,) = await ports.store.call_history(call_id)
    assert [(m.sender_type, m.content) for m in entry.exchanges] == [("ai", "12 Main Street")]


async def test_the_same_words_answering_a_second_question_back_are_a_new_reply(
    ports: ContractPorts, call_id: str
) -> None:
    opened = await ports.store.open_case(open_request(call_id))
    await ports.operator.answer(opened.case_id, "Is it the blue one?", kind="clarification")
    first = await ports.store.continue_case(continue_request(opened, call_id, question="Yes"))
    await ports.operator.answer(opened.case_id, "And in size M?", kind="clarification")
    second = await ports.store.continue_case(continue_request(opened, call_id, question="Yes"))

    assert second.existed is False
    assert second.session_id != first.session_id
    # The second question is answered by the second reply: nothing is pending any more.
    assert await ports.store.reply(opened.case_id) is None
    # A retry of the second reply is still the same session.
    again = await ports.store.continue_case(continue_request(opened, call_id, question="Yes"))
    assert (again.session_id, again.existed) == (second.session_id, True)
    (entry,) = await ports.store.call_history(call_id)
    assert [(m.sender_type, m.content) for m in entry.exchanges] == [
        ("human", "Is it the blue one?"),
        ("ai", "Yes"),
        ("human", "And in size M?"),
        ("ai", "Yes"),
    ]


@pytest.mark.parametrize(
    ("case", "caller", "rule"),
    [
        ("unknown", "same", "no such case"),
        ("known", "other", "belongs to another call"),
    ],
    ids=["unknown case", "another call's case"],
)
async def test_continue_case_refusals_name_the_case_id(
    ports: ContractPorts, call_id: str, case: str, caller: str, rule: str
) -> None:
    opened = await ports.store.open_case(open_request(call_id))
    target = opened if case == "known" else OpenedCase(
        uuid.uuid4(), opened.session_id, opened.expires_at, False, "waiting"
    )  # fmt: skip
    request = continue_request(target, call_id if caller == "same" else "call-intruder")
    with pytest.raises(InvalidRequest) as raised:
        await ports.store.continue_case(request)
    assert (raised.value.field, raised.value.rule) == ("case_id", rule)
    (entry,) = await ports.store.call_history(call_id)
    assert entry.exchanges == ()  # nothing written


async def test_the_pending_clarification_follows_questions_replies_and_the_answer(
    ports: ContractPorts, call_id: str
) -> None:
    opened = await ports.store.open_case(open_request(call_id))
    assert await ports.store.reply(opened.case_id) is None

    first = await ports.operator.answer(opened.case_id, "Which address?", kind="clarification")
    pending = await ports.store.reply(opened.case_id)
    assert isinstance(pending, Clarification)
    assert (pending.message_id, pending.case_id, pending.content) == (
        first,
        opened.case_id,
        "Which address?",
    )
    assert pending.created_at.tzinfo is not None

    await ports.store.continue_case(continue_request(opened, call_id))
    assert await ports.store.reply(opened.case_id) is None  # replied to: no longer pending

    second = await ports.operator.answer(opened.case_id, "Which floor?", kind="clarification")
    pending = await ports.store.reply(opened.case_id)
    assert isinstance(pending, Clarification)
    assert pending.message_id == second

    await ports.operator.answer(opened.case_id, "Yes, we deliver.")
    answer = await ports.store.reply(opened.case_id)
    assert isinstance(answer, Answer)
    assert answer.content == "Yes, we deliver."


async def test_reply_is_the_answer_else_the_pending_clarification_in_one_read(
    ports: ContractPorts, call_id: str
) -> None:
    assert await ports.store.reply(uuid.uuid4()) is None
    opened = await ports.store.open_case(open_request(call_id))
    assert await ports.store.reply(opened.case_id) is None

    asked = await ports.operator.answer(opened.case_id, "Which address?", kind="clarification")
    pending = await ports.store.reply(opened.case_id)
    assert isinstance(pending, Clarification)
    assert (pending.message_id, pending.content) == (asked, "Which address?")

    # An answer wins even over a clarification nobody replied to.
    answered = await ports.operator.answer(opened.case_id, "Yes, we deliver.")
    reply = await ports.store.reply(opened.case_id)
    assert isinstance(reply, Answer)
    assert (reply.message_id, reply.content) == (answered, "Yes, we deliver.")


async def test_call_history_lists_the_calls_cases_with_their_exchanges(
    ports: ContractPorts, call_id: str
) -> None:
    first = await ports.store.open_case(open_request(call_id, question="First?"))
    await ports.operator.answer(first.case_id, "Which address?", kind="clarification")
    await ports.store.continue_case(continue_request(first, call_id))
    await ports.operator.answer(first.case_id, "Yes.")
    second = await ports.store.open_case(open_request(call_id, question="Second?"))
    await ports.store.open_case(open_request("call-elsewhere-" + call_id, question="Other?"))

    history = await ports.store.call_history(call_id)

    assert [(e.case_id, e.question, e.status) for e in history] == [
        (first.case_id, "First?", "answered"),
        (second.case_id, "Second?", "open"),
    ]
    one, two = history
    assert (one.answer, one.answer_kind) == ("Yes.", "answer")
    assert one.answered_at is not None
    assert one.asked_at <= two.asked_at
    assert [(m.sender_type, m.kind, m.content) for m in one.exchanges] == [
        ("human", "clarification", "Which address?"),
        ("ai", "note", "12 Main Street"),
        ("human", "answer", "Yes."),
    ]
    assert (two.answer, two.answer_kind, two.answered_at, two.exchanges) == (None, None, None, ())
    assert await ports.store.call_history("call-never-seen-" + call_id) == []


async def test_a_question_back_and_the_callers_reply_are_broadcast_but_are_not_answers(
    ports: ContractPorts, call_id: str
) -> None:
    opened = await ports.store.open_case(open_request(call_id))
    async with ports.channel.subscribe(opened.case_id) as sub:
        await ports.operator.answer(opened.case_id, "Which address?", kind="clarification")
        asked = await next_message(sub)
        await ports.store.continue_case(continue_request(opened, call_id))
        replied = await next_message(sub)
    assert (asked.sender_type, asked.kind, asked.content, asked.is_answer) == (
        "human",
        "clarification",
        "Which address?",
        False,
    )
    assert (replied.sender_type, replied.kind, replied.content, replied.is_answer) == (
        "ai",
        "note",
        "12 Main Street",
        False,
    )
    assert isinstance(asked.message_id, UUID)
