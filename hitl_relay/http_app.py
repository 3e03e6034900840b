"""The relay's HTTP application (Starlette): MCP at `/mcp`, health, readiness and metrics.

    POST/GET/DELETE /mcp   streamable HTTP, stateless (any replica serves any request);
                           bearer API key required, 401 {"error": "unauthorized"} otherwise
    GET /healthz           liveness: the process answers
    GET /readyz            readiness (hitl_relay.readiness): database reachable through the
                           platform, realtime joined, migrations current, breaker not open;
                           200 or 503 with every check's details and the reasons
    GET /metrics           Prometheus text format
    GET /console/          the operator console (hitl_relay.console), no key needed
    POST /retell/ask_human Retell custom function, signed (hitl_relay.retell), when
                           HITL_RETELL_API_KEY is set

Every route sits behind `hitl_relay.security` (HTTPS, IP allowlist, rate limits, body size,
Origin/CORS, bearer keys on /mcp): `create_app` builds one `SecurityLayer` from the settings.

The app owns the platform connection for its lifetime (Starlette lifespan). Request
authorisation is one replaceable function (`Authorize`); `hitl_relay.security` supplies the
bearer-key check (constant time per key) and the fuller checks around it.

More routes (the Retell webhook, the console) come in through `create_app(extra_routes=...)`;
their handlers reach the running relay as `request.state.relay_state.get()` (Starlette
lifespan state).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import FrameType

import anyio
import uvicorn
from loguru import logger
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hitl_relay import callbacks, console, gc_tuning, hops, metrics, recovery, retell, success
from hitl_relay.clock import SystemClock
from hitl_relay.composition import build_notifiers, build_relay, open_backend, task_store_for
from hitl_relay.config import Settings
from hitl_relay.embedded import EmbeddedServer
from hitl_relay.escalation import Escalator
from hitl_relay.mcp_fast import FastAsk
from hitl_relay.mcp_http import McpRouter
from hitl_relay.mcp_server import RelayMcpServer
from hitl_relay.monitoring import Monitor
from hitl_relay.ports import (
    Backend,
    Clock,
    EscalationStore,
    JobHealthSource,
    RealtimeCounts,
    SessionRecovery,
    SuccessMetricsSource,
)
from hitl_relay.readiness import ReadinessMonitor
from hitl_relay.relay import Relay
from hitl_relay.security import SecurityLayer
from hitl_relay.security.http_limits import server_options

# Decides whether a request to /mcp may pass, from its headers.
Authorize = Callable[[Headers], bool]
BackendFactory = Callable[[Settings], AbstractAsyncContextManager[Backend]]

# On shutdown, after the drain: the listeners stay open until no MCP request has started for
# this long (the clients' requests right after their results).
QUIET_BEFORE_EXIT_S = 0.3

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class RequireAuthorization:
    """ASGI wrapper: refuse with 401 unless `authorize` accepts the request's headers."""

    def __init__(self, app: ASGIApp, authorize: Authorize) -> None:
        self._app = app
        self._authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorize(Headers(scope=scope)):
            metrics.auth_failures.inc()
            response = JSONResponse(
                {"error": "unauthorized"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="hitl-relay"'},
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


class InFlight:
    """ASGI wrapper counting the requests still being answered (an SSE response counts until
    its stream ends), so a shutdown can wait until every result is written out and the
    clients' last requests are served (an MCP client lists the tools after a result to check
    it against the output schema)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.count = 0
        self._idle: asyncio.Event | None = None
        self._activity: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.count += 1
        if self._activity is not None:
            self._activity.set()
        try:
            await self._app(scope, receive, send)
        finally:
            self.count -= 1
            if self.count == 0 and self._idle is not None:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is in flight; False if some still are after `timeout_s`."""
        if self.count == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True

    async def wait_quiet(self, quiet_s: float, timeout_s: float) -> bool:
        """True once nothing is in flight and no request started for `quiet_s`; False if that
        does not happen within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not await self.wait_idle(max(0.0, deadline - time.monotonic())):
                return False
            self._activity = asyncio.Event()
            try:
                async with asyncio.timeout(min(quiet_s, max(0.0, deadline - time.monotonic()))):
                    await self._activity.wait()  # a request started: not quiet yet
            except TimeoutError:
                return time.monotonic() < deadline or self.count == 0
            finally:
                self._activity = None


@dataclass
class RelayState:
    """What the running app holds: the relay once the backend is connected."""

    relay: Relay | None = None
    readiness: ReadinessMonitor | None = None
    mcp_requests: InFlight | None = None
    escalator: Escalator | None = None

    def get(self) -> Relay:
        if self.relay is None:
            raise RuntimeError("the relay is not started (the app's lifespan has not run)")
        return self.relay

    async def drain(self, timeout_s: float, quiet_when_none_waited: bool = True) -> int:
        """End the waiting calls now (graceful shutdown) and wait (within `timeout_s`) until
        their results are written out and the clients' requests have quietened (skipped when
        no call was waiting and `quiet_when_none_waited` is off); the number of calls that
        were waiting."""
        deadline = time.monotonic() + timeout_s
        waiting = await self.relay.drain(timeout_s) if self.relay is not None else 0
        if self.mcp_requests is not None:
            left = max(0.0, deadline - time.monotonic())
            quiet_s = QUIET_BEFORE_EXIT_S if waiting or quiet_when_none_waited else 0.0
            if not await self.mcp_requests.wait_quiet(quiet_s, left):
                logger.warning(
                    "shutting down with {} MCP response(s) still being written",
                    self.mcp_requests.count,
                )
        return waiting


def transport_security(settings: Settings) -> TransportSecuritySettings | None:
    """DNS-rebinding protection: loopback names on loopback, plus HITL_ALLOWED_HOSTS/_ORIGINS."""
    from hitl_relay.security.layer import transport_security_settings

    return transport_security_settings(settings)


def outbox_worker(settings: Settings, connected: Backend) -> callbacks.CallbackWorker | None:
    """The worker delivering the platform's queued callbacks: on when HITL_CALLBACK_WORKER says
    so, by default when a callback URL is configured on the Supabase backend."""
    wanted = settings.security.callback_worker
    if wanted is None:
        wanted = bool(settings.security.callback_url) and settings.backend == "supabase"
    return callbacks.callback_worker(
        connected.outbox,
        wanted=wanted,
        allow_private=settings.security.callback_allow_private,
        timeout_s=settings.security.callback_timeout_seconds,
        budget_s=settings.security.callback_budget_seconds,
    )


def console_config(settings: Settings) -> console.ConsoleConfig:
    """What the operator console at /console may know: the URL and the public anon key."""
    anon = settings.supabase_anon_key
    return console.ConsoleConfig(
        supabase_url=settings.supabase_url,
        anon_key=anon.get_secret_value() if anon is not None else None,
    )


def create_app(
    settings: Settings,
    *,
    backend: BackendFactory = open_backend,
    authorize: Authorize | None = None,
    clock: Clock | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    security: SecurityLayer | None = None,
) -> Starlette:
    """The relay's Starlette app; connects the backend when the app starts.

    Raises `ConfigError` for unusable keys (none, compromised, malformed) unless
    `settings.security.insecure_local`.
    """
    state = RelayState()
    layer = security or SecurityLayer(settings)
    mcp = RelayMcpServer(state.get)
    manager = StreamableHTTPSessionManager(
        app=mcp.server,
        stateless=True,
        security_settings=layer.transport_security(),
    )
    # Task polls answer as plain JSON (hitl_relay.mcp_http): a second transport, same server.
    polls = StreamableHTTPSessionManager(
        app=mcp.server,
        stateless=True,
        json_response=True,
        security_settings=layer.transport_security(),
    )
    # The blocking ask_human, served without the SDK's per-request transport (mcp_fast).
    fast = FastAsk(
        state.get,
        layer.transport_security(),
        server_info=lambda: mcp.server.server_info_stamp,
        tool_schema=mcp.server.get_tool_input_schema,
        max_body_bytes=manager.max_request_body_size,
    )
    router = McpRouter(manager.handle_request, polls.handle_request, mcp.tasks, fast=fast)
    mcp_requests = InFlight(router)
    state.mcp_requests = mcp_requests
    gate = RequireAuthorization(mcp_requests, authorize or layer.authorize)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with (
            backend(settings) as connected,
            manager.run(),
            polls.run(),
            layer.running(connected),
        ):
            relay_clock = clock or SystemClock()
            relay = build_relay(connected, settings, clock=relay_clock)
            if isinstance(connected.readiness, RealtimeCounts):
                metrics.track_realtime(connected.readiness)
            # Before serving: a retried call must not race the closing of its old session.
            recovered = await recovery.recover_on_start(
                connected.store, settings.instance_id, settings.platform_timeout_seconds
            )
            tasks = mcp.tasks.running(task_store_for(connected.store))
            async with relay.running(), tasks, anyio.create_task_group() as tg:
                state.relay = relay
                state.readiness = ReadinessMonitor(connected.readiness, relay.breaker)
                tg.start_soon(mcp.watch_breaker)
                if recovered is None and isinstance(connected.store, SessionRecovery):
                    tg.start_soon(
                        partial(
                            recovery.retry_in_background,
                            connected.store,
                            settings.instance_id,
                            calls_taken=lambda: relay.calls_taken,
                        )
                    )
                if isinstance(connected.store, SuccessMetricsSource):
                    refresher = success.SuccessRefresher(
                        connected.store,
                        relay_clock,
                        window_s=settings.success_window_seconds,
                        interval_s=settings.success_refresh_seconds,
                        timeout_s=settings.platform_timeout_seconds,
                    )
                    tg.start_soon(refresher.run)
                monitor = Monitor(
                    connected.presence,
                    state.readiness.check,
                    connected.store if isinstance(connected.store, JobHealthSource) else None,
                    timeout_s=settings.platform_timeout_seconds,
                )
                tg.start_soon(monitor.run)
                outbox = outbox_worker(settings, connected)
                if outbox is not None:
                    tg.start_soon(outbox.run)
                if (
                    isinstance(connected.store, EscalationStore)
                    and settings.escalation_interval_seconds > 0
                ):
                    escalator = Escalator(
                        connected.store,
                        build_notifiers(settings),
                        relay_clock,
                        interval_s=settings.escalation_interval_seconds,
                        timeout_s=settings.platform_timeout_seconds,
                    )
                    state.escalator = escalator
                    tg.start_soon(escalator.run)
                yield {"relay_state": state, "mcp": mcp}
                await relay.drain(settings.drain_timeout_seconds)
                tg.cancel_scope.cancel()
            state.relay = None
            state.readiness = None

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        monitor = state.readiness
        if monitor is None:
            body = {"ready": False, "checks": {}, "reasons": ["relay: not started"]}
            return JSONResponse(body, status_code=503)
        readiness = await monitor.check()
        return JSONResponse(readiness.as_json(), status_code=200 if readiness.ready else 503)

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    routes: list[BaseRoute] = [
        Route("/mcp", endpoint=hops.AnswerHopMiddleware(gate)),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *gc_tuning.census_routes(),
        *console.routes(console_config(settings)),
        *retell.routes(layer, state.get),
        *extra_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=layer.middleware())
    app.state.relay_state = state
    return app


class RelayServer(uvicorn.Server):
    """uvicorn with the relay's graceful shutdown. On SIGTERM/SIGINT: first end every waiting
    call with its fallback (`Relay.drain`; a call arriving meanwhile gets
    `platform_unreachable`) while the listeners and response streams stay up, so every result
    is written out; only then uvicorn's own shutdown (listeners closed, open responses finish,
    the lifespan closes the platform connection). A second signal skips the drain.

    The order matters: uvicorn's exit flag also ends every open SSE response at once
    (sse-starlette watches it), which would cut the streams carrying the fallback results.
    Without the drain, uvicorn would wait for every call's deadline (up to minutes), longer
    than any orchestrator's grace period.
    """

    # A deployed relay cannot know whether a client is about to send its follow-up request.
    quiet_after_an_idle_drain = True

    def __init__(
        self,
        config: uvicorn.Config,
        drain_timeout_s: float,
        gc_policy: gc_tuning.FreezePolicy | None = None,
    ) -> None:
        super().__init__(config)
        self._drain_timeout_s = drain_timeout_s
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gc_policy = gc_policy

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        policy_task = None if self._gc_policy is None else self._loop.create_task(
            self._gc_policy.run(), name="gc-freeze-policy"
        )  # fmt: skip
        try:
            await super().serve(sockets)
        finally:
            if policy_task is not None:
                policy_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await policy_task

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)  # not serving yet, or the second signal: at once
            return
        # A signal handler: only schedule work on the loop.
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        async def drain_then_exit() -> None:
            try:
                await self._drain()
            finally:
                super(RelayServer, self).handle_exit(sig, None)

        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(drain_then_exit())

    async def _drain(self) -> None:
        state = _relay_state_of(self.config.loaded_app)
        if state is not None:
            waiting = await state.drain(self._drain_timeout_s, self.quiet_after_an_idle_drain)
            logger.info("shutting down: {} waiting call(s) answered with the fallback", waiting)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._drain_task is None:  # stopped without a signal (embedded: should_exit set)
            await self._drain()
        await super().shutdown(sockets)


def _relay_state_of(app: object) -> RelayState | None:
    """The RelayState of a Starlette app created by `create_app`, through any ASGI wrappers
    (uvicorn's proxy-headers and message-logger middleware keep the inner app as `.app`)."""
    for _ in range(8):
        state = getattr(getattr(app, "state", None), "relay_state", None)
        if isinstance(state, RelayState):
            return state
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def serve(settings: Settings, app: ASGIApp) -> None:
    """Serve `app` (from `create_app(settings)`) until SIGTERM/SIGINT, then drain."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep uvicorn's records in hitl_relay.logs' sink (JSON in production)
        server_header=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_seconds) + 5,
        **server_options(),
    )
    seconds_per_block = gc_tuning.tune(settings.gc_full_collection_every)
    interval = settings.gc_freeze_interval_seconds
    policy = None
    if interval:
        policy = gc_tuning.FreezePolicy(
            seconds_per_block, interval_s=interval, cap_objects=settings.gc_freeze_cap_objects
        )
    RelayServer(config, settings.drain_timeout_seconds, policy).run()


class _Embedded(RelayServer, EmbeddedServer):
    """The relay inside someone else's event loop (`EmbeddedServer`), stopped by its embedder
    once the embedder's own clients are done: the quiet period after the drain is kept for
    the clients of the calls the drain ended (their follow-up requests), not waited out when
    no call was waiting."""

    quiet_after_an_idle_drain = False


@asynccontextmanager
async def running(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop; yield its base URL once it accepts requests
    (the app's lifespan has started); stop it on exit. `port=0` picks a free port.

    The server runs in an asyncio task this context owns (not a task group), so it may be
    entered and exited from different tasks, as pytest-asyncio fixtures do.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, log_level="warning", access_log=False,
        server_header=False, timeout_graceful_shutdown=2, **server_options(),
    )  # fmt: skip
    server = _Embedded(config, drain_timeout_s=5.0)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as e:  # uvicorn exits when the app's start-up fails: not our process
            raise RuntimeError(f"the HTTP server on {host} did not start (exit {e.code})") from None

    task = asyncio.create_task(serve(), name=f"hitl-relay http {host}:{bound}")
    try:
        await server.startup_over.wait()
        if not server.started:
            raise RuntimeError(f"the HTTP server on {host} did not start")
        yield f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
    finally:
        server.exit()
        try:
            await task
        finally:
            sock.close()
