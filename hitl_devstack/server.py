"""The devstack's HTTP process: one Starlette app on uvicorn, embedded in the caller's event loop.

It mounts the PostgREST subset at `/rest/v1`, the Realtime subset at `/realtime/v1` and the Auth
subset at `/auth/v1`, all sharing one asyncpg pool (`DevstackContext`). `Devstack` is what
tests, `hitl-relay devstack` and benchmarks start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from hitl_devstack.context import DevstackContext, LocalUser
from hitl_devstack.gateway import ApiGateway
from hitl_devstack.hops import HopHistogram
from hitl_devstack.keys import LocalKeys
from hitl_relay.embedded import EmbeddedServer

if TYPE_CHECKING:
    from hitl_devstack.realtime import RealtimeLimits

log = logging.getLogger("hitl_devstack")

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 20
# Headers a browser client (supabase-js in the operators' console) must be allowed to read.
EXPOSED_HEADERS = ["Content-Range", "Content-Profile", "Preference-Applied", "Location"]


class DevstackError(RuntimeError):
    """The devstack could not start (port taken, database unreachable); the message says why."""


class _Service(Protocol):
    db_hop: HopHistogram
    answer_hop: HopHistogram

    def routes(self) -> list[BaseRoute]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _realtime_service(ctx: DevstackContext) -> _Service:
    from hitl_devstack.realtime import RealtimeService

    service: _Service = RealtimeService(ctx)
    return service


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset round trip (RESET ALL, UNLISTEN *, ...): requests
    only ever use transaction-local settings, which end with their transaction."""
    if conn.is_in_transaction():  # a cancelled request: never hand on its transaction
        await conn.execute("rollback")


async def _health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


class Devstack:
    """A started devstack serves `.url` (`http://127.0.0.1:<port>`) until `stop()`.

    `port=0` binds a free port; the bound one is read back before `start()` returns.
    """

    def __init__(
        self,
        db_url: str,
        keys: LocalKeys,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: RealtimeLimits | None = None,
        users: Sequence[LocalUser] = (),
    ) -> None:
        self.db_url = db_url
        self.users = tuple(users)
        self.keys = keys
        self.host = host
        self.port = port
        self.limits = limits
        self.url = ""
        self.ctx: DevstackContext | None = None
        self.realtime: _Service | None = None
        self._pool: asyncpg.Pool | None = None
        self._server: EmbeddedServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._serve_task is not None:
            return
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _hops(self, _: Request) -> Response:
        """The stack's share of deliveries, for the benchmark (hitl_devstack/hops.py)."""
        assert self.realtime is not None
        realtime = self.realtime
        return JSONResponse({"hops": [realtime.db_hop.as_json(), realtime.answer_hop.as_json()]})

    async def _start(self) -> None:
        from hitl_devstack import auth, rest

        self._socket = self._bind()
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://{self.host}:{self.port}"
        try:
            self._pool = await asyncpg.create_pool(
                self.db_url,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                reset=_keep_session,
                init=rest.prepare_connection,
            )
        except (OSError, asyncpg.PostgresError) as e:
            raise DevstackError(f"cannot connect to the database {self._safe_db_url()}: {e}") from e
        assert self._pool is not None
        # Realtime's janitor keeps daily partitions of realtime.messages from yesterday to three
        # days ahead (supabase/realtime lib/realtime/tenants.ex); so does the stand-in at start.
        await self._pool.execute(
            "select realtime.hitl_create_partitions()"
            " where to_regprocedure('realtime.hitl_create_partitions()') is not null"
        )
        self.ctx = DevstackContext(
            pool=self._pool,
            keys=self.keys,
            db_url=self.db_url,
            limits=self.limits,
            users=self.users,
        )
        routes: list[BaseRoute] = [
            Route("/health", _health),
            Mount("/rest/v1", routes=rest.routes(self.ctx)),
        ]
        routes.append(Mount("/auth/v1", routes=auth.routes(self.ctx)))
        self.realtime = _realtime_service(self.ctx)
        await self.realtime.start()
        routes.append(Mount("/realtime/v1", routes=self.realtime.routes()))
        routes.append(Route("/_devstack/hops", self._hops, methods=["GET"]))
        app = Starlette(
            routes=routes,
            middleware=[
                Middleware(
                    CORSMiddleware,
                    allow_origins=["*"],
                    allow_methods=["*"],
                    allow_headers=["*"],
                    expose_headers=EXPOSED_HEADERS,
                ),
                # inside CORS, as Kong runs its cors plugin before key-auth
                Middleware(ApiGateway, keys=self.keys),
            ],
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            server_header=False,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            ws_max_size=16 * 1024 * 1024,
        )
        self._server = server = EmbeddedServer(config)
        self._serve_task = task = asyncio.create_task(
            server.serve(sockets=[self._socket]), name=f"devstack:{self.port}"
        )
        await server.startup_over.wait()
        if not server.started:
            error = task.exception() if task.done() and not task.cancelled() else None
            raise DevstackError(
                f"the HTTP server did not start: {error!r}"
                if error is not None
                else "the HTTP server stopped during start-up"
            )

    async def stop(self) -> None:
        """Close realtime sockets (code 1001), stop serving, close the pool. Idempotent."""
        if self.realtime is not None:
            realtime, self.realtime = self.realtime, None
            await _quietly(realtime.stop, "realtime stop")
        if self._server is not None:
            self._server.exit()
        if self._serve_task is not None:
            task, self._serve_task = self._serve_task, None
            with contextlib.suppress(asyncio.CancelledError, SystemExit, DevstackError):
                await task
        self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await _quietly(pool.close, "pool close")

    async def __aenter__(self) -> Devstack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- internals -----------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
        # TCP; without it every keep-alive response waits ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise DevstackError(
                f"cannot listen on {self.host}:{self.port}: {e.strerror or e}; is another devstack "
                f"running? stop it, or choose another port with --port"
            ) from e
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    def _safe_db_url(self) -> str:
        """The database URL without its password, for error messages."""
        head, sep, tail = self.db_url.partition("@")
        if not sep:
            return self.db_url
        scheme, _, userinfo = head.rpartition("//")
        return f"{scheme}//{userinfo.split(':')[0]}@{tail}"


async def _quietly(close: Callable[[], Awaitable[None]], what: str) -> None:
    """Shutdown steps must all run: one failing is logged, never stops the others."""
    try:
        await close()
    except Exception:  # process boundary: shutdown continues, the error is logged
        log.exception("devstack %s failed", what)
