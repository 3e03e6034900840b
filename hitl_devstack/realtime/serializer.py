"""Phoenix's wire formats, chosen per socket from the `vsn` query parameter.

- 1.0.0, `Phoenix.Socket.V1.JSONSerializer` (realtime-py 2.34 always): JSON objects; frames the
  server sends carry `topic`, `event`, `payload`, `ref` and never `join_ref`.
- 2.0.0, `RealtimeWeb.Socket.V2Serializer` (supabase-js / realtime-js 2.119 by default):
  `[join_ref, ref, topic, event, payload]` arrays in text frames, plus binary user broadcasts:
  kind 3 (client → server) and kind 4 (server → client), supabase/realtime
  `lib/realtime_web/socket/v2_serializer.ex`.

Maps the server builds are written with their keys in the order Jason writes Elixir maps
(sorted), so frames match the real server byte for byte where that is cheap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

USER_BROADCAST_PUSH = 3
USER_BROADCAST = 4


class ProtocolError(Exception):
    """A frame Phoenix could not decode: its socket process would crash, so the socket closes."""


def dumps(value: Any) -> str:
    """JSON as Jason writes it: compact, UTF-8 (no \\u escapes for non-ASCII)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class UserBroadcastPush:
    """Payload of a binary kind-3 push: the user event and its payload, never re-encoded."""

    event: str
    is_json: bool
    payload: bytes
    metadata: dict[str, Any]


@dataclass(slots=True)
class Message:
    """Phoenix.Socket.Message: what a client sent (payload a JSON value or a kind-3 push)."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any


@dataclass(slots=True)
class UserBroadcast:
    """RealtimeWeb.Socket.UserBroadcast: a broadcast whose payload stays encoded (JSON or bytes).

    Sent for database broadcasts (metadata `{"id": <row id>}`), binary client pushes and the
    single-message REST endpoint."""

    topic: str
    event: str
    payload: bytes
    is_json: bool
    metadata: dict[str, Any] | None = None


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"refs must be strings, got {type(value).__name__}")
    return str(value)


def _reply_payload(status: str, response: Any) -> dict[str, Any]:
    return {"response": response, "status": status}


class Serializer(Protocol):
    version: str

    def decode(self, data: str | bytes) -> Message: ...
    def push(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> str: ...
    def reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Any
    ) -> str: ...
    def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> str: ...
    def user_broadcast(self, msg: UserBroadcast) -> str | bytes | None: ...


class V1Serializer:
    version = "1.0.0"

    def decode(self, data: str | bytes) -> Message:
        if isinstance(data, bytes):
            raise ProtocolError("V1 JSON Serializer expected a text frame, got binary")
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"V1 JSON Serializer expected a map, got {type(obj).__name__}")
        for key in ("topic", "event", "payload", "ref"):  # Phoenix.Socket.Message.from_map!
            if key not in obj:
                raise ProtocolError(f"missing key {key!r}")
        if not isinstance(obj["topic"], str) or not isinstance(obj["event"], str):
            raise ProtocolError("topic and event must be strings")
        return Message(
            _ref(obj.get("join_ref")),
            _ref(obj.get("ref")),
            obj["topic"],
            obj["event"],
            obj["payload"],
        )

    def push(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> str:
        # encode_v1_fields_only: Map.take([:topic, :event, :payload, :ref]), no join_ref
        return dumps({"event": event, "payload": payload, "ref": ref, "topic": topic})

    def reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Any
    ) -> str:
        return self.push(None, ref, topic, "phx_reply", _reply_payload(status, response))

    def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> str:
        return self.push(None, None, topic, event, payload)

    def user_broadcast(self, msg: UserBroadcast) -> str | None:
        # MessageDispatcher.fastlane!/2 → UserBroadcast.convert_to_json_broadcast: V1 sockets
        # get JSON payloads as a plain broadcast; binary payloads cannot reach them.
        if not msg.is_json:
            return None
        meta = f'"meta":{dumps(msg.metadata)},' if msg.metadata else ""
        inner = (
            f'{{"event":{dumps(msg.event)},{meta}"payload":{msg.payload.decode()},'
            '"type":"broadcast"}'
        )
        return f'{{"event":"broadcast","payload":{inner},"ref":null,"topic":{dumps(msg.topic)}}}'


class V2Serializer:
    version = "2.0.0"

    def decode(self, data: str | bytes) -> Message:
        if isinstance(data, bytes):
            return self._decode_binary(data)
        try:
            arr = json.loads(data)
        except ValueError as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if not isinstance(arr, list) or len(arr) < 5:
            raise ProtocolError("expected V2 array [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = arr[:5]
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError("topic and event must be strings")
        return Message(_ref(join_ref), _ref(ref), topic, event, payload)

    @staticmethod
    def _decode_binary(data: bytes) -> Message:
        # u8 kind=3 | u8 len(join_ref) | u8 len(ref) | u8 len(topic) | u8 len(user_event) |
        # u8 len(metadata) | u8 encoding (0 binary, 1 JSON) | fields ... | user payload
        if not data:
            raise ProtocolError("empty binary frame")
        if data[0] != USER_BROADCAST_PUSH:
            raise ProtocolError(
                f"binary frames of kind {data[0]} are not accepted"
                " (only kind 3, user broadcast push)"
            )
        if len(data) < 7:
            raise ProtocolError("binary frame shorter than its 7-byte header")
        jl, rl, tl, el, ml, enc = data[1], data[2], data[3], data[4], data[5], data[6]
        end = 7 + jl + rl + tl + el + ml
        if len(data) < end:
            raise ProtocolError("binary frame shorter than its header says")
        parts: list[str] = []
        off = 7
        try:
            for n in (jl, rl, tl, el, ml):
                parts.append(data[off : off + n].decode())
                off += n
        except UnicodeDecodeError:
            raise ProtocolError("binary frame fields must be UTF-8") from None
        join_ref, ref, topic, event, meta_raw = parts
        metadata: dict[str, Any] = {}
        if ml:
            try:
                parsed = json.loads(meta_raw)
            except ValueError:
                raise ProtocolError("binary frame metadata is not JSON") from None
            if not isinstance(parsed, dict):
                raise ProtocolError("binary frame metadata must be a JSON object")
            metadata = parsed
        push = UserBroadcastPush(event, enc != 0, data[end:], metadata)
        return Message(join_ref, ref, topic, "broadcast", push)

    def push(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> str:
        return dumps([join_ref, ref, topic, event, payload])

    def reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Any
    ) -> str:
        return self.push(join_ref, ref, topic, "phx_reply", _reply_payload(status, response))

    def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> str:
        return self.push(None, None, topic, event, payload)

    def user_broadcast(self, msg: UserBroadcast) -> bytes:
        # u8 kind=4 | u8 len(topic) | u8 len(user_event) | u8 len(metadata) | u8 encoding |
        # topic | user_event | metadata | user payload
        t, e = msg.topic.encode(), msg.event.encode()
        m = dumps(msg.metadata).encode() if msg.metadata else b""
        if max(len(t), len(e), len(m)) > 255:
            raise ValueError("topic, event and metadata must each be at most 255 bytes")
        head = bytes([USER_BROADCAST, len(t), len(e), len(m), 1 if msg.is_json else 0])
        return head + t + e + m + msg.payload


V1 = V1Serializer()
V2 = V2Serializer()

_VSN = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]*)?$")


def negotiate(vsn: str | None) -> Serializer | None:
    """Phoenix.Socket.negotiate_serializer: "~> 1.0.0" is V1, "~> 2.0.0" V2; else None (403)."""
    m = _VSN.match(vsn or "1.0.0")
    if m is None:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    if (major, minor) == (1, 0):
        return V1
    if (major, minor) == (2, 0):
        return V2
    return None
