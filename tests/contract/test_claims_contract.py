"""Claims, routing and escalation, against every adapter: the memory twin decides as the SQL
does (one holder at a time, presence, skills, the queue's order, the two escalation rules).

The Supabase harness shares one database between tests, so each test looks only at its own
cases and notifications."""

from __future__ import annotations

from uuid import UUID

import pytest
from contract_support import ContractPorts
from postgrest.exceptions import APIError
from test_ports_contract import open_request

from hitl_relay.errors import InvalidRequest
from hitl_relay.ports import Answer, Notification

REFUSED = (InvalidRequest, APIError)  # the twin raises the relay's error, supabase-py PostgREST's


async def mine(ports: ContractPorts, case_id: UUID) -> list[Notification]:
    """This case's notifications in the outbox, taken as the notifier takes them."""
    pending = await ports.escalation.pending_notifications(1000)
    return [n for n in pending if n.case_id == case_id]


async def test_one_holder_at_a_time_and_only_the_holder_answers(ports: ContractPorts) -> None:
    claims = ports.claims
    opened = await ports.store.open_case(open_request())
    for name in ("ada", "grace"):
        await claims.heartbeat(name)
    assert await claims.claim("ada", opened.case_id)
    assert not await claims.claim("grace", opened.case_id)
    assert await claims.claim("ada", opened.case_id)  # claiming again keeps it
    assert await claims.holder(opened.case_id) == claims.operator_id("ada")
    assert opened.case_id not in await claims.queue("grace")
    assert opened.case_id in await claims.queue("ada")
    with pytest.raises(REFUSED) as e:
        await claims.answer("grace", opened.case_id, "I was faster")
    assert "claimed by another operator" in str(e.value)
    await claims.answer("ada", opened.case_id, "Yes, Saturday is fine")
    answer = await ports.store.reply(opened.case_id)
    assert isinstance(answer, Answer)
    assert answer.content == "Yes, Saturday is fine"
    assert answer.sender_id == claims.operator_id("ada")


async def test_a_release_gives_the_case_back(ports: ContractPorts) -> None:
    claims = ports.claims
    opened = await ports.store.open_case(open_request())
    for name in ("ada", "grace"):
        await claims.heartbeat(name)
    assert await claims.claim("ada", opened.case_id)
    assert not await claims.release("grace", opened.case_id)  # not hers to release
    assert await claims.release("ada", opened.case_id)
    assert await claims.holder(opened.case_id) is None
    assert await claims.claim("grace", opened.case_id)
    assert await claims.release_all("grace") >= 1  # what the console does going away
    assert await claims.holder(opened.case_id) is None


async def test_a_claim_needs_a_heartbeat_and_lapses_when_its_holder_is_gone(
    ports: ContractPorts,
) -> None:
    claims = ports.claims
    opened = await ports.store.open_case(open_request())
    with pytest.raises(REFUSED) as e:
        await claims.claim("ada", opened.case_id)  # never said available
    assert "claimed_by" in str(e.value)
    await claims.heartbeat("ada")
    await claims.heartbeat("grace")
    assert await claims.claim("ada", opened.case_id)
    assert opened.case_id not in await claims.queue("grace")
    await claims.vanish("ada")  # the tab closed long ago: the claim no longer holds
    assert opened.case_id in await claims.queue("grace")
    await ports.escalation.escalate()  # the round releases lapsed claims for every console
    assert await claims.holder(opened.case_id) is None
    assert await claims.claim("grace", opened.case_id)
    await claims.answer("grace", opened.case_id, "Done")
    answer = await ports.store.reply(opened.case_id)
    assert isinstance(answer, Answer)
    assert answer.sender_id == claims.operator_id("grace")


async def test_going_away_hands_ones_claims_to_others_at_once(ports: ContractPorts) -> None:
    claims = ports.claims
    opened = await ports.store.open_case(open_request())
    for name in ("ada", "grace"):
        await claims.heartbeat(name)
    assert await claims.claim("ada", opened.case_id)
    assert opened.case_id not in await claims.queue("grace")
    await claims.heartbeat("ada", "away")  # not 90 s later: now
    assert await claims.holder(opened.case_id) is None
    assert opened.case_id in await claims.queue("grace")
    with pytest.raises(REFUSED) as e:
        await claims.claim("ada", opened.case_id)  # away: no claims until available again
    assert "claimed_by" in str(e.value)
    assert await claims.claim("grace", opened.case_id)
    await claims.heartbeat("ada")
    assert not await claims.claim("ada", opened.case_id)  # back, but grace holds it now
    await claims.answer("grace", opened.case_id, "Done")
    answer = await ports.store.reply(opened.case_id)
    assert isinstance(answer, Answer)
    assert answer.sender_id == claims.operator_id("grace")


async def test_routing_offers_a_case_only_to_operators_with_its_skills(
    ports: ContractPorts,
) -> None:
    claims = ports.claims
    opened = await ports.store.open_case(open_request(skills=["Billing"]))
    await claims.set_skills("ada", ["billing", "german"])
    await claims.set_skills("grace", ["german"])
    for name in ("ada", "grace"):
        await claims.heartbeat(name)
    assert opened.case_id not in await claims.queue("grace")
    assert not await claims.claim("grace", opened.case_id)
    with pytest.raises(REFUSED) as e:
        await claims.answer("grace", opened.case_id, "Let me try")
    assert "needs skills you do not have" in str(e.value)
    assert opened.case_id in await claims.queue("ada")
    assert await claims.claim("ada", opened.case_id)
    await claims.answer("ada", opened.case_id, "Refunded")
    answer = await ports.store.reply(opened.case_id)
    assert isinstance(answer, Answer)
    assert answer.sender_id == claims.operator_id("ada")


async def test_the_queue_lists_highest_priority_then_nearest_deadline(
    ports: ContractPorts,
) -> None:
    claims = ports.claims
    low = await ports.store.open_case(open_request(priority=2, timeout_seconds=30))
    high = await ports.store.open_case(open_request(priority=5, timeout_seconds=60))
    mid_late = await ports.store.open_case(open_request(priority=3, timeout_seconds=90))
    mid_soon = await ports.store.open_case(open_request(priority=3, timeout_seconds=20))
    ours = {c.case_id for c in (low, high, mid_late, mid_soon)}
    await claims.heartbeat("ada")
    order = [case_id for case_id in await claims.queue("ada") if case_id in ours]
    assert order == [high.case_id, mid_soon.case_id, mid_late.case_id, low.case_id]


async def test_an_unclaimed_case_past_its_threshold_is_escalated_once(
    ports: ContractPorts,
) -> None:
    claims = ports.claims
    waiting = await ports.store.open_case(open_request(priority=4, timeout_seconds=60))
    held = await ports.store.open_case(open_request(priority=4, timeout_seconds=60))
    await claims.heartbeat("ada")
    assert await claims.claim("ada", held.case_id)
    for case in (waiting, held):
        await claims.age(case.case_id, 9)  # priority 4 escalates after 8 s unclaimed
    await ports.escalation.escalate()
    await ports.escalation.escalate()  # once per reason
    notes = await mine(ports, waiting.case_id)
    assert [(n.reason, n.payload["previous_priority"], n.payload["priority"]) for n in notes] == [
        ("unclaimed", 4, 5)
    ]
    assert await mine(ports, held.case_id) == []  # claimed: somebody is on it


async def test_an_unclaimed_case_keeps_escalating_until_priority_5_notified_once(
    ports: ContractPorts,
) -> None:
    """Aging: a low-priority caller left unclaimed overtakes fresher cases instead of starving."""
    claims = ports.claims
    opened = await ports.store.open_case(open_request(priority=1, timeout_seconds=60))
    seen = []
    for waited in (11, 0, 11, 11, 9, 0, 30):  # thresholds: 10 s for 1-3, 8 s for 4, 5 s for 5
        await claims.age(opened.case_id, waited)
        await ports.escalation.escalate()
        seen.append(await claims.priority(opened.case_id))
    # each step once its priority's threshold has passed since the last one; none at 5
    assert seen == [2, 2, 3, 4, 5, 5, 5]
    notes = await mine(ports, opened.case_id)
    assert [(n.reason, n.payload["previous_priority"]) for n in notes] == [("unclaimed", 1)]


async def test_a_claimed_case_near_its_deadline_is_escalated(ports: ContractPorts) -> None:
    claims = ports.claims
    opened = await ports.store.open_case(open_request(priority=2, timeout_seconds=8))
    await claims.heartbeat("ada")
    assert await claims.claim("ada", opened.case_id)
    await ports.escalation.escalate()
    notes = await mine(ports, opened.case_id)
    assert [(n.reason, n.payload["claimed_by"]) for n in notes] == [
        ("deadline", claims.operator_id("ada"))
    ]
