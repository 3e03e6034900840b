"""The API gateway in front of the devstack's services, behaving as hosted Supabase's does.

Every request to a Supabase project passes a gateway before PostgREST, GoTrue or Realtime see it
(supabase/supabase docker/volumes/api/kong.yml and kong-entrypoint.sh; the CLI's
apps/cli-go/internal/start/templates/kong.yml and start.go). It does two things we reproduce:

1. key-auth on `/rest/v1/`, `/auth/v1/` (except the open verify, callback, authorize and jwks
   routes) and `/realtime/v1/` (websocket and REST API): an `apikey` header or `apikey` query
   parameter must be present, else 401 before any service runs. Hosted answers
   `{"message":"No API key found in request","hint":"No `apikey` request header or url param was
   found."}` with `sb-error-code: UNAUTHORIZED_MISSING_API_KEY`, and an unknown key
   `{"message":"Invalid API key","hint":"Double check your Supabase `anon` or `service_role` API
   key."}` (Kong's key-auth plugin says the same first message without a hint).
2. request-transformer: the new API keys are swapped for JWTs (LUA_AUTH_EXPR): an
   `Authorization` header that is not `Bearer sb_…` passes untouched (a user's session token);
   otherwise `apikey` = the secret key becomes `Bearer <service_role JWT>` and the publishable
   key `Bearer <anon JWT>`. On the Realtime websocket (LUA_RT_WS_EXPR) the `apikey` query
   parameter is replaced by the JWT and `x-api-key` added, which Realtime reads first.

A legacy JWT `apikey` is passed on unchanged and left to the service to verify (PostgREST's
PGRST301, Realtime's "The token provided is not a valid JWT"): the local gateway keeps no list of
issued legacy keys, so only a value that is neither one of our `sb_` keys nor JWT-shaped is
refused here as an invalid key.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from hitl_devstack.keys import OPAQUE_PREFIX, LocalKeys

GUARDED_PREFIXES = ("/rest/v1/", "/auth/v1/", "/realtime/v1/")
# kong.yml: auth-v1-open, -open-callback, -open-authorize, -open-jwks have no key-auth
OPEN_PREFIXES = (
    "/auth/v1/verify",
    "/auth/v1/callback",
    "/auth/v1/authorize",
    "/auth/v1/.well-known/jwks.json",
)
NO_KEY = {
    "message": "No API key found in request",
    "hint": "No `apikey` request header or url param was found.",
}
NO_KEY_ERROR_CODE = "UNAUTHORIZED_MISSING_API_KEY"
INVALID_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}


def gateway_error(body: dict[str, str], headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=401,
        media_type="application/json; charset=utf-8",
        headers=headers,
    )


class ApiGateway:
    """ASGI middleware: key-auth, then the new API keys swapped for the role's JWT."""

    def __init__(self, app: ASGIApp, keys: LocalKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if not _guarded(path) or scope.get("method") == "OPTIONS":  # CORS preflight: cors first
            await self.app(scope, receive, send)
            return
        headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        apikey = _header(headers, b"apikey") or _query(query, "apikey")
        if not apikey:
            denial = gateway_error(NO_KEY, {"sb-error-code": NO_KEY_ERROR_CODE})
            await self._deny(scope, receive, send, denial)
            return
        mapped = self.keys.opaque_key_jwt(apikey)
        if mapped is None and (apikey.startswith(OPAQUE_PREFIX) or apikey.count(".") != 2):
            await self._deny(scope, receive, send, gateway_error(INVALID_KEY))
            return
        scope = dict(scope)
        if scope["type"] == "websocket":
            if mapped is not None:
                query = [(k, mapped if k == "apikey" else v) for k, v in query]
                scope["query_string"] = urlencode(query).encode("latin-1")
                if _header(headers, b"x-api-key") is None:
                    headers.append((b"x-api-key", mapped.encode()))
        else:
            authorization = _header(headers, b"authorization")
            if authorization is None or authorization.startswith("Bearer sb_"):
                headers = [(k, v) for k, v in headers if k != b"authorization"]
                if mapped is not None:
                    headers.append((b"authorization", f"Bearer {mapped}".encode()))
        scope["headers"] = headers
        await self.app(scope, receive, send)

    async def _deny(self, scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        ws = WebSocket(scope, receive, send)
        try:  # the gateway answers the upgrade request with plain HTTP, as Kong does
            await ws.send_denial_response(response)
        except RuntimeError:  # the server cannot send HTTP responses on a websocket scope
            await ws.close(code=1008)


def _guarded(path: str) -> bool:
    return path.startswith(GUARDED_PREFIXES) and not path.startswith(OPEN_PREFIXES)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _query(query: list[tuple[str, str]], name: str) -> str | None:
    for key, value in query:
        if key == name:
            return value
    return None
