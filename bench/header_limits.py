"""Header limits, measured (docs/security.md, "Connection limits"): the relay's RSS under four
connections each sending an unfinished 150 MiB header, and how many of 1,500 connections sending
a partial request line the server closes. Run: `.venv/bin/python -m bench.header_limits`."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend

HEADER_BYTES = 150 << 20
PARTIAL = 1500


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


@asynccontextmanager
async def backend(_settings: Settings) -> AsyncIterator[Backend]:
    yield MemoryPlatform().backend()


async def flood(host: str, port: int) -> int:
    """Send one header that never ends; the bytes the server took before refusing."""
    _, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ")
    chunk = b"a" * (1 << 20)
    sent = 0
    try:
        while sent < HEADER_BYTES:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except ConnectionError:
        pass
    return sent


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 15) == b""
    except (TimeoutError, ConnectionError):
        return False


async def main() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    settings = Settings(_env_file=None, backend="memory", api_keys="k" * 20, audit_sink="none")
    async with running(create_app(settings, backend=backend)) as url:
        host, _, port_text = url.removeprefix("http://").partition(":")
        port = int(port_text)
        before = rss_mib()
        floods: list[Any] = await asyncio.gather(
            *(asyncio.wait_for(flood(host, port), 60) for _ in range(4)), return_exceptions=True
        )
        outcome = [f if isinstance(f, int) else type(f).__name__ for f in floods]
        print(f"4 x 150 MiB headers: RSS {before:.0f} -> {rss_mib():.0f} MiB; sent {outcome}")
        readers = []
        for _ in range(PARTIAL):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            readers.append(reader)
        started = time.monotonic()
        closed = await asyncio.gather(*(closed_by_server(r) for r in readers))
        took = time.monotonic() - started
        print(f"{PARTIAL} partial headers: {sum(closed)} closed by the server within {took:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
