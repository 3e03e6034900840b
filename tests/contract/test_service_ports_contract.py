"""The edge's service ports (hitl_relay/service_ports.py), run against every adapter harness:
the audit trail keeps what it is given, rate-limit counters are shared by every limiter on the
platform, and the callback outbox queues one callback per case and event, leases what it hands
out and settles each once."""

from __future__ import annotations

import uuid

import pytest
from contract_support import ContractPorts
from test_ports_contract import open_request

from hitl_relay.errors import InvalidRequest
from hitl_relay.security.ratelimit import Rule, SharedRateLimiter, storage_key
from hitl_relay.service_ports import WindowLimit

SECRET = "whsec-contract-0123456789"
HOOK = "https://hooks.example.com/hitl"


async def test_audit_rows_are_kept_with_the_platform_s_time(ports: ContractPorts) -> None:
    actor = f"ip:test-{uuid.uuid4().hex[:8]}"
    rows = [
        {"actor": actor, "action": "auth_failed", "outcome": "refused", "case_id": None,
         "session_id": None, "detail": {"reason": "wrong", "n": i}}
        for i in range(3)
    ]  # fmt: skip
    await ports.services.insert_audit(rows)
    await ports.services.insert_audit([])
    kept = await ports.audit_rows(actor)
    assert [(r["action"], r["outcome"], r["detail"]) for r in kept] == [
        ("auth_failed", "refused", {"reason": "wrong", "n": i}) for i in range(3)
    ]
    assert all(r["at"] is not None for r in kept)


async def test_rate_limits_hold_across_replicas_on_one_platform(ports: ContractPorts) -> None:
    replicas = [SharedRateLimiter(ports.services) for _ in range(2)]
    rule = Rule.parse("key", "3/minute")
    peeked = await replicas[0].peek(rule, "key:abc")
    decisions = [await replicas[i % 2].hit(rule, "key:abc") for i in range(4)]
    other = await replicas[1].hit(rule, "key:other")
    assert peeked.allowed
    assert [d.allowed for d in decisions] == [True, True, True, False]
    # A sliding-window counter lets the last window's hits fade out over the next window, so a
    # client that spent all 3 within the current minute waits for the minute to end and then for
    # 1/3 of the next one: never more than window * (1 + 1/limit) = 80 s.
    assert 0 < decisions[3].retry_after_s <= 60 * (1 + 1 / 3)
    assert other.allowed


async def test_a_peek_counts_nothing_and_a_refusal_is_not_counted(ports: ContractPorts) -> None:
    key = storage_key(Rule.parse("call", "1/minute"), ["call-1"])
    limits = [WindowLimit(1, 60)]
    assert (await ports.services.rate_limit(key, limits, hit=False)).allowed
    assert (await ports.services.rate_limit(key, limits, hit=True)).allowed
    refused = await ports.services.rate_limit(key, limits, hit=True)
    assert not refused.allowed
    assert not (await ports.services.rate_limit(key, limits, hit=False)).allowed
    assert refused.retry_after_s > 0


@pytest.mark.parametrize(
    ("key", "limits", "field"),
    [
        ("", [WindowLimit(1, 60)], "p_key"),
        ("k", [], "p_limits"),
        ("k", [WindowLimit(0, 60)], "p_limits"),
        ("k", [WindowLimit(1, 0)], "p_limits"),
    ],
)
async def test_bad_rate_limit_arguments_are_refused_naming_the_field(
    ports: ContractPorts, key: str, limits: list[WindowLimit], field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await ports.services.rate_limit(key, limits, hit=True)
    assert refused.value.field == field


async def test_an_answered_case_with_a_callback_url_queues_one_answer_callback(
    ports: ContractPorts,
) -> None:
    request = open_request(callback_url=HOOK, webhook_secret=SECRET)
    opened = await ports.store.open_case(request)
    plain = await ports.store.open_case(open_request())
    await ports.operator.answer(opened.case_id, "Yes, Saturday works.")
    await ports.operator.answer(plain.case_id, "No callback for this one.")
    claimed = await ports.services.claim_callbacks(10, 30)
    assert [(c.case_id, c.event, c.attempts) for c in claimed] == [
        (str(opened.case_id), "answer", 1)
    ]
    item = claimed[0]
    assert (item.callback_url, item.webhook_secret) == (HOOK, SECRET)
    assert item.payload["status"] == "answered"
    assert item.payload["answer"] == "Yes, Saturday works."
    assert item.payload["call_id"] == request.retell_call_id
    # leased: nobody else claims it while the lease runs
    assert await ports.services.claim_callbacks(10, 30) == []
    assert await ports.services.callback_result(item.id, "delivered", {"status": 200}, 60)
    assert not await ports.services.callback_result(item.id, "failed", {}, 60)


async def test_a_timeout_and_the_late_answer_are_two_callbacks(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request(callback_url=HOOK, webhook_secret=SECRET))
    await ports.store.close_session(opened.session_id, "timed_out")
    (timeout,) = await ports.services.claim_callbacks(10, 30)
    assert (timeout.event, timeout.payload["status"], timeout.payload["answer"]) == (
        "timeout",
        "timeout",
        None,
    )
    assert timeout.payload["session_id"] == str(opened.session_id)
    await ports.operator.answer(opened.case_id, "Late, but yes.")
    (late,) = await ports.services.claim_callbacks(10, 30)
    assert (late.event, late.payload["answer"]) == ("answer", "Late, but yes.")


async def test_a_retried_callback_is_not_due_again_at_once(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request(callback_url=HOOK, webhook_secret=SECRET))
    await ports.operator.answer(opened.case_id, "Yes.")
    (item,) = await ports.services.claim_callbacks(10, 30)
    assert await ports.services.callback_result(item.id, "retry", {"status": 503}, 60)
    assert await ports.services.claim_callbacks(10, 30) == []


@pytest.mark.parametrize(
    ("limit", "lease_s", "field"),
    [(0, 30, "p_limit"), (101, 30, "p_limit"), (1, 4, "p_lease_seconds")],
)
async def test_bad_claims_are_refused_naming_the_field(
    ports: ContractPorts, limit: int, lease_s: int, field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await ports.services.claim_callbacks(limit, lease_s)
    assert refused.value.field == field


async def test_an_unknown_outcome_is_refused(ports: ContractPorts) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await ports.services.callback_result(1, "maybe", {}, 60)  # type: ignore[arg-type]
    assert refused.value.field == "p_outcome"
