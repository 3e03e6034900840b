"""Shared pieces of the Realtime conformance tests.

- `RtClients`: unmodified realtime-py clients (what supabase-py's AsyncClient uses), closed at
  teardown; `subscribe()` waits on the client's own subscribe callback, never on a sleep.
- `Raw`: a bare `websockets` client speaking V1 or V2 frames, for exact-frame assertions and for
  misbehaving on purpose (garbage, vanishing without a close).
- `ANY_STR`, `Matches`: placeholders for server-made values (phx_ref, uuids, integer ids).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import asyncpg
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient, RealtimeSubscribeStates
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hitl_devstack.server import Devstack

V1 = "1.0.0"
V2 = "2.0.0"
TIMEOUT_S = 5.0


class Matches:
    """Equal to any value accepted by `check` (used inside expected frames)."""

    def __init__(self, check: Callable[[Any], bool], label: str) -> None:
        self.check, self.label = check, label

    def __eq__(self, other: object) -> bool:
        return self.check(other)

    def __hash__(self) -> int:
        return hash(self.label)

    def __repr__(self) -> str:
        return self.label


ANY_STR = Matches(lambda v: isinstance(v, str) and v != "", "<any non-empty str>")
ANY_INT = Matches(lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "<int>0>")
UUID = Matches(
    lambda v: (
        isinstance(v, str)
        and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", v)
        is not None
    ),
    "<uuid>",
)


def private(key: str = "", presence: bool = False, self_: bool = False, ack: bool = False) -> Any:
    return {
        "config": {
            "broadcast": {"self": self_, "ack": ack},
            "presence": {"key": key, "enabled": presence},
            "private": True,
        }
    }


PUBLIC: Any = {"config": {"private": False}}


class RtClients:
    """realtime-py clients against devstacks; `close()` at teardown."""

    def __init__(self) -> None:
        self.made: list[AsyncRealtimeClient] = []

    async def connect(self, stack: Devstack, token: str | None = None) -> AsyncRealtimeClient:
        """A client that connects with the anon key and, like supabase-py after sign-in,
        uses `token` (a user's access token) for its channels."""
        client = AsyncRealtimeClient(
            f"{stack.url}/realtime/v1", token=stack.keys.anon_key, auto_reconnect=True
        )
        self.made.append(client)
        await client.connect()
        if token is not None:
            await client.set_auth(token)
        return client

    async def close(self) -> None:
        for c in self.made:
            await c.close()


async def subscribe(
    channel: AsyncRealtimeChannel, within_s: float = TIMEOUT_S
) -> tuple[RealtimeSubscribeStates, Exception | None]:
    """Subscribe and return the first state the client reports."""
    outcome: asyncio.Future[tuple[RealtimeSubscribeStates, Exception | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def cb(state: RealtimeSubscribeStates, err: Exception | None) -> None:
        if not outcome.done():
            outcome.set_result((state, err))

    await channel.subscribe(cb)
    return await asyncio.wait_for(outcome, within_s)


def state_log(
    channel_states: list[tuple[RealtimeSubscribeStates, Exception | None]],
) -> tuple[asyncio.Queue[tuple[RealtimeSubscribeStates, Exception | None]], Any]:
    """A subscribe callback that records every state change on a queue (and in a list)."""
    queue: asyncio.Queue[tuple[RealtimeSubscribeStates, Exception | None]] = asyncio.Queue()

    def cb(state: RealtimeSubscribeStates, err: Exception | None) -> None:
        channel_states.append((state, err))
        queue.put_nowait((state, err))

    return queue, cb


async def next_state(
    queue: asyncio.Queue[tuple[RealtimeSubscribeStates, Exception | None]],
    wanted: RealtimeSubscribeStates,
    within_s: float = TIMEOUT_S,
) -> Exception | None:
    """Wait until the channel reports `wanted`; returns the error it came with."""

    async def wait() -> Exception | None:
        while True:
            state, err = await queue.get()
            if state == wanted:
                return err

    return await asyncio.wait_for(wait(), within_s)


def collector() -> tuple[asyncio.Queue[Any], Callable[[Any], None]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    return queue, queue.put_nowait


async def get(queue: asyncio.Queue[Any], within_s: float = TIMEOUT_S) -> Any:
    return await asyncio.wait_for(queue.get(), within_s)


async def db_send(
    db_url: str, topic: str, event: str, payload: dict[str, Any], private_: bool = True
) -> None:
    """`select realtime.send(...)` in its own transaction."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "select realtime.send($1::jsonb, $2, $3, $4)",
            json.dumps(payload),
            event,
            topic,
            private_,
        )
    finally:
        await conn.close()


class Raw:
    """A websocket client with no protocol logic: frames in, frames out, exactly."""

    def __init__(self, ws: ClientConnection, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn

    @classmethod
    async def open(
        cls,
        stack: Devstack,
        apikey: str | None = None,
        vsn: str = V1,
        extra_query: str = "",
    ) -> Raw:
        key = stack.keys.anon_key if apikey is None else apikey
        url = stack.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={key}"
        url += f"&vsn={vsn}{extra_query}"
        ws = await connect(url, open_timeout=TIMEOUT_S, max_size=None)
        return cls(ws, vsn)

    async def send(
        self,
        join_ref: str | None,
        ref: str | None,
        topic: str,
        event: str,
        payload: Any,
    ) -> None:
        if self.vsn == V2:
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await self.ws.send(
                json.dumps(
                    {
                        "event": event,
                        "payload": payload,
                        "topic": topic,
                        "ref": ref,
                        "join_ref": join_ref,
                    }
                )
            )

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv_raw(self, within_s: float = TIMEOUT_S) -> str | bytes:
        return await asyncio.wait_for(self.ws.recv(), within_s)

    async def recv(self, within_s: float = TIMEOUT_S) -> Any:
        """The next frame: parsed JSON for text, bytes for binary."""
        data = await self.recv_raw(within_s)
        return data if isinstance(data, bytes) else json.loads(data)

    async def recv_until(
        self, want: Callable[[Any], bool], within_s: float = TIMEOUT_S
    ) -> tuple[Any, list[Any]]:
        """Read frames until one satisfies `want`; returns it and the frames before it."""
        skipped: list[Any] = []

        async def loop() -> Any:
            while True:
                frame = await self.recv(within_s)
                if want(frame):
                    return frame
                skipped.append(frame)

        return await asyncio.wait_for(loop(), within_s), skipped

    async def join(
        self, topic: str, payload: Any, ref: str = "1", access_token: str | None = None
    ) -> Any:
        """phx_join and return the reply (join_ref = ref)."""
        body = dict(payload)
        if access_token is not None:
            body["access_token"] = access_token
        await self.send(ref, ref, "realtime:" + topic, "phx_join", body)
        reply, _ = await self.recv_until(lambda f: event_of(f) == "phx_reply" and ref_of(f) == ref)
        return reply

    async def closed(self, within_s: float = TIMEOUT_S) -> tuple[int | None, str]:
        """Wait for the server to close; returns the close code and reason it sent."""

        async def drain() -> None:
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed:
                return

        await asyncio.wait_for(drain(), within_s)
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")

    def vanish(self) -> None:
        """Drop the TCP connection with no close frame (a client that crashed)."""
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()


def event_of(frame: Any) -> str | None:
    if isinstance(frame, dict):
        return frame.get("event")
    if isinstance(frame, list):
        return frame[3]
    return None


def ref_of(frame: Any) -> str | None:
    if isinstance(frame, dict):
        return frame.get("ref")
    if isinstance(frame, list):
        return frame[1]
    return None


def kind3(join_ref: str, ref: str, topic: str, event: str, payload: bytes, enc: int = 1) -> bytes:
    """realtime-js's binary user broadcast push (serializer.ts _binaryEncodeUserBroadcastPush)."""
    j, r, t, e = join_ref.encode(), ref.encode(), topic.encode(), event.encode()
    return bytes([3, len(j), len(r), len(t), len(e), 0, enc]) + j + r + t + e + payload


def parse_kind4(data: bytes) -> dict[str, Any]:
    """realtime-js's decoding of a binary user broadcast (serializer.ts _decodeUserBroadcast)."""
    assert data[0] == 4, f"kind {data[0]}"
    tl, el, ml, enc = data[1], data[2], data[3], data[4]
    off = 5
    topic = data[off : off + tl].decode()
    off += tl
    event = data[off : off + el].decode()
    off += el
    meta = json.loads(data[off : off + ml]) if ml else None
    off += ml
    body = data[off:]
    return {
        "topic": topic,
        "event": event,
        "meta": meta,
        "encoding": enc,
        "payload": json.loads(body) if enc == 1 else body,
    }
