"""Notification channels for escalations (the `Notifier` port): a Slack-compatible incoming
webhook and e-mail over SMTP.

- Webhook: `POST <url>` with a JSON body `{"text": ..., "hitl": {...}}`. Slack's incoming
  webhooks take `{"text": ...}` and authenticate the sender by the secret URL itself (so the
  URL is a secret setting); for receivers that verify a signature, the body is also signed with
  `HITL_NOTIFY_WEBHOOK_SECRET` exactly like the relay's callbacks (`x-hitl-signature:
  t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, `hitl_relay.signatures.verify_callback_signature`).
  Network errors, 408, 429 and 5xx are worth retrying; other answers are final.
- E-mail: the standard library's `smtplib` in a worker thread: STARTTLS when configured (a
  mail server wants it before AUTH), then AUTH with the configured user and password, then one
  message to every recipient. 4xx replies and network errors are worth retrying; 5xx are final.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

import anyio
import httpx

from hitl_relay.errors import DeliveryFailed
from hitl_relay.ports import Notification
from hitl_relay.signatures import SIGNATURE_HEADER, sign_callback

USER_AGENT = "hitl-relay-notify/1"


def describe(notification: Notification) -> str:
    """One line for a person: why, which priority, the question, the deadline."""
    p = notification.payload
    why = {
        "unclaimed": "nobody has claimed it",
        "deadline": "claimed but unanswered, the caller's deadline is near",
    }.get(notification.reason, notification.reason)
    question = str(p.get("question") or "")[:300]
    deadline = p.get("deadline_at")
    tail = f" Caller waits until {deadline}." if deadline else ""
    return (
        f"Escalated case {p.get('case_id')} to priority {p.get('priority')}: {why}. "
        f"Question: {question}{tail}"
    )


@dataclass
class WebhookNotifier:
    """A Slack-compatible incoming webhook (see the module docstring)."""

    url: str
    secret: str | None = None
    timeout_s: float = 5.0
    name: str = "webhook"
    transport: httpx.AsyncBaseTransport | None = None

    async def send(self, notification: Notification) -> None:
        body = json.dumps(
            {
                "text": describe(notification),
                "hitl": {"reason": notification.reason, **dict(notification.payload)},
            },
            default=str,
        ).encode()
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign_callback(self.secret, body)
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout_s, transport=self.transport, follow_redirects=False
            ) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from None
        if response.status_code >= 300:
            retryable = response.status_code in (408, 429) or response.status_code >= 500
            raise DeliveryFailed(f"HTTP {response.status_code}", retryable=retryable)


@dataclass
class EmailNotifier:
    """E-mail through an SMTP server (see the module docstring)."""

    host: str
    port: int
    sender: str
    recipients: Sequence[str]
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    timeout_s: float = 10.0
    name: str = "email"
    tls_context: ssl.SSLContext | None = None

    async def send(self, notification: Notification) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Subject"] = (
            f"[hitl-relay] escalated: priority {notification.payload.get('priority')} case "
            f"{str(notification.payload.get('case_id'))[:8]}"
        )
        message.set_content(describe(notification))
        await anyio.to_thread.run_sync(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as e:
            raise DeliveryFailed(
                f"SMTP {e.smtp_code}: {e.smtp_error!r}", retryable=400 <= e.smtp_code < 500
            ) from None
        except (smtplib.SMTPException, OSError) as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from None
