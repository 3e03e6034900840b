"""A channel join's parts that need no socket: its parameters, its token replies and its replay.

Following supabase/realtime (v2.129.8) `lib/realtime_web/channels/realtime_channel.ex` (join/3,
assign_access_token, confirm_token, pg_change_params) and `lib/realtime/messages.ex` (replay/5);
the websocket side of the join is in `join_handler.py`.
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from typing import Any

from hitl_devstack.keys import TokenError
from hitl_devstack.realtime.authorization import DB_ERRORS, Policies
from hitl_devstack.realtime.channel import Binding
from hitl_devstack.realtime.serializer import dumps

log = logging.getLogger("hitl_devstack.realtime")

REPLAY_HARD_LIMIT = 25  # lib/realtime/messages.ex @hard_limit
UNAUTHORIZED = "You do not have permissions to read from this Channel topic: "
DB_UNAVAILABLE = "Realtime was unable to connect to the project database"


class JoinRefused(Exception):
    def __init__(self, reason: str, *, disconnect: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.disconnect = disconnect


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def flag(value: Any) -> bool:
    """Payloads.FlexibleBoolean: true or "true"."""
    return value is True or value == "true"


def _phash(params: dict[str, Any]) -> int:
    """Stands in for :erlang.phash2/1 (0..2^27-1); clients only need a stable non-zero int."""
    return (zlib.crc32(dumps(params).encode()) & (2**27 - 1)) or 1


def join_token(params: dict[str, Any], socket_token: str) -> str:
    """realtime_channel.ex assign_access_token/handle_access_token."""
    first = params.get("access_token")
    if first is None or first is False:
        first = params.get("user_token")
    if isinstance(first, str) and first.startswith("sb_"):
        return socket_token
    for key in ("user_token", "access_token"):
        if isinstance(params.get(key), str):
            return str(params[key])
    return socket_token


def join_token_reason(e: TokenError) -> str:
    """The join reply for a refused token (realtime_channel.ex join/3 else branches)."""
    if e.kind == "InvalidJWTToken":
        return f"InvalidJWTToken: {e.message}"
    if e.kind == "JwtSignatureError":
        return "JwtSignatureError: Failed to validate JWT signature"
    return "MalformedJWT: The token provided is not a valid JWT"


def token_shutdown_message(e: TokenError) -> str:
    """shutdown_response text when a token stops being valid (handle_in "access_token",
    handle_info :confirm_token); a bad signature is `inspect(:signature_error)` there."""
    if e.kind == "InvalidJWTToken":
        return e.message
    if e.kind == "JwtSignatureError":
        return ":signature_error"
    return "The token provided is not a valid JWT"


def connect_error(e: TokenError) -> str:
    """user_socket.ex error_response/1 texts (HTTP 401)."""
    if e.kind == "MissingToken":
        return "API key is missing"
    if e.kind == "InvalidJWTToken":
        return "Token has expired" if e.message.startswith("Token has expired") else e.message
    if e.kind == "JwtSignatureError":
        return "Failed to validate JWT signature"
    return "The token provided is not a valid JWT"


def postgres_changes(
    params: dict[str, Any], config: dict[str, Any], subtopic: str
) -> list[Binding]:
    """pg_change_params/5: each binding with the `id` of the join reply
    (add_id_to_postgres_changes/1, a hash of the binding) and a subscription uuid."""
    if "config" in params:
        bindings = config.get("postgres_changes")
        entries = [b for b in bindings if b is not None] if isinstance(bindings, list) else []
    else:  # the pre-config API: the topic itself names schema:table:filter
        parts = subtopic.split(":", 2)
        entries = [dict(zip(("schema", "table", "filter"), parts, strict=False))]
    if not all(isinstance(b, dict) for b in entries):
        raise JoinRefused("Unknown Error on Channel")
    return [Binding(b, _phash(b), uuid.uuid1()) for b in entries]


async def replay(
    pool: Any, subtopic: str, private: bool, policies: Policies | None, replay: Any
) -> list[dict[str, Any]]:
    """can_replay?/3 and maybe_replay_messages/5 (lib/realtime/messages.ex replay/5)."""
    if policies is not None and policies.broadcast_read is False:
        raise JoinRefused("Unauthorized: " + UNAUTHORIZED + subtopic)
    if not private:
        raise JoinRefused("UnableToReplayMessages: Replay is not allowed for public channels")
    if not isinstance(replay, dict):
        return []
    since, limit = replay.get("since"), replay.get("limit") or REPLAY_HARD_LIMIT
    if not isinstance(since, int) or not isinstance(limit, int) or isinstance(since, bool):
        raise JoinRefused("UnableToReplayMessages: Replay params are not valid")
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "select id::text as id, event, payload::text as payload"
                " from realtime.messages where topic = $1 and private is true"
                " and extension = 'broadcast'"
                " and inserted_at >= to_timestamp($2::float8 / 1000)::timestamp"
                " and inserted_at < now()::timestamp + interval '1 minute'"
                " order by inserted_at desc limit $3",
                subtopic,
                since,
                max(min(limit, REPLAY_HARD_LIMIT), 1),
            )
    except DB_ERRORS as e:
        log.warning("realtime: replay failed for %s: %s", subtopic, e)
        raise JoinRefused(
            "UnableToReplayMessages: Realtime was unable to replay messages"
        ) from None
    return [
        {
            "id": r["id"],
            "payload": {
                "event": r["event"],
                "meta": {"id": r["id"], "replayed": True},
                "payload": json.loads(r["payload"]) if r["payload"] is not None else None,
                "type": "broadcast",
            },
        }
        for r in reversed(rows)
    ]
