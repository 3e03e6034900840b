"""`POST /retell/ask_human`: Retell's signature (checked against retell-sdk's own `sign`), replay
refusal, both body shapes mapped into the same ask, retries joining the same case."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from uuid import UUID

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from retell.lib.webhook_auth import symmetric
from security_support import (
    RETELL_KEY,
    RetellSigner,
    make_settings,
    memory_backend,
    relay_app,
    retell_body,
)

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.http_app import create_app, running
from hitl_relay.retell import PATH, retell_arguments, sign_retell, verify_retell_signature
from hitl_relay.security import MemoryAuditSink, SecurityLayer

ANSWER = "Yes, approve the refund."


def retell_settings(**overrides: object) -> object:
    return make_settings(retell_api_key=RETELL_KEY, **overrides)


# ---------------------------------------------------------------- signature


@given(body=st.binary(max_size=300), key=st.text(min_size=1, max_size=40))
@settings(max_examples=200, deadline=None)
def test_our_signature_is_the_one_retell_sdk_makes_and_accepts(body: bytes, key: str) -> None:
    text = body.decode("utf-8", "replace")
    raw = text.encode()
    stamp = int(time.time() * 1000)
    ours = sign_retell(raw, key, stamp)
    assert ours == symmetric["sign"](text, key, stamp)
    assert symmetric["verify"](text, key, ours)
    assert verify_retell_signature(raw, key, symmetric["sign"](text, key, stamp)).ok


def test_signature_checks_refuse_each_kind_of_forgery() -> None:
    body = retell_body()
    now = int(time.time() * 1000)
    good = sign_retell(body, RETELL_KEY, now)
    assert verify_retell_signature(body, RETELL_KEY, good, now_ms=now).ok
    cases = {
        "missing": (body, RETELL_KEY, None, now),
        "malformed": (body, RETELL_KEY, "v=1,d=xyz", now),
        "mismatch": (body + b" ", RETELL_KEY, good, now),
        "wrong key": (body, "another-key", good, now),
        "stale": (body, RETELL_KEY, good, now + 5 * 60 * 1000 + 1),
        "future": (body, RETELL_KEY, good, now - 5 * 60 * 1000 - 1),
    }
    reasons = {
        name: verify_retell_signature(b, k, h, now_ms=t).failure
        for name, (b, k, h, t) in cases.items()
    }
    assert reasons == {
        "missing": "missing",
        "malformed": "malformed",
        "mismatch": "mismatch",
        "wrong key": "mismatch",
        "stale": "stale",
        "future": "stale",
    }
    # exactly at the 5-minute edge is still accepted (Retell's rule: difference > 5 min fails)
    assert verify_retell_signature(body, RETELL_KEY, good, now_ms=now + 5 * 60 * 1000).ok


# ---------------------------------------------------------------- the endpoint


def test_a_signed_request_is_answered_with_what_retell_hands_the_llm() -> None:
    signer = RetellSigner()
    body = retell_body(context="Order 4411, parcel damaged", urgency="high", priority=4)
    with relay_app(retell_settings(), auto_answer=ANSWER) as relay:
        response = relay.client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 200
    data = response.json()
    assert data["result"] == ANSWER
    assert data["status"] == "answered"
    assert data["answer"] == ANSWER
    case = relay.platform.cases[UUID(data["case_id"])]
    meta = case.metadata
    assert (meta["retell_call_id"], meta["retell_agent_id"]) == ("call_5f0c1", "agent_9a2")
    assert meta["mcp_session_id"] == "call_5f0c1"
    assert meta["caller_info"] == {
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "direction": "inbound",
    }
    assert meta["conversation_history"] == [
        {"role": "agent", "content": "Hello, how can I help?"},
        {"role": "caller", "content": "I want a refund for my parcel."},
    ]
    assert (case.priority, case.urgency, meta["context"]) == (
        4,
        "high",
        "Order 4411, parcel damaged",
    )
    assert ("retell_ask", "answered") in relay.audit.actions()


def test_the_args_at_root_variant_is_accepted_too() -> None:
    signer = RetellSigner()
    payload = {
        "question": "Can we deliver on Saturday?",
        "call_id": "call_root",
        "agent_id": "agent_root",
        "urgency": "low",
    }
    body = json.dumps(payload).encode()
    with relay_app(retell_settings(), auto_answer=ANSWER) as relay:
        response = relay.client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 200
    case = relay.platform.cases[UUID(response.json()["case_id"])]
    meta = case.metadata
    assert (meta["retell_call_id"], meta["retell_agent_id"], case.urgency) == (
        "call_root",
        "agent_root",
        "low",
    )


def test_the_signed_call_object_outranks_ids_the_llm_put_in_the_args() -> None:
    args = retell_arguments(
        {
            "name": "ask_human",
            "call": {"call_id": "real-call", "agent_id": "real-agent"},
            "args": {"question": "q?", "call_id": "made-up", "agent_id": "made-up"},
        }
    )
    assert (args["call_id"], args["agent_id"], args["session_id"]) == (
        "real-call",
        "real-agent",
        "real-call",
    )


def test_a_plain_text_transcript_becomes_turns_and_only_the_last_200_are_kept() -> None:
    lines = [f"{'Agent' if i % 2 else 'User'}: line {i}" for i in range(250)]
    args = retell_arguments(
        {
            "call": {"call_id": "c", "agent_id": "a", "transcript": "\n".join(lines)},
            "args": {"question": "q?"},
        }
    )
    history = args["conversation_history"]
    assert len(history) == 200
    assert history[-1] == {"role": "agent", "content": "line 249"}
    assert history[0] == {"role": "caller", "content": "line 50"}


@pytest.mark.parametrize(
    "forge",
    ["missing", "tampered", "wrong-key", "stale", "far-future", "malformed"],
)
def test_unsigned_or_forged_requests_are_refused_with_a_bare_401(forge: str) -> None:
    signer = RetellSigner()
    body = retell_body()
    now = int(time.time() * 1000)
    headers = {"content-type": "application/json"}
    sent = body
    if forge == "tampered":
        headers.update(signer.headers(body))
        sent = body.replace(b"42 euros", b"4200 euros")
    elif forge == "wrong-key":
        headers.update(RetellSigner(key="someone-elses-key").headers(body))
    elif forge == "stale":
        headers.update(signer.headers(body, timestamp_ms=now - 6 * 60 * 1000))
    elif forge == "far-future":
        headers.update(signer.headers(body, timestamp_ms=now + 6 * 60 * 1000))
    elif forge == "malformed":
        headers["x-retell-signature"] = "v=" + str(now) + ",d=" + "0" * 63
    with relay_app(retell_settings(), auto_answer=ANSWER) as relay:
        response = relay.client.post(PATH, content=sent, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert relay.platform.cases == {}
    event = relay.audit.events[-1]
    assert (event.action, event.outcome) == ("retell_signature", "refused")


def test_a_replayed_request_is_refused_and_opens_nothing_new() -> None:
    signer = RetellSigner()
    body = retell_body()
    headers = signer.headers(body)
    with relay_app(retell_settings(), auto_answer=ANSWER) as relay:
        first = relay.client.post(PATH, content=body, headers=headers)
        replay = relay.client.post(PATH, content=body, headers=headers)
    assert first.status_code == 200
    assert replay.status_code == 401
    assert len(relay.platform.cases) == 1
    assert relay.audit.events[-1].detail["reason"] == "replay"


def test_invalid_arguments_answer_200_naming_field_and_rule_and_write_nothing() -> None:
    signer = RetellSigner()
    body = retell_body(question="", priority=9)
    with relay_app(retell_settings(), auto_answer=ANSWER) as relay:
        response = relay.client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 200
    data = response.json()
    assert data["error"] == "invalid_request"
    assert {p["field"] for p in data["problems"]} == {"question", "priority"}
    assert "question: must be 1 to 2000 characters" in data["result"]
    assert relay.platform.cases == {}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b""])
def test_a_body_that_is_not_a_json_object_is_a_400(body: bytes) -> None:
    signer = RetellSigner()
    with relay_app(retell_settings()) as relay:
        response = relay.client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


def test_asks_per_phone_call_are_rate_limited() -> None:
    signer = RetellSigner()
    with relay_app(retell_settings(rate_limit_per_call="2/minute"), auto_answer=ANSWER) as relay:
        codes = []
        for i in range(3):
            body = retell_body(f"Question {i}?")
            codes.append(relay.client.post(PATH, content=body, headers=signer.headers(body)))
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["retry-after"]) >= 1


def test_failed_signatures_spend_the_address_budget() -> None:
    with relay_app(
        retell_settings(rate_limit_auth_failures_per_ip="2/minute"), auto_answer=ANSWER
    ) as relay:
        body = retell_body()
        bad = {"x-retell-signature": "v=1,d=" + "0" * 64}
        codes = [relay.client.post(PATH, content=body, headers=bad).status_code for _ in (1, 2, 3)]
        good = relay.client.post(PATH, content=body, headers=RetellSigner().headers(body))
    assert codes == [401, 401, 429]
    # Retell's customers share its egress addresses: a correct signature always passes.
    assert good.status_code == 200


def test_without_a_retell_key_the_endpoint_does_not_exist() -> None:
    signer = RetellSigner()
    body = retell_body()
    with relay_app(make_settings()) as relay:
        response = relay.client.post(PATH, content=body, headers=signer.headers(body))
    assert response.status_code == 404


def test_the_webhook_needs_no_bearer_key_but_mcp_still_does() -> None:
    signer = RetellSigner()
    body = retell_body()
    with relay_app(retell_settings(), auto_answer=ANSWER) as relay:
        webhook = relay.client.post(PATH, content=body, headers=signer.headers(body))
        mcp = relay.client.post("/mcp", content=b"{}", headers=signer.headers(b"{}"))
    assert webhook.status_code == 200
    assert mcp.status_code == 401


# ---------------------------------------------------------------- retries


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, MemoryPlatform, MemoryAuditSink]]:
    platform = MemoryPlatform()
    audit = MemoryAuditSink()
    config = retell_settings()
    layer = SecurityLayer(config, audit=audit)  # type: ignore[arg-type]
    app = create_app(config, backend=memory_backend(platform), security=layer)  # type: ignore[arg-type]
    async with running(app) as url:
        yield url, platform, audit


async def test_a_retell_retry_after_a_dropped_attempt_joins_the_same_case(
    served: tuple[str, MemoryPlatform, MemoryAuditSink],
) -> None:
    url, platform, audit = served
    signer = RetellSigner()
    body = retell_body("Is the Saturday slot still free?", call_id="call_retry")
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        first = asyncio.ensure_future(http.post(PATH, content=body, headers=signer.headers(body)))
        case_id = await platform.operator.wait_for_case()
        first.cancel()  # Retell's request timed out: it drops the connection and retries
        await platform.wait_until(lambda: platform.session_of(case_id).status == "cancelled")
        retry = asyncio.ensure_future(http.post(PATH, content=body, headers=signer.headers(body)))
        await platform.wait_until(lambda: platform.session_of(case_id).status == "waiting")
        await platform.wait_until(lambda: platform.joined_channels == 1)
        await platform.operator.answer(case_id, ANSWER)
        response = await retry
    assert response.status_code == 200
    assert response.json()["case_id"] == str(case_id)
    assert response.json()["answer"] == ANSWER
    assert list(platform.cases) == [case_id]
    assert ("retell_ask", "cancelled") in audit.actions()


async def test_a_retry_racing_the_original_attempt_shares_its_case_and_answer(
    served: tuple[str, MemoryPlatform, MemoryAuditSink],
) -> None:
    url, platform, _audit = served
    signer = RetellSigner()
    body = retell_body("Can I waive the fee?", call_id="call_race")
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        attempts = [
            asyncio.ensure_future(http.post(PATH, content=body, headers=signer.headers(body)))
            for _ in range(3)
        ]
        await platform.wait_until(lambda: platform.joined_channels == 3)
        case_id = await platform.operator.wait_for_case()
        await platform.operator.answer(case_id, ANSWER)
        responses = await asyncio.gather(*attempts)
    assert [r.json()["case_id"] for r in responses] == [str(case_id)] * 3
    assert [r.json()["answer"] for r in responses] == [ANSWER] * 3
    assert len(platform.cases) == 1
