"""The no-operator part of the `CaseStore` contract, against every adapter harness: with nobody
on duty the question is recorded all the same (the case open in the queue, its session closed as
`no_operator`), and `case_status` tells an unknown case from one without an answer."""

from __future__ import annotations

import uuid

import pytest
from contract_support import ContractPorts
from test_ports_contract import open_request

from hitl_relay.errors import InvalidRequest


async def test_nobody_on_duty_records_the_case_with_its_session_closed_as_no_operator(
    ports: ContractPorts,
) -> None:
    request = open_request()
    opened = await ports.store.open_case_no_operator(request)
    assert (opened.case_id, opened.existed, opened.status) == (
        request.case_id,
        False,
        "no_operator",
    )
    assert await ports.store.case_status(opened.case_id) == "open"
    # Nobody waits on it: closing it again changes nothing.
    assert await ports.store.close_session(opened.session_id, "timed_out", {}) is False


async def test_an_answer_given_later_is_the_cases_answer(ports: ContractPorts) -> None:
    opened = await ports.store.open_case_no_operator(open_request())
    assert await ports.store.reply(opened.case_id) is None
    message_id = await ports.operator.answer(opened.case_id, "Yes, refund approved")
    answer = await ports.store.reply(opened.case_id)
    assert answer is not None
    assert (answer.message_id, answer.content) == (message_id, "Yes, refund approved")


async def test_a_retry_with_nobody_on_duty_names_the_same_case(ports: ContractPorts) -> None:
    first = open_request()
    a = await ports.store.open_case_no_operator(first)
    b = await ports.store.open_case_no_operator(
        open_request(question=first.question, retell_call_id=first.retell_call_id)
    )
    assert (b.case_id, b.session_id, b.existed, b.status) == (
        a.case_id,
        a.session_id,
        True,
        "no_operator",
    )


async def test_a_retry_after_the_answer_is_not_closed_as_no_operator(
    ports: ContractPorts,
) -> None:
    first = open_request()
    a = await ports.store.open_case_no_operator(first)
    await ports.operator.answer(a.case_id, "Yes")
    b = await ports.store.open_case_no_operator(
        open_request(question=first.question, retell_call_id=first.retell_call_id)
    )
    assert (b.case_id, b.status) == (a.case_id, "waiting")
    assert await ports.store.close_session(b.session_id, "answered", {}) is True


async def test_a_session_another_relay_waits_on_stays_waiting(ports: ContractPorts) -> None:
    first = open_request()
    a = await ports.store.open_case(first)
    b = await ports.store.open_case_no_operator(
        open_request(question=first.question, retell_call_id=first.retell_call_id)
    )
    assert (b.case_id, b.session_id, b.status) == (a.case_id, a.session_id, "waiting")
    assert await ports.store.close_session(a.session_id, "answered", {}) is True


async def test_invalid_input_is_refused_as_open_case_refuses_it(ports: ContractPorts) -> None:
    request = open_request(priority=9)
    with pytest.raises(InvalidRequest) as e:
        await ports.store.open_case_no_operator(request)
    assert e.value.field == "priority"
    assert await ports.store.case_status(request.case_id) is None


async def test_the_status_of_an_unknown_case_is_none(ports: ContractPorts) -> None:
    assert await ports.store.case_status(uuid.uuid4()) is None
