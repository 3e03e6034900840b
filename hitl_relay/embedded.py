"""uvicorn inside someone else's event loop: the in-process relay (`http_app.running`, what the
tests and benchmarks serve the app with) and the devstack's HTTP server.

The embedder owns the signals, learns when start-up is over (`startup_over`; `started` then
says whether it listens), and `exit()` stops the server at once. Stock uvicorn notices
`should_exit` on its next 100 ms tick and pauses another 100 ms while closing: about 0.15 s
for every server stopped, which a test suite that starts hundreds of them pays each time.
The shutdown keeps uvicorn's order (listeners closed, connections asked to close, their
requests and tasks awaited up to `timeout_graceful_shutdown`, then the lifespan's shutdown);
only the fixed pauses became polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

TICK_S = 0.1  # uvicorn's main-loop period (the Date header, max-requests, `should_exit`)
POLL_S = 0.005  # while closing: are the connections and their tasks gone yet


class EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = asyncio.Event()
        self._exit = asyncio.Event()

    def exit(self) -> None:
        """Stop serving now: the serve task ends once the shutdown has run."""
        self.should_exit = True
        self._exit.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_over.set()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets=sockets)
        finally:
            self.startup_over.set()  # ended before its start-up (an error in uvicorn's set-up)

    async def main_loop(self) -> None:
        """uvicorn's ticks, each cut short by `exit()`."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000  # uvicorn's wrap (a day of ticks)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), TICK_S)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 5)
        while self.server_state.connections or self.server_state.tasks:
            if loop.time() > deadline:
                for task in self.server_state.tasks:
                    task.cancel(msg="server stopping: graceful shutdown timed out")
                break
            await asyncio.sleep(POLL_S)  # a shutdown drain poll, as uvicorn's own
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()
