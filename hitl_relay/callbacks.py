"""Outgoing webhook callbacks: a case's answer (or timeout) POSTed to its `callback_url`.

Signed like Stripe's webhooks: `x-hitl-signature: t=<unix seconds>,v1=<hex>`, where `v1` is the
hex HMAC-SHA256, keyed with the case's `webhook_secret`, of `f"{t}.{body}"` (the raw body
bytes). Receivers check it with `verify_callback_signature()` (below) or five lines of their
own code, and refuse timestamps more than 5 minutes off (a replayed delivery).

Delivery (`CallbackSender.deliver`):
- only `https://` URLs without credentials in them; the host is resolved and EVERY address must
  be public (no private, loopback, link-local, multicast, reserved or unspecified address; the
  cloud metadata address 169.254.169.254 is link-local), and the connection is pinned to the
  vetted address (Host header and TLS SNI keep the name), so DNS cannot be switched between
  check and connect; redirects are not followed. `HITL_CALLBACK_ALLOW_PRIVATE=true` lifts both
  rules for local use (http:// and private addresses);
- retried with exponential backoff and jitter (stamina) on network errors, 408, 429 and 5xx,
  each attempt freshly signed, all within `HITL_CALLBACK_BUDGET_SECONDS`; other 4xx answers
  are final;
- recorded in the audit sink (`callback_delivery`: delivered | failed | refused, attempts,
  status, host), never with the secret or the body.

Receiver's check, in full:

    from hitl_relay.callbacks import verify_callback_signature
    ok = verify_callback_signature(secret, raw_body, request.headers["x-hitl-signature"])
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import stamina
from loguru import logger

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.models import AskResult
from hitl_relay.security.audit import AuditEvent, AuditSink, NullAuditSink
from hitl_relay.security.network import IPAddress
from hitl_relay.service_ports import CallbackOutbox, CallbackOutcome, QueuedCallback
from hitl_relay.signatures import (
    SIGNATURE_HEADER,
    TOLERANCE_S,
    sign_callback,
    verify_callback_signature,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TOLERANCE_S",
    "CallbackSender",
    "CallbackWorker",
    "Delivery",
    "callback_payload",
    "callback_worker",
    "sign_callback",
    "verify_callback_signature",
    "vet_callback_url",
]

USER_AGENT = "hitl-relay-callback/1"
RULE_PUBLIC = (
    "must be an https URL whose host resolves only to public addresses (no private, loopback, "
    "link-local, multicast or reserved address)"
)


# ---------------------------------------------------------------- signatures


# ---------------------------------------------------------------- SSRF guard


@dataclass(frozen=True, slots=True)
class Target:
    """A vetted callback destination: the URL, its host name and the addresses it may use."""

    url: str
    host: str
    port: int
    scheme: str
    addresses: tuple[IPAddress, ...]

    def pinned_url(self) -> str:
        """The URL with the host replaced by the first vetted address."""
        address = self.addresses[0]
        host = f"[{address}]" if address.version == 6 else str(address)
        parts = urlsplit(self.url)
        netloc = f"{host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


# IPv6 ranges whose addresses carry an IPv4 address a router or the host's stack will reach:
# IPv4-compatible (::a.b.c.d, RFC 4291 2.5.5.1, deprecated), NAT64 (64:ff9b::/96 RFC 6052, and the
# local-use 64:ff9b:1::/48 RFC 8215), 6to4 (2002::/16 RFC 3056), Teredo (2001::/32 RFC 4380).
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address `address` carries, in each form a stack or a translator reads."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _public(address: IPAddress) -> bool:
    """A global unicast address that embeds no address which is not (checked on the address a
    name resolved to, so a DNS name pointing at one of these forms is caught too)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL or address.teredo is not None:
            return False  # translated or tunnelled to wherever the operator's network says
        embedded = _embedded_ipv4(address)
        if embedded:
            return all(_public(v4) for v4 in embedded)
    return address.is_global and not address.is_multicast


async def vet_callback_url(url: object, *, allow_private: bool) -> Target:
    """Check `url` and resolve its host; raise `InvalidRequest("callback_url", rule)`."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise InvalidRequest("callback_url", "must be a URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("callback_url", "must be a valid URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise InvalidRequest("callback_url", "must use https")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("callback_url", "must not carry credentials")
    host = parts.hostname
    if not host:
        raise InvalidRequest("callback_url", "must name a host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses: tuple[IPAddress, ...] = (ipaddress.ip_address(host),)
    except ValueError:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise InvalidRequest("callback_url", "host does not resolve") from None
        found: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
            if address not in found:
                found.append(address)
        addresses = tuple(found)
    if not addresses:
        raise InvalidRequest("callback_url", "host does not resolve")
    if not allow_private and not all(_public(a) for a in addresses):
        raise InvalidRequest("callback_url", RULE_PUBLIC)
    return Target(url=url, host=host, port=port, scheme=parts.scheme, addresses=addresses)


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a delivery ended: `delivered`, `failed` (after retries) or `refused` (SSRF)."""

    outcome: str
    attempts: int
    status: int | None = None
    error: str | None = None
    # A later delivery might succeed (network error, 408, 429, 5xx); false for 4xx, refusals.
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


class _Retryable(Exception):
    def __init__(self, status: int | None, error: str) -> None:
        self.status = status
        self.error = error
        super().__init__(error)


def callback_payload(result: AskResult, *, call_id: str | None, event: str) -> dict[str, Any]:
    """The JSON a callback carries: the result the agent got, plus what it was about."""
    return {
        "event": event,
        "call_id": call_id,
        "case_id": result.case_id,
        "status": result.status,
        "answer": result.answer,
        "message": result.message,
        "waited_ms": result.waited_ms,
        "sent_at": int(time.time()),
    }


class CallbackSender:
    """Signs, vets and delivers callbacks, with bounded retries; audits each delivery."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout_s: float = 10.0,
        budget_s: float = 60.0,
        max_attempts: int = 6,
        first_backoff_s: float = 0.5,
        audit: AuditSink | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self.max_attempts = max_attempts
        self.first_backoff_s = first_backoff_s
        self.audit: AuditSink = audit or NullAuditSink()
        self._client = client

    async def deliver(
        self,
        url: str,
        secret: str,
        payload: Mapping[str, Any],
        *,
        case_id: str | None = None,
    ) -> Delivery:
        try:
            target = await vet_callback_url(url, allow_private=self.allow_private)
        except InvalidRequest as e:
            delivery = Delivery("refused", 0, error=e.rule)
            self._record(delivery, case_id, host=_host_of(url))
            return delivery
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        client = self._client or httpx.AsyncClient(timeout=self.timeout_s)
        try:
            delivery = await self._attempts(client, target, secret, body)
        finally:
            if self._client is None:
                await client.aclose()
        self._record(delivery, case_id, host=target.host)
        return delivery

    async def _attempts(
        self, client: httpx.AsyncClient, target: Target, secret: str, body: bytes
    ) -> Delivery:
        attempts = 0
        try:
            async for attempt in stamina.retry_context(
                on=_Retryable,
                attempts=self.max_attempts,
                timeout=self.budget_s,
                wait_initial=self.first_backoff_s,
                wait_max=max(self.first_backoff_s, min(10.0, self.budget_s / 4)),
                wait_jitter=self.first_backoff_s,
            ):
                with attempt:
                    attempts += 1
                    status = await self._post(client, target, secret, body)
                    if 200 <= status < 300:
                        return Delivery("delivered", attempts, status)
                    if status in (408, 429) or status >= 500:
                        raise _Retryable(status, f"answered {status}")
                    return Delivery("failed", attempts, status, f"answered {status}")
        except _Retryable as e:
            return Delivery("failed", attempts, e.status, e.error, retryable=True)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _post(
        self, client: httpx.AsyncClient, target: Target, secret: str, body: bytes
    ) -> int:
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header(),
            SIGNATURE_HEADER: sign_callback(secret, body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            response = await client.post(
                target.pinned_url(),
                content=body,
                headers=headers,
                extensions=extensions,
                follow_redirects=False,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as e:
            raise _Retryable(None, type(e).__name__) from None
        return response.status_code

    def _record(self, delivery: Delivery, case_id: str | None, *, host: str) -> None:
        self.audit.record(
            AuditEvent(
                actor="relay",
                action="callback_delivery",
                outcome=delivery.outcome,
                case_id=case_id,
                detail={
                    "attempts": delivery.attempts,
                    "status": delivery.status,
                    "error": delivery.error,
                    "host": host[:255],
                },
            )
        )
        log = logger.bind(case_id=case_id, host=host, attempts=delivery.attempts)
        if delivery.ok:
            log.info("callback delivered ({})", delivery.status)
        else:
            log.warning("callback {}: {}", delivery.outcome, delivery.error)


def _host_of(url: object) -> str:
    if not isinstance(url, str):
        return "?"
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


# ---------------------------------------------------------------- the outbox worker


class CallbackWorker:
    """Delivers the platform's queued callbacks (the backend's `CallbackOutbox`), on any replica.

    Claims due callbacks with a lease, delivers each with the sender (which retries within its
    budget), and reports the outcome (which the platform audits). A delivery that still fails
    with a retryable error is tried again later, with exponential backoff (1 min, 2 min, 4 min,
    ... capped at 1 h), at most `max_attempts` times.
    """

    def __init__(
        self,
        outbox: CallbackOutbox,
        sender: CallbackSender,
        *,
        interval_s: float = 2.0,
        max_attempts: int = 8,
        batch: int = 10,
    ) -> None:
        self.outbox = outbox
        self.sender = sender
        self.interval_s = interval_s
        self.max_attempts = max_attempts
        self.batch = batch
        self.delivered = 0

    async def run_once(self) -> int:
        """Claim and deliver one batch; the number claimed."""
        claimed = await self.outbox.claim_callbacks(self.batch, int(self.sender.budget_s) + 60)
        async with anyio.create_task_group() as tg:
            for item in claimed:
                tg.start_soon(self._deliver, item)
        return len(claimed)

    async def _deliver(self, item: QueuedCallback) -> None:
        outcome: CallbackOutcome
        detail: dict[str, Any]
        if item.webhook_secret is None:
            outcome, detail = "failed", {"error": "the case has no webhook_secret"}
        else:
            url = str(item.callback_url)
            delivery = await self.sender.deliver(
                url, item.webhook_secret, item.payload, case_id=item.case_id
            )
            detail = {"status": delivery.status, "error": delivery.error, "host": _host_of(url)}
            if delivery.ok:
                outcome = "delivered"
                self.delivered += 1
            elif delivery.retryable and item.attempts < self.max_attempts:
                outcome = "retry"
            else:
                outcome = "failed"
        retry_in = min(3600, 60 * 2 ** (item.attempts - 1))
        try:
            await self.outbox.callback_result(item.id, outcome, detail, retry_in)
        except HitlError as e:
            # The lease runs out and the callback is claimed again: delivered at least once.
            logger.warning("callback {}: result not recorded: {}", item.id, e)

    async def run(self) -> None:
        """Until cancelled: claim and deliver; idle `interval_s` between empty polls."""
        failures = 0
        while True:
            try:
                claimed = await self.run_once()
                failures = 0
            except HitlError as e:
                failures += 1
                claimed = 0
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("callback worker: platform unavailable ({})", e)
            if claimed < self.batch:
                await anyio.sleep(min(60.0, self.interval_s * 2 ** min(failures, 5)))


def callback_worker(
    outbox: CallbackOutbox | None,
    *,
    wanted: bool,
    allow_private: bool,
    timeout_s: float,
    budget_s: float,
    audit: AuditSink | None = None,
) -> CallbackWorker | None:
    """The outbox worker delivering signed callbacks, when wanted and the backend has an
    outbox."""
    if not wanted or outbox is None:
        return None
    sender = CallbackSender(
        allow_private=allow_private, timeout_s=timeout_s, budget_s=budget_s, audit=audit
    )
    return CallbackWorker(outbox, sender)
