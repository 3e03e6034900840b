"""A minimal HTTP/1.1 keep-alive client for the benchmark's hot loops.

httpx spends about 2.3 ms of CPU per request on this machine (measured by `scripts/bench
rest`), five times what the devstack's REST server spends serving it: 1,000 pollers through
httpx measure the harness, not the server. This client writes a request it formats itself and
reads the response by its Content-Length, over a fixed set of connections: about 0.06 ms of
CPU per request. Only what the benchmark sends: no redirects, no chunked bodies, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


class KeepAlivePool:
    """At most `size` connections to one http:// origin, each used by one request at a time."""

    def __init__(self, base_url: str, headers: dict[str, str], size: int) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head += f"Host: {parts.netloc}\r\n"
        self.size = size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened = 0
        self.slots = asyncio.Semaphore(size)

    async def get(self, target: str, timeout_s: float = 30.0) -> tuple[int, bytes]:
        """GET `target` (path and query, already encoded)."""
        request = f"GET {target} HTTP/1.1\r\n{self.head}\r\n".encode()
        async with self.slots:
            reused = not self.idle.empty()
            conn = self.idle.get_nowait() if reused else None
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            try:
                async with asyncio.timeout(timeout_s):
                    out = await exchange(*conn, request)
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                conn[1].close()
                if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                    raise
                # the server closed the idle connection (uvicorn's keep-alive timeout) before
                # this request reached it: once more on a new connection, as HTTP clients do
                conn = await asyncio.open_connection(self.host, self.port)
                try:
                    async with asyncio.timeout(timeout_s):
                        out = await exchange(*conn, request)
                except BaseException:
                    conn[1].close()
                    raise
            except BaseException:
                conn[1].close()  # its state is unknown: never reused
                raise
            self.idle.put_nowait(conn)
            return out

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
