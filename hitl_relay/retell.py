"""The Retell custom-function endpoint: `POST /retell/ask_human`, the webhook way to ask.

Retell POSTs `{"name", "call", "args"}` (or, with "args at root", the arguments themselves at
the top level) and signs it: `x-retell-signature: v=<unix ms>,d=<hex>`, where `d` is the hex
HMAC-SHA256, keyed with the Retell API key, of the raw body followed by the timestamp (as in
retell-sdk's `retell/lib/webhook_auth.py`). The endpoint:

1. refuses addresses that spent their failed-auth budget (429), then verifies the signature in
   constant time, refusing a missing or malformed header, a wrong digest, and a timestamp more
   than 5 minutes away from now in either direction (401 `{"error": "unauthorized"}`);
2. refuses a signature it has already accepted (a replay; remembered for 10 minutes, across
   replicas when the rate-limit storage is Postgres). Retell's own retries (up to two after a
   failure or timeout) are new requests with new timestamps, so they pass, and they join the
   same case: `hitl_open_case` is idempotent on call id + question;
3. maps the call into the same `AskHumanRequest` the MCP tool takes: `call.call_id`,
   `call.agent_id`, the caller's numbers (`caller_info`), the transcript
   (`conversation_history`, last 200 turns), the arguments (question, context, priority,
   urgency, timeout_seconds);
4. asks (per-call-id rate limit first) and answers 200 with JSON Retell hands to its LLM:
   `{"result": <what to say>, "status", "answer", "case_id", "waited_ms", "message"}`.
   Invalid arguments also answer 200, `{"result": "Invalid arguments...", "error":
   "invalid_request", "problems": [...]}`, so the agent can correct itself (as the MCP tool's
   `isError` result does); a body that is not a JSON object is a 400.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from loguru import logger
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hitl_relay import metrics
from hitl_relay.errors import InvalidRequest
from hitl_relay.models import (
    HISTORY_MAX_TURNS,
    TURN_CONTENT_MAX,
    AskHumanRequest,
    AskResult,
    DuplicateKeyError,
    loads_strict,
    parse_ask_request,
)
from hitl_relay.relay import Relay
from hitl_relay.security.audit import redacted
from hitl_relay.security.layer import SecurityLayer
from hitl_relay.security.middleware import buffered_body, request_origin, too_many

PATH = "/retell/ask_human"
SIGNATURE_HEADER = "x-retell-signature"
SIGNATURE_RE = re.compile(r"v=(\d{1,16}),d=([0-9a-f]{64})")
TOLERANCE_MS = 5 * 60 * 1000

Failure = Literal["missing", "malformed", "stale", "mismatch"]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    ok: bool
    failure: Failure | None = None
    digest: str | None = None


def sign_retell(body: bytes, api_key: str, timestamp_ms: int | None = None) -> str:
    """The `x-retell-signature` value Retell would send for `body` (local tools and tests)."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    digest = hmac.new(api_key.encode(), body + str(ts).encode(), hashlib.sha256).hexdigest()
    return f"v={ts},d={digest}"


def verify_retell_signature(
    body: bytes,
    api_key: str,
    header: str | None,
    *,
    now_ms: int | None = None,
    tolerance_ms: int = TOLERANCE_MS,
) -> SignatureCheck:
    """Check `x-retell-signature` against the raw body (constant-time digest comparison)."""
    if not header:
        return SignatureCheck(False, "missing")
    match = SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        return SignatureCheck(False, "malformed")
    stamp = int(match.group(1))
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - stamp) > tolerance_ms:
        return SignatureCheck(False, "stale")
    expected = hmac.new(api_key.encode(), body + match.group(1).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), match.group(2)):
        return SignatureCheck(False, "mismatch")
    return SignatureCheck(True, digest=match.group(2))


# ---------------------------------------------------------------- mapping


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _split_payload(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(args, call) for both body shapes: wrapped `{name, call, args}` or args at root."""
    args = payload.get("args")
    call = payload.get("call")
    call_obj: Mapping[str, Any] = call if isinstance(call, Mapping) else {}
    if isinstance(args, Mapping) and ("call" in payload or "name" in payload):
        return args, call_obj
    return {k: v for k, v in payload.items() if k not in ("name", "call")}, call_obj


def _history(call: Mapping[str, Any]) -> list[dict[str, str]]:
    """The transcript as {role, content} turns (the last HISTORY_MAX_TURNS), oldest first."""
    turns: list[dict[str, str]] = []
    structured = call.get("transcript_object")
    if isinstance(structured, list):
        for item in structured:
            if not isinstance(item, Mapping):
                continue
            role, content = item.get("role"), item.get("content")
            if isinstance(role, str) and isinstance(content, str) and role:
                turns.append({"role": _role(role), "content": content})
    elif isinstance(call.get("transcript"), str):
        for line in str(call["transcript"]).splitlines():
            speaker, sep, said = line.partition(":")
            if sep and speaker.strip() and len(speaker) <= 32:
                turns.append({"role": _role(speaker.strip()), "content": said.strip()})
            elif turns and line.strip():
                turns[-1]["content"] += "\n" + line.strip()
    # Retell's own transcript, not the agent's words: trimmed to fit rather than refused.
    return [
        {
            "role": t["role"].replace("\x00", ""),
            "content": t["content"].replace("\x00", "")[-TURN_CONTENT_MAX:],
        }
        for t in turns[-HISTORY_MAX_TURNS:]
    ]


def _role(role: str) -> str:
    lowered = role.strip().lower()
    return {"user": "caller", "agent": "agent"}.get(lowered, lowered[:64] or "unknown")


def retell_arguments(payload: object) -> dict[str, Any]:
    """The `ask_human` arguments a Retell custom-function body stands for."""
    if not isinstance(payload, Mapping):
        raise InvalidRequest("body", "must be a JSON object")
    args, call = _split_payload(payload)
    out: dict[str, Any] = {
        k: v
        for k, v in args.items()
        if k
        in (
            "question",
            "context",
            "priority",
            "urgency",
            "timeout_seconds",
            "timeoutSeconds",
            "conversation_history",
            "conversationHistory",
            "case_id",  # a follow-up after needs_info continues that case
            "caseId",
        )
    }
    # The signed call object is authoritative for who is calling; args fill in without one.
    call_id = _text(call.get("call_id")) or args.get("call_id", args.get("callId"))
    agent_id = _text(call.get("agent_id")) or args.get("agent_id", args.get("agentId"))
    session_id = args.get("session_id", args.get("sessionId", call_id))
    out.update(call_id=call_id, agent_id=agent_id, session_id=session_id)
    for name in ("call_id", "agent_id", "session_id"):
        if out[name] is None:
            del out[name]
    caller: dict[str, Any] = {
        k: call[k] for k in ("from_number", "to_number", "direction") if _text(call.get(k))
    }
    given = args.get("caller_info", args.get("callerInfo"))
    if given is not None and not isinstance(given, Mapping):
        raise InvalidRequest("caller_info", "must be an object")
    out["caller_info"] = {**caller, **(given or {})}
    if "conversation_history" not in out and "conversationHistory" not in out:
        out["conversation_history"] = _history(call)
    return out


# ---------------------------------------------------------------- the endpoint

RelaySource = Callable[[], Relay]


class RetellEndpoint:
    """`POST /retell/ask_human`."""

    def __init__(self, layer: SecurityLayer, relay: RelaySource, api_key: str) -> None:
        self.layer = layer
        self.relay = relay
        self._key = api_key

    async def handle(self, request: Request) -> Response:
        layer = self.layer
        origin = request_origin(request.scope)
        ip = str(origin.client) if origin is not None else "unknown"
        body = buffered_body(request.scope)
        if body is None:
            body = await request.body()
        check = verify_retell_signature(body, self._key, request.headers.get(SIGNATURE_HEADER))
        if not check.ok:
            # The failed-auth budget applies to failures only: every Retell customer shares
            # Retell's egress addresses, and a correctly signed request is never refused by it.
            spent = await layer.limiter.peek(layer.rules.auth_failures, ip)
            if not spent.allowed:
                layer.refused_by_limit("auth_failures", f"ip:{ip}", spent, PATH)
                return too_many(spent)
            return await self._refuse(ip, check.failure or "mismatch")
        assert check.digest is not None
        fresh = await layer.limiter.hit(layer.rules.replay, check.digest)
        if not fresh.allowed:
            return await self._refuse(ip, "replay")
        try:
            payload = loads_strict(body)
        except DuplicateKeyError as e:
            return JSONResponse({"error": "invalid_json", "detail": str(e)}, status_code=400)
        except (ValueError, RecursionError):
            return JSONResponse(
                {"error": "invalid_json", "detail": "the body must be a JSON object"},
                status_code=400,
            )
        if not isinstance(payload, dict):
            return JSONResponse(
                {"error": "invalid_json", "detail": "the body must be a JSON object"},
                status_code=400,
            )
        try:
            ask = parse_ask_request(retell_arguments(payload))
        except InvalidRequest as e:
            return self._invalid(e, payload)
        limited = await layer.limiter.hit(layer.rules.per_call, ask.call_id)
        if not limited.allowed:
            layer.refused_by_limit("call", f"call:{ask.call_id}", limited, PATH)
            return too_many(limited)
        try:
            result = await self._ask_while_connected(request, ask)
        except InvalidRequest as e:
            return self._invalid(e, payload)
        if result is None:
            # Retell gave up on this attempt (it retries; the retry joins the same case).
            layer.record("retell_ask", f"retell:{ask.agent_id}", "cancelled", call_id=ask.call_id)
            return JSONResponse({"error": "client disconnected"}, status_code=499)
        layer.record(
            "retell_ask",
            f"retell:{ask.agent_id}",
            result.status,
            call_id=ask.call_id,
            case_id=result.case_id,
            waited_ms=result.waited_ms,
        )
        logger.bind(call_id=ask.call_id, case_id=result.case_id).info(
            "retell ask_human {}: {}",
            result.status,
            redacted(ask.question, layer.settings.redact_logs),
        )
        return JSONResponse({"result": result.text(), **result.model_dump(mode="json")})

    async def _ask_while_connected(
        self, request: Request, ask: AskHumanRequest
    ) -> AskResult | None:
        """The relay's answer, or None when the client hung up first (the wait is cancelled:
        the session closes as `cancelled`, the case stays open for a retry to join)."""
        result: AskResult | None = None
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            result = await self.relay().ask(ask)
            tg.cancel_scope.cancel()
        return result

    async def _refuse(self, ip: str, reason: str) -> Response:
        layer = self.layer
        await layer.limiter.hit(layer.rules.auth_failures, ip)
        metrics.auth_failures.inc()
        layer.record("retell_signature", f"ip:{ip}", "refused", reason=reason, path=PATH)
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    def _invalid(self, error: InvalidRequest, payload: Mapping[str, Any]) -> Response:
        metrics.invocations.labels(outcome="invalid").inc()
        lines = [f"{field}: {rule}" for field, rule in error.problems]
        call = payload.get("call")
        agent = call.get("agent_id") if isinstance(call, Mapping) else None
        self.layer.record(
            "retell_ask",
            f"retell:{agent if isinstance(agent, str) else '?'}"[:140],
            "invalid",
            problems=lines[:20],
        )
        return JSONResponse(
            {
                "result": "Invalid arguments. Fix these and call again:\n" + "\n".join(lines),
                "error": "invalid_request",
                "status": "invalid_request",
                "problems": [{"field": f, "rule": r} for f, r in error.problems],
            }
        )


def routes(layer: SecurityLayer, relay: RelaySource) -> list[BaseRoute]:
    """`POST /retell/ask_human` when HITL_RETELL_API_KEY is set; nothing otherwise."""
    key = layer.settings.retell_api_key
    if key is None or not key.get_secret_value():
        return []
    endpoint = RetellEndpoint(layer, relay, key.get_secret_value())
    return [Route(PATH, endpoint.handle, methods=["POST"])]
