"""realtime-py's client with each received frame stamped before it is parsed
(`hop_stamps.frame_read`), so the relay's own share of an answer starts where the frame leaves
the socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from realtime import AsyncRealtimeClient

from hitl_relay.adapters import hop_stamps


class _StampedConnection:
    """The websocket connection, unchanged but for iteration (what realtime-py's reader uses)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for frame in self._ws:
            hop_stamps.frame_read()
            yield frame


class StampedRealtimeClient(AsyncRealtimeClient):
    async def _on_connect(self) -> None:
        # connect() has just set the new connection; the reader it starts iterates this one
        if self._ws_connection is not None and not isinstance(
            self._ws_connection, _StampedConnection
        ):
            self._ws_connection = _StampedConnection(self._ws_connection)  # type: ignore[assignment]
        await super()._on_connect()
