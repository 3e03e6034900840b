"""The session recovery contract (`SessionRecovery.recover_sessions`), run against every adapter.

A relay that starts again closes the sessions its previous process was waiting on: past their
deadline `expired`, the rest `cancelled`; other instances' sessions stay waiting; the cases stay
answerable and a retried call re-opens its session on the same case.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import uuid4

import pytest
from contract_support import ContractPorts
from test_ports_contract import next_event, open_request

from hitl_relay.errors import InvalidRequest
from hitl_relay.ports import RecoveredSessions, SessionEvent


async def test_a_restarted_instance_closes_only_its_own_waiting_sessions(
    ports: ContractPorts,
) -> None:
    old_process = await ports.store_for("relay-a")
    other_replica = await ports.store_for("relay-b")
    late = await old_process.open_case(open_request())
    waiting = await old_process.open_case(open_request())
    answered = await old_process.open_case(open_request())
    finished = await old_process.open_case(open_request())
    assert await old_process.close_session(finished.session_id, "timed_out")
    elsewhere = await other_replica.open_case(open_request())
    await ports.pass_deadline(late.session_id)
    await ports.operator.answer(answered.case_id, "Yes, Saturday works.")

    async with ports.channel.subscribe(waiting.case_id) as sub:
        restarted = await ports.store_for("relay-a")
        recovered = await restarted.recover_sessions("relay-a")
        event = await next_event(sub)

    assert recovered == RecoveredSessions(expired=1, cancelled=2)
    assert isinstance(event, SessionEvent)
    assert (event.session_id, event.status) == (waiting.session_id, "cancelled")
    for closed in (late, waiting, answered):
        assert not await restarted.close_session(closed.session_id, "answered")
    assert await other_replica.close_session(elsewhere.session_id, "answered")
    # The cases stay answerable; the answer given meanwhile is there for get_human_answer.
    found = await restarted.reply(answered.case_id)
    assert found is not None
    assert found.content == "Yes, Saturday works."
    # Nothing is left to recover the second time.
    assert await restarted.recover_sessions("relay-a") == RecoveredSessions(0, 0)


async def test_a_retried_call_after_recovery_waits_again_on_the_same_case(
    ports: ContractPorts,
) -> None:
    old_process = await ports.store_for("relay-a")
    request = open_request()
    first = await old_process.open_case(request)
    restarted = await ports.store_for("relay-a")
    assert await restarted.recover_sessions("relay-a") == RecoveredSessions(0, 1)

    # A retried tool call: the relay proposes a new case id; the idempotency key finds the old.
    retried = await restarted.open_case(replace(request, case_id=uuid4()))

    assert (retried.case_id, retried.session_id) == (first.case_id, first.session_id)
    assert retried.existed
    assert retried.status == "waiting"
    await ports.operator.answer(first.case_id, "Tuesday.")
    found = await restarted.reply(first.case_id)
    assert found is not None
    assert found.content == "Tuesday."
    # The re-opened session belongs to whoever waits on it now: recovered again, it closes.
    assert await restarted.recover_sessions("relay-a") == RecoveredSessions(0, 1)


@pytest.mark.parametrize("instance_id", ["", "   ", "x" * 129])
async def test_a_bad_instance_id_is_refused_naming_the_field(
    ports: ContractPorts, instance_id: str
) -> None:
    store = await ports.store_for("relay-a")
    with pytest.raises(InvalidRequest) as refused:
        await store.recover_sessions(instance_id)
    assert refused.value.field == "p_instance_id"
    assert "non-empty" in refused.value.rule
