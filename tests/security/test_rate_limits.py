"""Rate limits in process memory: per key, per address before authentication, failed-auth
budget, per phone call; 429 with Retry-After and nothing counted for others."""

from __future__ import annotations

import json

from security_support import KEY_A, KEY_B, bearer, guarded_app, make_settings

from hitl_relay import metrics
from hitl_relay.security import MemoryRateLimiter, Rule


def tool_call(call_id: str, question: str = "May I?") -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {
                "name": "ask_human",
                "arguments": {"question": question, "call_id": call_id},
            },
        }
    ).encode()


def test_a_burst_over_the_key_limit_gets_429_with_retry_after_and_other_keys_pass() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_key="3/minute"))
    before = metrics.rate_limited._value.get()
    with guarded.client() as client:
        burst = [client.get("/mcp", headers=bearer(KEY_A)).status_code for _ in range(3)]
        refused = client.get("/mcp", headers=bearer(KEY_A))
        other = client.get("/mcp", headers=bearer(KEY_B))
    assert burst == [200, 200, 200]
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.json() == {"error": "rate_limited", "retry_after": retry_after}
    assert other.status_code == 200
    assert metrics.rate_limited._value.get() == before + 1
    event = guarded.audit.events[-1]
    assert (event.action, event.outcome, event.detail["scope"]) == (
        "rate_limited",
        "refused",
        "key",
    )
    assert event.actor.startswith("key:")


def test_several_windows_apply_together() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_key="100/second;2/hour"))
    with guarded.client() as client:
        codes = [client.get("/mcp", headers=bearer(KEY_A)).status_code for _ in range(3)]
        refused = client.get("/mcp", headers=bearer(KEY_A))
    assert codes == [200, 200, 429]
    assert 60 < int(refused.headers["retry-after"]) <= 3600


def test_the_address_limit_applies_before_authentication() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_ip="3/minute"))
    with guarded.client(ip="198.51.100.7") as flood, guarded.client(ip="198.51.100.8") as other:
        codes = [
            flood.get("/mcp", headers=bearer("bad-key-bad-key-bad")).status_code for _ in range(3)
        ]
        fourth = flood.get("/mcp", headers=bearer(KEY_A))
        neighbour = other.get("/mcp", headers=bearer(KEY_A))
    assert codes == [401, 401, 401]
    # Even the right key is refused now: the address is over its budget before any key check.
    assert fourth.status_code == 429
    assert "retry-after" in fourth.headers
    assert neighbour.status_code == 200


def test_an_address_that_spent_its_failed_auth_budget_gets_429_for_wrong_keys_only() -> None:
    guarded = guarded_app(make_settings(rate_limit_auth_failures_per_ip="2/minute"))
    with guarded.client(ip="198.51.100.9") as guesser, guarded.client() as honest:
        guesses = [
            guesser.get("/mcp", headers=bearer(f"guess-{i:020d}")).status_code for i in (1, 2, 3)
        ]
        event = guarded.audit.events[-1]
        now_right = guesser.get("/mcp", headers=bearer(KEY_A))
        elsewhere = honest.get("/mcp", headers=bearer(KEY_A))
    assert guesses == [401, 401, 429]
    assert (event.action, event.detail["scope"]) == ("rate_limited", "auth_failures")
    # A valid key is never refused by the budget: a shared address cannot be locked out.
    assert now_right.status_code == 200
    assert elsewhere.status_code == 200


def test_successful_requests_do_not_spend_the_failed_auth_budget() -> None:
    guarded = guarded_app(make_settings(rate_limit_auth_failures_per_ip="2/minute"))
    with guarded.client() as client:
        codes = [client.get("/mcp", headers=bearer(KEY_A)).status_code for _ in range(10)]
    assert codes == [200] * 10


def test_tool_calls_of_one_phone_call_are_limited_and_other_calls_are_not() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_call="2/minute"))
    headers = {**bearer(KEY_A), "content-type": "application/json"}
    with guarded.client() as client:
        first = [client.post("/mcp", content=tool_call("call-1"), headers=headers) for _ in (1, 2)]
        third = client.post("/mcp", content=tool_call("call-1"), headers=headers)
        other_call = client.post("/mcp", content=tool_call("call-2"), headers=headers)
        # camelCase and batches count too
        camel = json.loads(tool_call("call-3"))
        camel["params"]["arguments"] = {"callId": "call-3"}
        batch = json.dumps([camel, camel, camel]).encode()
        batched = client.post("/mcp", content=batch, headers=headers)
    assert [r.status_code for r in first] == [200, 200]
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) >= 1
    assert other_call.status_code == 200
    assert batched.status_code == 429
    assert guarded.audit.events[-1].actor == "call:call-3"


def test_requests_other_than_tool_calls_do_not_count_against_a_call() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_call="1/minute"))
    headers = {**bearer(KEY_A), "content-type": "application/json"}
    listing = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    with guarded.client() as client:
        codes = [
            client.post("/mcp", content=listing, headers=headers).status_code for _ in range(5)
        ]
        codes.append(client.post("/mcp", content=b"{not json", headers=headers).status_code)
        codes.append(client.post("/mcp", content=tool_call("call-9"), headers=headers).status_code)
    assert codes == [200] * 7


def test_health_checks_are_never_limited() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_ip="1/minute"))
    with guarded.client() as client:
        codes = [client.get("/healthz").status_code for _ in range(5)]
    assert codes == [200] * 5


async def test_a_refused_hit_is_not_counted_and_peek_counts_nothing() -> None:
    limiter = MemoryRateLimiter()
    rule = Rule.parse("t", "2/minute")
    assert (await limiter.peek(rule, "x")).allowed
    assert (await limiter.hit(rule, "x")).allowed
    assert (await limiter.hit(rule, "x")).allowed
    refused = await limiter.hit(rule, "x")
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 60
    assert not (await limiter.peek(rule, "x")).allowed
    assert (await limiter.hit(rule, "y")).allowed
    assert (await limiter.hit(Rule.parse("t", "off"), "x")).allowed
