"""Limits on the HTTP connection before any request reaches the app (and its authentication).

uvicorn 0.55 with httptools (its default parser when installed) bounds neither the size of a
request's headers nor the time a client may take to send them: llhttp accumulates a header
value in memory for as long as it grows, and uvicorn arms no timer until a first response has
been sent (`timeout_keep_alive` only covers the idle time between requests). Its
`limit_concurrency` counts every connection and task, so a cap there would also refuse the
legitimate calls that wait minutes for an answer.

`GuardedHttpProtocol` adds, per connection, in uvicorn's own protocol class:

- at most `MAX_HEADER_BYTES` received before a request's headers are complete: beyond that the
  client gets `431` and the connection is closed (bytes are counted as they arrive, so nothing
  larger is ever buffered);
- at most `HEADER_TIMEOUT_S` between a request's first byte (or the connection) and the end of
  its headers, then at most `BODY_TIMEOUT_S` until the end of its body: then the connection is
  closed (the security layer reads the whole body before it checks the key, since a Retell
  signature covers the body, so a body sent a byte at a time must not hold a connection open);
- at most `MAX_PENDING_CONNECTIONS` connections at once that have not yet sent a whole request
  (headers and body; nobody among them has authenticated): a connection beyond that is closed
  on arrival. Connections whose request is being served are not counted, so a thousand calls
  waiting for an operator do not crowd out a new one.

The numbers (module constants, documented in docs/security.md) are per process.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from weakref import WeakSet

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES: Final = 32 * 1024
HEADER_TIMEOUT_S: Final = 10.0
BODY_TIMEOUT_S: Final = 30.0
MAX_PENDING_CONNECTIONS: Final = 256
# How long a refused connection's further bytes are read and dropped before it is closed.
LINGER_S: Final = 2.0

_TOO_LARGE_BODY = f"request headers larger than {MAX_HEADER_BYTES} bytes\n".encode()
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    + f"content-length: {len(_TOO_LARGE_BODY)}\r\n".encode()
    + b"connection: close\r\n\r\n"
    + _TOO_LARGE_BODY
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, header and body time, and
    pending-connection caps."""

    # Slots, not instance attributes: uvicorn's protocol sets 28 of its own, and past 30 an
    # instance's __dict__ stops sharing its keys with the class's other instances (CPython), about
    # 1.5 KB more per connection, i.e. per waiting call.
    __slots__ = (
        "_awaiting_headers",
        "_header_bytes",
        "_pending",
        "_receiving",
        "_refused",
        "_timer",
    )

    max_header_bytes: int = MAX_HEADER_BYTES
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_pending: int = MAX_PENDING_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state = self.server_state
        pending = getattr(state, "hitl_pending", None)
        if pending is None:
            pending = WeakSet()
            state.hitl_pending = pending  # type: ignore[attr-defined]
        self._pending: WeakSet[GuardedHttpProtocol] = pending
        self._receiving = False  # a request's headers or body have not all arrived yet
        self._awaiting_headers = False
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    # ---- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self._pending) >= self.max_pending:
            transport.abort()  # nothing read, nothing answered: no work for a flood
            return
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_received()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if not self._receiving and self.cycle is not None and self.cycle.response_complete:
            self._await_request()  # the next request on a kept-alive connection
        if self._awaiting_headers:
            room = self.max_header_bytes - self._header_bytes
            if len(data) > room:
                # Feed what fits: the headers may end inside it and the rest be body.
                head, data = data[:room], data[room:]
                self._header_bytes += len(head)
                if head:
                    super().data_received(head)
                if self._awaiting_headers and not self.transport.is_closing():
                    self._refuse_too_large()
                    return
                if self.transport.is_closing():
                    return
            else:
                self._header_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        if self.parser.should_upgrade() and self._should_upgrade():
            self._request_received()  # a WebSocket handshake: the connection is not HTTP's now
        else:
            self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._request_received()
        super().on_message_complete()

    # ---- helpers ------------------------------------------------------------------------

    def _await_request(self) -> None:
        self._receiving = True
        self._awaiting_headers = True
        self._header_bytes = 0
        self._pending.add(self)
        self._arm(self.header_timeout_s)

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._request_timeout)

    def _request_received(self) -> None:
        self._receiving = False
        self._awaiting_headers = False
        self._pending.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _request_timeout(self) -> None:
        self._timer = None
        if self._receiving and not self.transport.is_closing():
            self._request_received()
            self.transport.close()

    def _refuse_too_large(self) -> None:
        # A lingering close: send the 431 and our FIN, then discard what the client is still
        # sending for a moment. Closing at once with unread data would make the kernel answer
        # with a reset, which can destroy the 431 before the client reads it.
        self._request_received()
        self._refused = True
        self.transport.write(_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def server_options() -> dict[str, Any]:
    """The uvicorn.Config options every relay server uses: its guarded protocol, and no proxy
    headers (uvicorn's `proxy_headers` default believes X-Forwarded-For/-Proto from 127.0.0.1
    and rewrites the client address before the relay's own checks; the relay reads them itself,
    only from `HITL_TRUSTED_PROXIES`, in `security.network`)."""
    return {
        "http": GuardedHttpProtocol,
        "proxy_headers": False,
        "forwarded_allow_ips": "",
    }
