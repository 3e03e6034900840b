"""Escalation notifications against local receivers: a Slack-compatible webhook (a real HTTP
server on a free port, verifying the signature) and an SMTP server (aiosmtpd, with AUTH), each
retried when it fails, and a receiver that is down, which never holds up an ask."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from waiting import wait_until

from hitl_devstack.cluster import free_port
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.adapters.notify import EmailNotifier, WebhookNotifier
from hitl_relay.callbacks import SIGNATURE_HEADER, verify_callback_signature
from hitl_relay.clock import SystemClock
from hitl_relay.config import Settings
from hitl_relay.escalation import Escalator
from hitl_relay.models import AskHumanRequest
from hitl_relay.relay import Relay

SECRET = "whsec-escalation-test"


class Receiver:
    """A webhook receiver that answers 503 to the first `fail_first` deliveries."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.accepted: list[dict[str, Any]] = []
        self.bad_signatures = 0

    async def hook(self, request: Request) -> Response:
        self.attempts += 1
        body = await request.body()
        if not verify_callback_signature(SECRET, body, request.headers.get(SIGNATURE_HEADER)):
            self.bad_signatures += 1
            return Response(status_code=401)
        if self.attempts <= self.fail_first:
            return Response(status_code=503)
        self.accepted.append(json.loads(body))
        return JSONResponse({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver(fail_first=2)
    port = free_port()
    app = Starlette(routes=[Route("/hook", r.hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())

    async def listening() -> bool:
        return bool(server.started)

    await wait_until(listening, "the webhook receiver to listen")
    try:
        yield r, f"http://127.0.0.1:{port}/hook"
    finally:
        server.should_exit = True
        await task


class Mailbox:
    """Messages the server accepted (it runs in its own thread and loop)."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


def authenticator(
    _server: Any, _session: Session, _envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay", b"s3cret")
    return AuthResult(success=ok, handled=False)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the SMTP server's STARTTLS identity)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Smtp:
    port: int
    mailbox: Mailbox
    client_tls: ssl.SSLContext


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[Smtp]:
    """aiosmtpd with STARTTLS required before AUTH, as a real submission server."""
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_required=True,
        tls_context=server_tls,
        require_starttls=True,
    )
    controller.start()
    try:
        yield Smtp(controller.port, mailbox, client_tls)
    finally:
        controller.stop()


def old_case(platform: MemoryPlatform) -> None:
    """Every case as if it had waited a minute unclaimed."""
    for case in platform.cases.values():
        case.created_at -= timedelta(minutes=1)


async def open_one(platform: MemoryPlatform, question: str = "Waive the 5 euro fee?") -> None:
    from uuid import uuid4

    from hitl_relay.ports import OpenCase

    await platform.store.open_case(
        OpenCase(
            case_id=uuid4(),
            question=question,
            mcp_session_id="s",
            retell_call_id=f"c-{uuid4().hex[:6]}",
            retell_agent_id="a",
            timeout_seconds=45,
        )
    )


async def test_a_failing_webhook_is_retried_until_it_accepts_the_signed_notification(
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    platform = MemoryPlatform()
    await open_one(platform)
    old_case(platform)
    escalator = Escalator(
        platform.store,
        [WebhookNotifier(url=url, secret=SECRET)],
        SystemClock(),
        interval_s=5,
        timeout_s=5,
    )
    assert await escalator.run_once() == 1
    assert (r.attempts, r.bad_signatures, len(r.accepted)) == (3, 0, 1)
    sent = r.accepted[0]
    assert sent["text"].startswith("Escalated case ")
    assert "Waive the 5 euro fee?" in sent["text"]
    assert (sent["hitl"]["reason"], sent["hitl"]["priority"]) == ("unclaimed", 4)
    assert platform.notifications[0].sent_at is not None
    assert escalator.delivered == 1
    assert await escalator.run_once() == 0  # escalated once per reason


async def test_an_escalation_is_mailed_through_smtp_with_starttls_and_auth(
    smtp_server: Smtp,
) -> None:
    platform = MemoryPlatform()
    await open_one(platform, "May the caller pay by invoice?")
    old_case(platform)
    email = EmailNotifier(
        host="127.0.0.1",
        port=smtp_server.port,
        sender="relay@example.test",
        recipients=["oncall@example.test", "lead@example.test"],
        username="relay",
        password="s3cret",
        tls_context=smtp_server.client_tls,
    )
    escalator = Escalator(platform.store, [email], SystemClock(), interval_s=5, timeout_s=5)
    assert await escalator.run_once() == 1
    # the server accepted it before the client's QUIT returned
    envelope = smtp_server.mailbox.messages[0]
    assert envelope.rcpt_tos == ["oncall@example.test", "lead@example.test"]
    message = message_from_bytes(envelope.original_content or b"")
    assert message["Subject"].startswith("[hitl-relay] escalated: priority 4 case ")
    assert "May the caller pay by invoice?" in message.get_payload()
    assert platform.notifications[0].sent_at is not None


async def test_wrong_smtp_credentials_are_a_final_failure_kept_for_later(
    smtp_server: Smtp,
) -> None:
    platform = MemoryPlatform()
    await open_one(platform)
    old_case(platform)
    email = EmailNotifier(
        host="127.0.0.1",
        port=smtp_server.port,
        sender="r@example.test",
        recipients=["o@example.test"],
        username="relay",
        password="wrong",
        tls_context=smtp_server.client_tls,
    )
    escalator = Escalator(platform.store, [email], SystemClock(), interval_s=5, timeout_s=5)
    await escalator.run_once()
    n = platform.notifications[0]
    assert n.sent_at is None
    assert n.last_error is not None
    assert "SMTP 535" in n.last_error
    assert smtp_server.mailbox.messages == []


def dead_port() -> int:
    """A port nobody listens on (connections are refused)."""
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


async def test_a_receiver_that_is_down_is_retried_and_the_ask_is_unaffected() -> None:
    platform = MemoryPlatform()
    settings = Settings(_env_file=None, backend="memory")  # type: ignore[call-arg]
    relay = Relay(platform.backend(), settings.relay_options())
    await platform.operator.go_online()
    dead = WebhookNotifier(url=f"http://127.0.0.1:{dead_port()}/hook", secret=SECRET)
    escalator = Escalator(
        platform.store, [dead], SystemClock(), interval_s=5, timeout_s=5, retry_budget_s=2.0
    )
    await open_one(platform, "An earlier case, waiting too long")
    old_case(platform)
    request = AskHumanRequest.model_validate(
        {
            "question": "Deliver on Saturday?",
            "session_id": "s",
            "call_id": "c-ask",
            "agent_id": "a",
            "timeout_seconds": 10,
        }
    )
    result: dict[str, Any] = {}

    async def ask() -> None:
        answered = await relay.ask(request)
        result["status"], result["answer"] = answered.status, answered.answer

    async def operator() -> None:
        await platform.wait_until(
            lambda: any(c.question == "Deliver on Saturday?" for c in platform.cases.values())
        )
        case = next(c for c in platform.cases.values() if c.question == "Deliver on Saturday?")
        await platform.operator.answer(case.id, "Yes, Saturday works.")

    async with anyio.create_task_group() as tg:
        tg.start_soon(escalator.run_once)
        tg.start_soon(ask)
        tg.start_soon(operator)
    assert result == {"status": "answered", "answer": "Yes, Saturday works."}
    n = platform.notifications[0]
    assert n.sent_at is None
    assert n.last_error is not None
    assert "ConnectError" in n.last_error
    assert escalator.failed == 1
    # the next round takes it again (attempt 2), still undelivered while the receiver is down
    await escalator.run_once()
    assert platform.notifications[0].attempts == 2
