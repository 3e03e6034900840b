"""Helpers for the security tests: settings, a guarded echo app, the relay app on the memory twin,
signed Retell requests."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app
from hitl_relay.ports import Backend
from hitl_relay.retell import sign_retell
from hitl_relay.security import MemoryAuditSink, SecurityLayer
from hitl_relay.security.middleware import STATE_KEY, request_origin

KEY_A = "test-key-alpha-0123456789abcdef"
KEY_B = "test-key-bravo-0123456789abcdef"
RETELL_KEY = "retell-test-api-key-0123456789"
BASE_URL = "http://127.0.0.1:8080"
CLIENT_IP = "203.0.113.10"
# Generous limits unless a test sets its own: tests must not trip over the defaults.
NO_LIMITS = {
    "rate_limit_per_ip": "off",
    "rate_limit_per_key": "off",
    "rate_limit_per_call": "off",
    "rate_limit_auth_failures_per_ip": "off",
}


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "memory",
        "api_keys": f"{KEY_A},{KEY_B}",
        "audit_sink": "none",
        **NO_LIMITS,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@dataclass
class Guarded:
    """A tiny app behind the security layer: `/mcp` (protected) and `/open` echo what the
    guards decided; `/healthz` answers ok."""

    app: Starlette
    layer: SecurityLayer
    audit: MemoryAuditSink

    def client(self, ip: str = CLIENT_IP, base_url: str = BASE_URL) -> TestClient:
        return TestClient(self.app, base_url=base_url, client=(ip, 40000))


def guarded_app(settings: Settings) -> Guarded:
    audit = MemoryAuditSink()
    layer = SecurityLayer(settings, audit=audit)

    async def echo(request: Request) -> Response:
        origin = request_origin(request.scope)
        body = await request.body()
        return JSONResponse(
            {
                "key": request.scope["state"].get(STATE_KEY),
                "client": str(origin.client) if origin else None,
                "https": origin.https if origin else None,
                "body_bytes": len(body),
            }
        )

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/mcp", echo, methods=["GET", "POST", "DELETE"]),
            Route("/open", echo, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=layer.middleware(),
    )
    return Guarded(app, layer, audit)


def memory_backend(platform: MemoryPlatform, auto_answer: str | None = None) -> Any:
    """A backend factory for `create_app` serving `platform`, optionally answering every case."""

    @asynccontextmanager
    async def factory(_settings: Settings) -> AsyncIterator[Backend]:
        async with anyio.create_task_group() as tg:
            if auto_answer is not None:
                tg.start_soon(platform.operator.answer_every_case, auto_answer, 0.0)
            yield platform.backend()
            tg.cancel_scope.cancel()

    return factory


@dataclass
class RelayApp:
    client: TestClient
    platform: MemoryPlatform
    audit: MemoryAuditSink
    layer: SecurityLayer


@contextmanager
def relay_app(
    settings: Settings,
    *,
    auto_answer: str | None = None,
    platform: MemoryPlatform | None = None,
    ip: str = CLIENT_IP,
    raise_server_exceptions: bool = True,
) -> Iterator[RelayApp]:
    """The real relay app (`create_app`) on the memory twin, lifespan running."""
    platform = platform or MemoryPlatform()
    audit = MemoryAuditSink()
    layer = SecurityLayer(settings, audit=audit)
    app = create_app(settings, backend=memory_backend(platform, auto_answer), security=layer)
    with TestClient(
        app,
        base_url=BASE_URL,
        client=(ip, 40000),
        raise_server_exceptions=raise_server_exceptions,
    ) as client:
        yield RelayApp(client, platform, audit, layer)


@dataclass
class RetellSigner:
    """Signs Retell bodies with strictly increasing timestamps (no accidental replays)."""

    key: str = RETELL_KEY
    _last: int = field(default=0)

    def timestamp(self) -> int:
        self._last = max(self._last + 1, int(time.time() * 1000))
        return self._last

    def headers(self, body: bytes, *, timestamp_ms: int | None = None) -> dict[str, str]:
        stamp = self.timestamp() if timestamp_ms is None else timestamp_ms
        return {
            "content-type": "application/json",
            "x-retell-signature": sign_retell(body, self.key, stamp),
        }


def retell_body(
    question: str = "May I refund 42 euros for order 4411?",
    *,
    call_id: str = "call_5f0c1",
    agent_id: str = "agent_9a2",
    **args: Any,
) -> bytes:
    payload = {
        "name": "ask_human",
        "call": {
            "call_id": call_id,
            "agent_id": agent_id,
            "from_number": "+14155550100",
            "to_number": "+14155550199",
            "direction": "inbound",
            "transcript_object": [
                {"role": "agent", "content": "Hello, how can I help?", "words": []},
                {"role": "user", "content": "I want a refund for my parcel.", "words": []},
            ],
        },
        "args": {"question": question, **args},
    }
    return json.dumps(payload).encode()


def relay_breaker(relay: RelayApp) -> Any:
    """The circuit breaker of the relay `relay_app` runs."""
    from hitl_relay.http_app import _relay_state_of

    state = _relay_state_of(relay.client.app)
    assert state is not None
    return state.get().breaker
