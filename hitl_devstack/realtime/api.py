"""Realtime's REST broadcast endpoints.

- `POST /api/broadcast` (`broadcast_controller.ex`, `lib/realtime/tenants/batch_broadcast.ex`):
  `{"messages": [{topic, event, payload, private?, id?}]}` → 202 with an empty body; private
  messages go out only when the token passes the RLS write check for their topic, otherwise they
  are skipped silently; sockets receive a JSON Phoenix.Socket.Broadcast.
- `POST /api/broadcast/{topic}/events/{event}[?private=true]`
  (`broadcast_single_controller.ex`, `lib/realtime/tenants/single_broadcast.ex`): a JSON or
  `application/octet-stream` body → 202; a private topic without write permission is a 403
  `{"message": "Unauthorized"}`; sockets receive a UserBroadcast (binary kind 4 on V2).

Auth (`plugs/auth_tenant.ex`): `Authorization: Bearer <jwt>`, else the `apikey` header; a
missing or invalid token is 401 `{"message": "Unauthorized"}`. Validation errors are Ecto
changeset errors, 422 `{"errors": {...}}`.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hitl_devstack.keys import TokenError
from hitl_devstack.realtime.authorization import (
    AuthContext,
    DatabaseUnavailable,
    Policies,
    RlsPolicyError,
    write_policies,
)
from hitl_devstack.realtime.serializer import dumps

if TYPE_CHECKING:
    from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits


class BroadcastHost(Protocol):
    """What the REST broadcast endpoints need of the Realtime service (its `BroadcastHandler` is
    one): its context (keys, pool), its limits and rate counter, and delivery to the sockets."""

    ctx: Any
    limits: RealtimeLimits
    events: RateCounter

    def deliver_broadcast(
        self, subtopic: str, private: bool, event: str, payload: dict[str, Any], msg_id: Any
    ) -> None: ...

    def deliver_user_broadcast(
        self, subtopic: str, private: bool, event: str, body: bytes, is_json: bool
    ) -> None: ...


PAYLOAD_TOO_LARGE = "Payload size exceeds tenant limit"
BLANK = "can't be blank"
INVALID = "is invalid"


def _unauthorized(status: int = 401) -> JSONResponse:
    return JSONResponse({"message": "Unauthorized"}, status_code=status)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token if scheme.lower() == "bearer" and token else None
    return request.headers.get("apikey") or None


def _claims(service: BroadcastHost, request: Request) -> dict[str, Any] | None:
    token = _token(request)
    if token is None:
        return None
    try:
        claims: dict[str, Any] = service.ctx.keys.verify(token)
    except TokenError:
        return None
    return claims


async def _can_write(
    service: BroadcastHost, request: Request, claims: dict[str, Any], topic: str
) -> bool:
    """get_write_authorizations for this token on `topic` (raises RlsPolicyError /
    DatabaseUnavailable)."""
    headers = {k: v for k, v in request.headers.items()}
    policies = await write_policies(
        service.ctx.pool, AuthContext(topic, claims, headers), Policies()
    )
    return policies.broadcast_write is True


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _message_errors(m: Any, max_bytes: int) -> dict[str, list[str]]:
    """message_changeset/3: cast id/topic/payload/event/private, topic/payload/event required."""
    if not isinstance(m, dict):
        return {"messages": [INVALID]}
    errors: dict[str, list[str]] = {}
    for name, kind in (("topic", str), ("event", str), ("payload", dict)):
        value = m.get(name)
        if value is None or value == "":
            errors[name] = [BLANK]
        elif not isinstance(value, kind):
            errors[name] = [INVALID]
    private = m.get("private")
    if private is not None and not isinstance(private, bool) and private not in ("true", "false"):
        errors["private"] = [INVALID]
    if m.get("id") is not None and not _is_uuid(m["id"]):  # embeds_many: :binary_id
        errors["id"] = [INVALID]
    if "payload" not in errors and len(dumps(m["payload"]).encode()) > max_bytes:
        errors["payload"] = [PAYLOAD_TOO_LARGE]
    return errors


async def batch_broadcast(service: BroadcastHost, request: Request) -> Response:
    claims = _claims(service, request)
    if claims is None:
        return _unauthorized()
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as e:
        return JSONResponse({"message": f"invalid JSON body: {e}"}, status_code=400)
    messages = body.get("messages") if isinstance(body, dict) else None
    if messages is None or messages == []:
        return JSONResponse({"errors": {"messages": [BLANK]}}, status_code=422)
    if not isinstance(messages, list):
        return JSONResponse({"errors": {"messages": [INVALID]}}, status_code=422)
    errors = [_message_errors(m, service.limits.max_payload_bytes) for m in messages]
    if any(errors):
        return JSONResponse({"errors": {"messages": errors}}, status_code=422)
    avg = service.events.current_avg()  # check_rate_limit/3
    if avg > service.limits.max_events_per_second:
        return JSONResponse({"message": "You have exceeded your rate limit"}, status_code=429)
    if len(messages) + avg > service.limits.max_events_per_second:
        return JSONResponse(
            {"message": "Too many messages to broadcast, please reduce the batch size"},
            status_code=429,
        )
    allowed: dict[str, bool] = {}
    for m in messages:
        private = m.get("private") in (True, "true")
        topic = m["topic"]
        if private:
            if topic not in allowed:  # one write check per topic, as grouped there
                try:
                    allowed[topic] = await _can_write(service, request, claims, topic)
                except (RlsPolicyError, DatabaseUnavailable):
                    allowed[topic] = False
            if not allowed[topic]:
                continue  # skipped silently: the response is still 202
        service.events.add()
        service.deliver_broadcast(topic, private, m["event"], m["payload"], m.get("id"))
    return Response(status_code=202)


def _content_kind(request: Request) -> str | None:
    """ValidateBroadcastContentType: JSON, octet-stream, or none at all (treated as JSON)."""
    raw = request.headers.get("content-type")
    if raw is None:
        return "json"
    media = raw.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return "json"
    if media == "application/octet-stream":
        return "binary"
    return None


async def single_broadcast(service: BroadcastHost, request: Request) -> Response:
    kind = _content_kind(request)
    if kind is None:
        return JSONResponse(
            {"error": "Unsupported Media Type. Use application/json or application/octet-stream"},
            status_code=415,
        )
    claims = _claims(service, request)
    if claims is None:
        return _unauthorized()
    topic = request.path_params["topic"]
    event = request.path_params["event"]
    private = request.query_params.get("private") == "true"
    raw = await request.body()
    if kind == "json":
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError as e:
            return JSONResponse({"message": f"invalid JSON body: {e}"}, status_code=400)
        payload = parsed if isinstance(parsed, dict) else {"_json": parsed}  # Plug.Parsers.JSON
        body = dumps(payload).encode()
    else:
        body = raw
    if len(body) > service.limits.max_payload_bytes:
        return JSONResponse({"errors": {"payload": [PAYLOAD_TOO_LARGE]}}, status_code=422)
    if service.events.current_avg() >= service.limits.max_events_per_second:
        return JSONResponse({"message": "You have exceeded your rate limit"}, status_code=429)
    if private:
        try:
            if not await _can_write(service, request, claims, topic):
                return _unauthorized(403)
        except RlsPolicyError:
            return JSONResponse({"message": "RLS policy error"}, status_code=422)
        except DatabaseUnavailable:
            return JSONResponse({"message": "Tenant database unavailable"}, status_code=422)
    service.events.add()
    service.deliver_user_broadcast(topic, private, event, body, kind == "json")
    return Response(status_code=202)
