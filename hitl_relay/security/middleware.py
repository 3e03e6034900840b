"""The ASGI guards in front of the relay's routes, outermost first:

1. `NetworkGuard`: HTTPS enforcement (403 or 308), client address (X-Forwarded-For only from
   trusted proxies), IP allowlist (403), per-address rate limit BEFORE authentication (429),
   request body size limit (413; the body is buffered once and replayed to the app).
2. `OriginGuard`: a browser Origin that is neither listed nor same-origin → 403.
3. Starlette's `CORSMiddleware` (preflights for listed origins; nothing for the others).
4. `AuthGuard` on the protected paths (`/mcp`): addresses that spent their failed-auth budget
   get 429 before any key is compared; bearer key (401 `{"error": "unauthorized"}` with
   `WWW-Authenticate: Bearer`, never saying what was wrong); per-key rate limit; per-call-id
   rate limit on `tools/call` requests carrying a `call_id` (429 with `Retry-After`).

Every refusal is a small JSON body, counted in Prometheus and recorded in the audit sink.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hitl_relay import metrics
from hitl_relay.models import DuplicateKeyError, call_id_of, loads_strict
from hitl_relay.security.network import NetworkPolicy, Origin
from hitl_relay.security.ratelimit import Decision, RateLimiter, Rules
from hitl_relay.security.settings import SecuritySettings


class SecurityLayer(Protocol):
    """What the guards read of the security layer (`hitl_relay.security.layer.SecurityLayer`,
    which builds them with itself)."""

    settings: SecuritySettings
    network: NetworkPolicy
    origins: OriginPolicy
    limiter: RateLimiter
    rules: Rules
    protected: tuple[str, ...]

    def host_allowed(self, headers: Headers) -> bool: ...

    def identify(self, authorization: str | None) -> str | None: ...

    def record(self, action: str, actor: str, outcome: str, **detail: Any) -> None: ...

    def refused_by_limit(self, scope: str, actor: str, decision: Decision, path: str) -> None: ...


# Served to anyone who can reach the process (load balancers' probes).
EXEMPT_PATHS = frozenset({"/healthz"})
# Paths outside the MCP SDK's own Host check (it covers /mcp) that still tell something to whoever
# reaches them: checked against the same host list (DNS rebinding).
HOST_CHECKED = frozenset({"/metrics", "/readyz"})
STATE_ORIGIN = "hitl_origin"
STATE_BODY = "hitl_body"
STATE_KEY = "hitl_key"


def key_of(ctx: object) -> str | None:
    """The fingerprint of the API key that authenticated an MCP request (`ctx`: the SDK's
    request context; None over stdio, or when the relay serves without keys): cases are scoped
    to it."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    return key_of_scope(scope) if isinstance(scope, dict) else None


def key_of_scope(scope: Scope) -> str | None:
    """`key_of` for an ASGI scope the gate has seen."""
    key = (scope.get("state") or {}).get(STATE_KEY)
    return key if isinstance(key, str) else None


def request_origin(scope: Scope) -> Origin | None:
    state = scope.get("state") or {}
    found = state.get(STATE_ORIGIN)
    return found if isinstance(found, Origin) else None


def buffered_body(scope: Scope) -> bytes | None:
    state = scope.get("state") or {}
    body = state.get(STATE_BODY)
    return body if isinstance(body, bytes) else None


def error_response(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def unauthorized() -> Response:
    return error_response(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="hitl-relay"'})


def too_many(decision: Decision) -> Response:
    seconds = decision.retry_after_header
    return JSONResponse(
        {"error": "rate_limited", "retry_after": int(seconds)},
        status_code=429,
        headers={"Retry-After": seconds},
    )


class NetworkGuard:
    def __init__(self, app: ASGIApp, layer: SecurityLayer) -> None:
        self.app = app
        self.layer = layer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        layer = self.layer
        origin = layer.network.origin(scope)
        scope.setdefault("state", {})[STATE_ORIGIN] = origin
        if scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope, origin)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await refusal(scope, receive, send)
            return
        if scope["type"] == "http":
            await self._with_body_limit(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope, origin: Origin) -> Response | None:
        layer = self.layer
        mode = layer.settings.https_mode
        if mode != "off" and not origin.https:
            layer.record("https_required", f"ip:{origin.client}", "refused", path=scope["path"])
            if mode == "redirect" and scope["type"] == "http" and layer.settings.allowed_hosts:
                url = _https_url(scope, layer.settings.allowed_hosts)
                return RedirectResponse(url, status_code=308)
            # No configured host to send the client to: refuse rather than redirect to
            # whatever Host the client sent (an open redirect).
            return error_response(403, "https required")
        if scope["path"] in HOST_CHECKED and not layer.host_allowed(Headers(scope=scope)):
            layer.record("host_refused", f"ip:{origin.client}", "refused", path=scope["path"])
            return error_response(421, "unknown host")
        if not layer.network.allowed(origin.client):
            layer.record("ip_refused", f"ip:{origin.client}", "refused", path=scope["path"])
            return error_response(403, "forbidden")
        decision = await layer.limiter.hit(layer.rules.per_ip, str(origin.client))
        if not decision.allowed:
            layer.refused_by_limit("ip", f"ip:{origin.client}", decision, scope["path"])
            return too_many(decision)
        return None

    async def _with_body_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = await self._read_body(scope, receive, send)
        if read is None:
            return  # refused
        # One copy of the body, in the scope's state and the replayed message: this frame lives
        # as long as the request (minutes for a call waiting on an operator).
        body, complete, trailing = read
        scope["state"][STATE_BODY] = body
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]
        if trailing is not None:
            pending.append(trailing)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[bytes, bool, Message | None] | None:
        """The whole body, whether it is complete, and the message that ended it early (the
        client went away); None once a body over the limit has been refused."""
        limit = self.layer.settings.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await error_response(413, "request body too large")(scope, receive, send)
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body), False, message  # gone before the body was complete
            body.extend(message.get("body", b""))
            if len(body) > limit:
                await error_response(413, "request body too large")(scope, receive, send)
                return None
            if not message.get("more_body", False):
                return bytes(body), True, None


def _https_url(scope: Scope, allowed_hosts: list[str]) -> str:
    headers = Headers(scope=scope)
    host = headers.get("host") or ""
    if host.endswith(":80"):
        host = host[:-3]
    if host not in allowed_hosts:
        # Never redirect to a host name the client made up (an open redirect).
        host = allowed_hosts[0]
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    url = f"https://{host}{path.decode('latin-1')}"
    return url + (f"?{query.decode('latin-1')}" if query else "")


class OriginGuard:
    def __init__(self, app: ASGIApp, layer: SecurityLayer) -> None:
        self.app = app
        self.layer = layer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin_header = headers.get("origin")
        if origin_header is not None:
            origin = request_origin(scope)
            https = origin.https if origin is not None else False
            if not self.layer.origins.allowed(origin_header, headers.get("host"), https):
                client = origin.client if origin is not None else "?"
                self.layer.record(
                    "origin_refused",
                    f"ip:{client}",
                    "refused",
                    path=scope["path"],
                    origin=origin_header[:200],
                )
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await error_response(403, "origin not allowed")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AuthGuard:
    def __init__(self, app: ASGIApp, layer: SecurityLayer) -> None:
        self.app = app
        self.layer = layer

    def _protected(self, path: str) -> bool:
        return any(
            path == prefix or path.startswith(prefix + "/") for prefix in self.layer.protected
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope) -> Response | None:
        layer = self.layer
        origin = request_origin(scope)
        ip = str(origin.client) if origin is not None else "unknown"
        path = scope["path"]
        headers = Headers(scope=scope)
        key = layer.identify(headers.get("authorization"))
        if key is None:
            # The budget only slows down guessing: a valid key is never refused by it, so a
            # stranger failing from a shared address (a NAT, Retell's egress) locks nobody out.
            spent = await layer.limiter.peek(layer.rules.auth_failures, ip)
            if not spent.allowed:
                layer.refused_by_limit("auth_failures", f"ip:{ip}", spent, path)
                return too_many(spent)
            await layer.limiter.hit(layer.rules.auth_failures, ip)
            metrics.auth_failures.inc()
            reason = "missing" if not headers.get("authorization") else "wrong"
            layer.record("auth_failed", f"ip:{ip}", "refused", path=path, reason=reason)
            return unauthorized()
        scope.setdefault("state", {})[STATE_KEY] = key
        decision = await layer.limiter.hit(layer.rules.per_key, key)
        if not decision.allowed:
            layer.refused_by_limit("key", key, decision, path)
            return too_many(decision)
        body = buffered_body(scope)
        if scope["method"] == "POST" and body:
            try:
                call_ids = list(tool_call_ids(body))
            except DuplicateKeyError as e:
                # Readers of a body with a key twice disagree on its value: nobody reads it.
                layer.record("invalid_json", key, "refused", path=path, reason=str(e))
                return JSONResponse(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32700, "message": f"Parse error: {e}"},
                    },
                    status_code=400,
                )
            for call_id in call_ids:
                decision = await layer.limiter.hit(layer.rules.per_call, call_id)
                if not decision.allowed:
                    layer.refused_by_limit("call", f"call:{call_id[:128]}", decision, path)
                    return too_many(decision)
        return None


def tool_call_ids(body: bytes) -> Iterator[str]:
    """The call id of each JSON-RPC `tools/call` in an MCP request body, as the tool will read
    it (`models.call_id_of`). Raises DuplicateKeyError for a body naming a key twice."""
    try:
        parsed: Any = loads_strict(body)
    except DuplicateKeyError:
        raise
    except (ValueError, RecursionError):
        return
    messages = parsed if isinstance(parsed, list) else [parsed]
    for message in messages[:100]:
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            continue
        params = message.get("params")
        arguments = params.get("arguments") if isinstance(params, dict) else None
        if not isinstance(arguments, dict):
            continue
        call_id = call_id_of(arguments)
        if call_id is not None:
            yield call_id


class OriginPolicy:
    """Listed origins (exact, or `scheme://host:*` for any port) plus same-origin requests."""

    def __init__(self, allowed: list[str]) -> None:
        self.exact = {a for a in allowed if not a.endswith(":*")}
        self.any_port = tuple(a[:-2] for a in allowed if a.endswith(":*"))

    def listed(self, origin: str) -> bool:
        if origin in self.exact:
            return True
        return any(origin == base or origin.startswith(base + ":") for base in self.any_port)

    def allowed(self, origin: str, host: str | None, https: bool) -> bool:
        origin = origin.strip()
        if self.listed(origin):
            return True
        return same_origin(origin, host, https)

    def cors_regex(self) -> str | None:
        import re

        if not self.any_port:
            return None
        return "|".join(rf"{re.escape(base)}(:\d+)?" for base in self.any_port)


def same_origin(origin: str, host: str | None, https: bool) -> bool:
    if not host or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    scheme = "https" if https else "http"
    if parts.scheme != scheme or not parts.hostname:
        return False
    default = 443 if scheme == "https" else 80
    origin_netloc = f"{parts.hostname}:{port or default}"
    try:
        host_parts = urlsplit(f"//{host}")
        host_port = host_parts.port
    except ValueError:
        return False
    host_netloc = f"{host_parts.hostname}:{host_port or default}"
    return origin_netloc.lower() == host_netloc.lower()
