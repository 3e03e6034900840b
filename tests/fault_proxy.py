"""A TCP proxy for fault tests: sits between a client (the relay's adapter) and a server (the
devstack) on loopback, and can cut every connection, refuse new ones, or stall traffic.

    proxy = FaultProxy(target_port)
    await proxy.start()            # proxy.url: http://127.0.0.1:<port>
    proxy.cut()                    # every connection reset; new ones reset at once
    proxy.restore()                # connections accepted and forwarded again
    proxy.stall()                  # bytes held (connections stay open, nothing flows)
    proxy.unstall()
    await proxy.stop()

Random faults (seeded, so a run can be replayed): `FaultProxy(port, chaos=Chaos(seed=7,
drop_rate=0.01, latency_s=(0.001, 0.02), stall_every_s=5.0, stall_s=(0.1, 0.5)))` drops that
share of the new connections at a random moment of their first `drop_within_s` seconds, delays
every chunk it forwards by a random latency, and stalls all traffic for a short random time
every so often (Poisson). `proxy.dropped`, `proxy.stalls` count what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chaos:
    """Random faults the proxy injects; every draw comes from one RNG seeded with `seed`."""

    seed: int = 0
    drop_rate: float = 0.0  # share of new connections dropped (reset) while in use
    drop_within_s: float = 2.0  # a doomed connection is reset this long after it opens, at most
    latency_s: tuple[float, float] = (0.0, 0.0)  # added to every forwarded chunk (uniform)
    stall_every_s: float = 0.0  # mean time between stalls of all traffic; 0: never
    stall_s: tuple[float, float] = (0.0, 0.0)  # how long one stall lasts (uniform)

    def argv(self) -> list[str]:
        """These faults as the command line of `python tests/fault_proxy.py`."""
        return [
            *("--seed", str(self.seed), "--drop-rate", str(self.drop_rate)),
            *("--drop-within", str(self.drop_within_s)),
            *("--latency", *map(str, self.latency_s)),
            *("--stall-every", str(self.stall_every_s), "--stall", *map(str, self.stall_s)),
        ]


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", *, chaos: Chaos | None = None
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.chaos = chaos or Chaos()
        self._rng = random.Random(self.chaos.seed)
        self.dropped = 0
        self.stalls = 0
        self._chaos_tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._cut = False
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_links(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.chaos.stall_every_s > 0:
            self._spawn(self._stall_now_and_then())

    async def stop(self) -> None:
        for task in list(self._chaos_tasks):
            task.cancel()
        await asyncio.gather(*self._chaos_tasks, return_exceptions=True)
        self.unstall()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        """Reset every connection now, and every new one until `restore()`."""
        self._cut = True
        for link in list(self._links):
            link.abort()

    def restore(self) -> None:
        self._cut = False

    def stall(self) -> None:
        """Hold every byte in both directions; connections stay open."""
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._chaos_tasks.add(task)
        task.add_done_callback(self._chaos_tasks.discard)

    async def _stall_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self._rng.expovariate(1 / self.chaos.stall_every_s))
            self.stall()
            self.stalls += 1
            try:
                await asyncio.sleep(self._rng.uniform(*self.chaos.stall_s))
            finally:
                self.unstall()

    async def _drop_later(self, link: _Link) -> None:
        await asyncio.sleep(self._rng.uniform(0, self.chaos.drop_within_s))
        if link in self._links:
            self.dropped += 1
            link.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._cut:
            writer.transport.abort()
            return
        link = _Link(client=writer)
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._links.discard(link)
            writer.transport.abort()
            return
        link.upstream = up_writer
        if self.chaos.drop_rate > 0 and self._rng.random() < self.chaos.drop_rate:
            self._spawn(self._drop_later(link))
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        if self.chaos.latency_s[1] > 0:
            await self._pump_delayed(reader, writer, link)
            return
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if self._cut:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()

    async def _pump_delayed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        """Each chunk is delivered `latency` after it arrived, in order: a delay, not a
        throughput limit (chunks in flight overlap, as on a long wire)."""
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await in_flight.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._flowing.wait()
                if self._cut:
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            due = loop.time()
            while data := await reader.read(65536):
                due = max(due, loop.time() + self._rng.uniform(*self.chaos.latency_s))
                in_flight.put_nowait((due, data))
            in_flight.put_nowait((due, b""))
            await delivering
        except (ConnectionError, OSError):
            pass
        finally:
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)
            link.abort()


async def _serve(target_port: int, chaos: Chaos) -> None:
    """The proxy as its own process, so its forwarding never waits on a busy test loop."""
    import json
    import signal

    proxy = FaultProxy(target_port, chaos=chaos)
    await proxy.start()
    print(f"fault-proxy port {proxy.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    stats = {"accepted": proxy.accepted, "dropped": proxy.dropped, "stalls": proxy.stalls}
    await proxy.stop()
    print(f"fault-proxy stats {json.dumps(stats)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """`python tests/fault_proxy.py TARGET_PORT [--seed N] [--drop-rate R] ...`: prints
    `fault-proxy port P` once listening; on SIGTERM prints `fault-proxy stats {json}`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_port", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--drop-within", type=float, default=2.0)
    parser.add_argument("--latency", type=float, nargs=2, default=(0.0, 0.0))
    parser.add_argument("--stall-every", type=float, default=0.0)
    parser.add_argument("--stall", type=float, nargs=2, default=(0.0, 0.0))
    args = parser.parse_args(argv)
    chaos = Chaos(
        seed=args.seed,
        drop_rate=args.drop_rate,
        drop_within_s=args.drop_within,
        latency_s=tuple(args.latency),
        stall_every_s=args.stall_every,
        stall_s=tuple(args.stall),
    )
    asyncio.run(_serve(args.target_port, chaos))


if __name__ == "__main__":
    main()
