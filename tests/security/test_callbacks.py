"""Outgoing callbacks: a local receiver verifies the signature; retries with backoff, bounded;
SSRF targets refused before any connection is made."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hitl_relay.callbacks import (
    SIGNATURE_HEADER,
    CallbackSender,
    callback_payload,
    sign_callback,
    verify_callback_signature,
    vet_callback_url,
)
from hitl_relay.errors import InvalidRequest
from hitl_relay.http_app import running
from hitl_relay.models import AskResult
from hitl_relay.security import MemoryAuditSink

SECRET = "whsec-0123456789abcdef"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that checks signatures the way a customer would."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        verified = verify_callback_signature(SECRET, body, request.headers.get(SIGNATURE_HEADER))
        self.received.append((dict(request.headers), body, verified))
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return JSONResponse({"ok": verified}, status_code=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = Starlette(routes=[Route("/hook", r.hook, methods=["POST"])])
    async with running(app, "127.0.0.1", 0) as base:
        r.url = base + "/hook?tenant=7"
        yield r


def answered() -> AskResult:
    return AskResult(
        status="answered",
        answer="Yes, approve it.",
        case_id="6f1c5a8e-1111-4a4a-9c9c-0123456789ab",
        waited_ms=1234,
        message="Yes, approve it.",
    )


def local_sender(audit: MemoryAuditSink | None = None, **kw: float) -> CallbackSender:
    return CallbackSender(allow_private=True, first_backoff_s=0.01, audit=audit, **kw)  # type: ignore[arg-type]


async def test_the_receiver_verifies_a_delivered_answer(receiver: Receiver) -> None:
    audit = MemoryAuditSink()
    payload = callback_payload(answered(), call_id="call_1", event="answer")
    delivery = await local_sender(audit).deliver(
        receiver.url, SECRET, payload, case_id=payload["case_id"]
    )
    assert delivery.ok
    assert (delivery.attempts, delivery.status) == (1, 200)
    headers, body, verified = receiver.received[0]
    assert verified
    assert json.loads(body) == payload
    assert headers["content-type"] == "application/json"
    assert headers["host"].startswith("127.0.0.1:")
    event = audit.events[0]
    assert (event.action, event.outcome, event.case_id) == (
        "callback_delivery",
        "delivered",
        payload["case_id"],
    )
    assert SECRET not in json.dumps(event.row())


async def test_failed_attempts_are_retried_each_freshly_signed(receiver: Receiver) -> None:
    receiver.statuses = [503, 429, 200]
    delivery = await local_sender().deliver(receiver.url, SECRET, {"event": "timeout"})
    assert delivery.ok
    assert delivery.attempts == 3
    assert [verified for _h, _b, verified in receiver.received] == [True, True, True]


async def test_a_client_error_is_final_and_not_retried(receiver: Receiver) -> None:
    audit = MemoryAuditSink()
    receiver.statuses = [400, 200]
    delivery = await local_sender(audit).deliver(receiver.url, SECRET, {"event": "answer"})
    assert (delivery.outcome, delivery.attempts, delivery.status) == ("failed", 1, 400)
    assert len(receiver.received) == 1
    assert audit.events[0].outcome == "failed"


async def test_retries_stop_within_the_time_budget(receiver: Receiver) -> None:
    receiver.statuses = [503] * 100
    started = time.monotonic()
    delivery = await local_sender(budget_s=0.3, max_attempts=100).deliver(
        receiver.url, SECRET, {"event": "answer"}
    )
    elapsed = time.monotonic() - started
    assert delivery.outcome == "failed"
    assert delivery.status == 503
    assert 1 < delivery.attempts < 100
    assert elapsed < 2.0


async def test_an_unreachable_receiver_is_retried_then_reported_failed() -> None:
    from hitl_devstack.cluster import free_port

    delivery = await local_sender(budget_s=0.3, max_attempts=3).deliver(
        f"http://127.0.0.1:{free_port()}/hook", SECRET, {"event": "answer"}
    )
    assert delivery.outcome == "failed"
    assert delivery.attempts == 3
    assert delivery.error == "ConnectError"


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://127.0.0.1/hook", "public addresses"),
        ("https://10.1.2.3/hook", "public addresses"),
        ("https://192.168.0.10/hook", "public addresses"),
        ("https://169.254.169.254/latest/meta-data/", "public addresses"),
        ("https://[::1]/hook", "public addresses"),
        ("https://[fe80::1]/hook", "public addresses"),
        ("https://[::ffff:127.0.0.1]/hook", "public addresses"),
        ("https://0.0.0.0/hook", "public addresses"),
        ("https://224.0.0.1/hook", "public addresses"),
        ("https://100.64.0.1/hook", "public addresses"),
        ("https://localhost/hook", "public addresses"),
        ("http://93.184.216.34/hook", "must use https"),
        ("ftp://93.184.216.34/hook", "must use https"),
        ("https://user:pw@93.184.216.34/hook", "must not carry credentials"),
        ("https:///hook", "must name a host"),
        ("https://does-not-exist.invalid/hook", "does not resolve"),
    ],
)
async def test_ssrf_targets_are_refused_before_any_connection(url: str, rule: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await vet_callback_url(url, allow_private=False)
    assert refused.value.field == "callback_url"
    assert rule in refused.value.rule
    audit = MemoryAuditSink()
    delivery = await CallbackSender(audit=audit).deliver(url, SECRET, {"event": "answer"})
    assert (delivery.outcome, delivery.attempts) == ("refused", 0)
    assert audit.events[0].outcome == "refused"


async def test_the_private_receiver_is_refused_without_the_local_option(
    receiver: Receiver,
) -> None:
    delivery = await CallbackSender().deliver(receiver.url, SECRET, {"event": "answer"})
    assert delivery.outcome == "refused"
    assert receiver.received == []


async def test_a_public_https_target_passes_vetting_and_is_pinned_to_its_address() -> None:
    target = await vet_callback_url("https://93.184.216.34:8443/h?x=1", allow_private=False)
    assert target.pinned_url() == "https://93.184.216.34:8443/h?x=1"
    assert target.host_header() == "93.184.216.34:8443"


def test_signatures_refuse_tampering_wrong_secrets_and_stale_timestamps() -> None:
    body = b'{"event":"answer","answer":"yes"}'
    now = int(time.time())
    header = sign_callback(SECRET, body, now)
    assert verify_callback_signature(SECRET, body, header)
    assert not verify_callback_signature(SECRET, body + b" ", header)
    assert not verify_callback_signature("another-secret", body, header)
    assert not verify_callback_signature(SECRET, body, sign_callback(SECRET, body, now - 301))
    assert not verify_callback_signature(SECRET, body, sign_callback(SECRET, body, now + 301))
    assert not verify_callback_signature(SECRET, body, None)
    assert not verify_callback_signature(SECRET, body, "t=abc,v1=00")
    assert not verify_callback_signature(SECRET, body, f"t={now}")
    # a receiver rotating secrets may be sent two v1 entries; one match is enough
    rotated = sign_callback("old-secret", body, now) + "," + header.split(",")[1]
    assert verify_callback_signature(SECRET, body, rotated)
