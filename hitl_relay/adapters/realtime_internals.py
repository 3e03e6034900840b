"""The one place the relay reaches past realtime-py's public API, and why.

The socket pool (realtime_pool.py) supervises its sockets itself (see its docstring), and
realtime-py 2.34.1 offers no public way to do five things that needs:

- tell that its listener task died (an exception escaped it; nothing is received or rejoined on
  that socket again, yet `is_connected` stays true): `AsyncRealtimeClient._listen_task`;
- ping the WebSocket and abort a stalled connection (it has no ping of its own):
  `AsyncRealtimeClient._ws_connection`;
- have a channel refused for the project's join rate rejoin after a few seconds instead of its
  fixed 30 s: `AsyncRealtimeChannel.rejoin_timer`;
- stop a channel's timers when its socket closes (they would outlive it by up to a push
  timeout): `rejoin_timer`, `join_push`, `messages_waiting_for_ack`;
- hold every join until the pool's pacer allows it (subscribe(), the rejoin timer and the
  rejoins after a reconnect all send it through `AsyncRealtimeChannel._rejoin`);
- stamp each frame as it is read off the socket, before realtime-py parses it (the relay's own
  share of an answer starts there: `hop_stamps`): `StampedRealtimeClient` wraps the connection
  `connect()` has just set in `_ws_connection`, in `AsyncRealtimeClient._on_connect`, before the
  reader iterates it;
- hand a broadcast frame to its channel's broadcast callbacks without realtime-py's parse of
  it (`dispatch_broadcast`, in that wrapper). realtime-py validates every frame against a union
  of nine pydantic models, and a broadcast is an answer's frame: that validation, its debug
  f-strings and the dispatch were the largest step of the relay's own share of a delivery
  (0.25-0.3 ms of a lone call's 1.1 ms, measured with stamps). A frame is taken only when it is
  plainly what realtime-py's `BroadcastMessage` accepts, and the callbacks get what its
  validation would give them; anything else goes on to realtime-py as before.

tests/unit/test_realtime_internals.py checks each of these against the installed realtime-py
(that the names exist and behave as assumed here): an upgrade that changes them fails there,
not in production. Nothing else in the relay touches realtime-py's internals.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from realtime import AsyncRealtimeChannel, AsyncRealtimeClient
from websockets.asyncio.client import ClientConnection

from hitl_relay.adapters import hop_stamps

# The realtime-py release these were read from (realtime/_async/client.py, channel.py, timer.py).
READ_FROM_REALTIME = "2.34.1"


def listener_task(client: AsyncRealtimeClient) -> asyncio.Task[Any] | None:
    """The task that reads the socket (None before connect() and after close())."""
    task: asyncio.Task[Any] | None = client._listen_task
    return task


def websocket(client: AsyncRealtimeClient) -> ClientConnection | None:
    """The open WebSocket connection (None when not connected)."""
    ws: ClientConnection | None = client._ws_connection
    return ws


def rejoin_in(channel: AsyncRealtimeChannel, delay_s: float) -> None:
    """Have the channel send its join again after `delay_s` (if its socket is connected then),
    replacing any rejoin realtime-py had scheduled."""
    channel.rejoin_timer.schedule_timeout(delay_s)


def stop_timers(channel: AsyncRealtimeChannel) -> None:
    """Cancel the channel's rejoin timer and the timeouts of its pending pushes."""
    channel.rejoin_timer.reset()
    channel.join_push.destroy()
    for push in list(channel.messages_waiting_for_ack.values()):
        push.destroy()


def send_joins_through(
    channel: AsyncRealtimeChannel,
    schedule: Callable[[Callable[[], Awaitable[None]]], object],
) -> None:
    """Hand every join of `channel` to `schedule(send)` instead of sending it: `send()` sends it
    as realtime-py would have. The replacement returns at once, so a reconnect (which awaits
    the rejoin of every errored channel) is never held up by whatever `schedule` waits for."""
    original: Callable[[], Awaitable[None]] = channel._rejoin

    async def scheduled() -> None:
        schedule(original)

    channel._rejoin = scheduled  # type: ignore[method-assign]


_BROADCAST_META_TYPES = {"replayed": bool, "id": str}


def broadcast_payload(frame: object) -> tuple[str, dict[str, Any]] | None:
    """The topic and payload of a text frame realtime-py reads as a `BroadcastMessage`
    (realtime/message.py), the payload as its validation returns it (the `BroadcastPayload`
    keys only); None for any other frame, or one whose reading only realtime-py's validation
    can say (it then reads the frame itself)."""
    if not isinstance(frame, str) or '"broadcast"' not in frame:
        return None
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("event") != "broadcast":
        return None
    topic, payload = message.get("topic"), message.get("payload")
    if "ref" not in message or message["ref"] is not None or not isinstance(topic, str):
        return None
    if not isinstance(payload, dict):
        return None
    event, inner = payload.get("event"), payload.get("payload")
    if not isinstance(event, str) or not isinstance(inner, dict):
        return None
    taken: dict[str, Any] = {"event": event, "payload": inner}
    if "meta" in payload:
        meta = payload["meta"]
        if not isinstance(meta, dict):
            return None
        kept = {}
        for key, kind in _BROADCAST_META_TYPES.items():
            if key in meta:
                if type(meta[key]) is not kind:
                    return None
                kept[key] = meta[key]
        taken["meta"] = kept
    return topic, taken


def dispatch_broadcast(client: AsyncRealtimeClient, frame: object) -> bool:
    """Hand a broadcast frame to its channel's broadcast callbacks as realtime-py's reader
    would (`_listen`, then `AsyncRealtimeChannel._handle_message`); False, doing nothing, for a
    frame that is not one (`broadcast_payload`)."""
    read = broadcast_payload(frame)
    if read is None:
        return False
    topic, payload = read
    channel = client.channels.get(topic)
    if channel is not None:
        for callback in channel.broadcast_callbacks:
            callback(payload)  # type: ignore[arg-type]
    return True


class _StampedConnection:
    """The websocket connection, unchanged but for iteration (what realtime-py's reader uses):
    each frame is stamped, and a broadcast is dispatched here instead of yielded."""

    def __init__(self, ws: Any, client: AsyncRealtimeClient) -> None:
        self._ws = ws
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def __aiter__(self) -> AsyncIterator[Any]:
        client = self._client
        async for frame in self._ws:
            hop_stamps.frame_read()
            if not dispatch_broadcast(client, frame):
                yield frame


class StampedRealtimeClient(AsyncRealtimeClient):
    """realtime-py's client with each received frame stamped before it is parsed, and each
    broadcast frame dispatched without realtime-py's parse (`dispatch_broadcast`)."""

    async def _on_connect(self) -> None:
        # connect() has just set the new connection; the reader it starts iterates this one
        if self._ws_connection is not None and not isinstance(
            self._ws_connection, _StampedConnection
        ):
            self._ws_connection = _StampedConnection(self._ws_connection, self)  # type: ignore[assignment]
        await super()._on_connect()


def stamped_connection(client: AsyncRealtimeClient) -> bool:
    """Whether the client's current connection is the stamping wrapper."""
    return isinstance(client._ws_connection, _StampedConnection)
