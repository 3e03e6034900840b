"""The MCP face of the relay: tools `ask_human`, `get_human_answer` and `get_call_history`, over
stdio or HTTP.

Thin on purpose: parse the arguments (`models`), call the core (`Relay`), render the result as
text plus `structuredContent` ({status, answer, clarification, case_id, waited_ms, deadline_s,
message} for the first two; {status, call_id, entries, message} for the history). Bad arguments come
back as a tool result with `isError: true` naming the field and the rule, so the agent can
correct itself; nothing the caller sends produces a stack trace.

Built on the SDK's low-level `Server`, which serves both protocol eras: the handshake-era
versions (2025-03-26, 2025-06-18, ... via `initialize`) and the newest per-request envelope.
While the circuit breaker is open the tools' descriptions say they are unavailable, and the
server can tell connected stdio clients through `notifications/tools/list_changed`.

With a Postgres-backed store, `ask_human` also runs as an MCP task for clients that opt in
(`hitl_relay.mcp_tasks`, both protocol eras); everyone else gets the blocking call.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import mcp_types as types
from loguru import logger
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from hitl_relay import __version__, metrics
from hitl_relay.config import Settings
from hitl_relay.errors import InvalidRequest
from hitl_relay.mcp_task_wire import CLIENT_GONE, Rendering
from hitl_relay.mcp_tasks import TaskService
from hitl_relay.models import (
    ASK_HUMAN_DESCRIPTION,
    GET_CALL_HISTORY_DESCRIPTION,
    GET_HUMAN_ANSWER_DESCRIPTION,
    AskHumanRequest,
    AskResult,
    CallHistory,
    GetCallHistoryRequest,
    GetHumanAnswerRequest,
    parse_ask_request,
    parse_get_answer_request,
    parse_get_call_history_request,
    tool_schema,
)
from hitl_relay.relay import Relay
from hitl_relay.resilience import BreakerState
from hitl_relay.security.middleware import key_of

SERVER_NAME = "hitl-relay"
INSTRUCTIONS = (
    "Use ask_human to get an answer from a human colleague during a live call, and "
    "get_human_answer to pick up an answer that arrived after ask_human timed out. If ask_human "
    "returns status needs_info, ask the caller the colleague's question and call ask_human again "
    "with case_id and the caller's reply as question. get_call_history lists the questions "
    "already asked in this call."
)
UNAVAILABLE_NOTE = (
    "UNAVAILABLE RIGHT NOW: the colleagues' system cannot be reached, so this tool returns "
    "status platform_unreachable at once. Tell the caller someone will get back to them.\n\n"
)
TASKS_NOTE = (
    "\n\nAs a task: clients that support MCP tasks may call this tool as a task (a chat agent, "
    "or any wait longer than the client's request timeout): the call returns a task handle at "
    "once and the colleague's answer is the task's result, kept for the task's ttl and "
    "readable from any relay replica. A caller on the line (voice, 30-60 s) is better served "
    "by a plain call, which returns the answer the moment it arrives."
)

RelaySource = Callable[[], Relay]
Context = ServerRequestContext[Any, Any]


class RelayMcpServer:
    """The MCP server for one relay: tool listing, tool calls, and tool-list change notices."""

    def __init__(self, relay: RelaySource) -> None:
        self._relay = relay
        # Connections that can carry server-initiated notifications (stdio, stateful HTTP).
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        # (breaker open?, tasks served?) → the tool list
        self._tools: dict[tuple[bool, bool], list[types.Tool]] = {}
        self.server: Server[Any] = Server(
            SERVER_NAME,
            version=__version__,
            title="Human-in-the-loop relay",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            # The SDK checks Mcp-Param headers of every tools/call against the tool's schema;
            # without this it would run a whole tools/list through its middleware each time.
            get_tool_input_schema=self._tool_input_schema,
        )
        # MCP tasks (hitl_relay.mcp_tasks): served once `tasks.running(store)` has a store.
        self.tasks = TaskService(relay, Rendering(render=render, render_invalid=render_invalid))
        self.tasks.install(self.server)

    def initialization_options(self) -> InitializationOptions:
        return self.server.create_initialization_options(NotificationOptions(tools_changed=True))

    def tools(self) -> list[types.Tool]:
        relay = self._relay()
        unavailable = relay.breaker is not None and relay.breaker.is_open
        # Built once per state: the SDK lists the tools on every request to check arguments.
        key = (unavailable, self.tasks.available)
        cached = self._tools.get(key)
        if cached is None:
            cached = self._tools[key] = self._make_tools(*key)
        return list(cached)

    def _make_tools(self, unavailable: bool, tasks: bool = False) -> list[types.Tool]:
        note = UNAVAILABLE_NOTE if unavailable else ""
        # 2025-11-25: a tool that may run as a task says so (absent means "forbidden").
        execution = types.ToolExecution(task_support="optional") if tasks else None
        output_schema = tool_schema(AskResult)
        return [
            types.Tool(
                name="ask_human",
                title="Ask a human colleague",
                description=note + ASK_HUMAN_DESCRIPTION + (TASKS_NOTE if tasks else ""),
                input_schema=tool_schema(AskHumanRequest),
                output_schema=output_schema,
                execution=execution,
                annotations=types.ToolAnnotations(
                    title="Ask a human colleague",
                    read_only_hint=False,
                    destructive_hint=False,
                    idempotent_hint=True,
                    open_world_hint=True,
                ),
            ),
            types.Tool(
                name="get_human_answer",
                title="Pick up a late answer",
                description=note + GET_HUMAN_ANSWER_DESCRIPTION,
                input_schema=tool_schema(GetHumanAnswerRequest),
                output_schema=output_schema,
                annotations=types.ToolAnnotations(
                    title="Pick up a late answer",
                    read_only_hint=True,
                    idempotent_hint=True,
                    open_world_hint=True,
                ),
            ),
            types.Tool(
                name="get_call_history",
                title="Questions asked in this call",
                description=note + GET_CALL_HISTORY_DESCRIPTION,
                input_schema=tool_schema(GetCallHistoryRequest),
                output_schema=tool_schema(CallHistory),
                annotations=types.ToolAnnotations(
                    title="Questions asked in this call",
                    read_only_hint=True,
                    idempotent_hint=True,
                    open_world_hint=True,
                ),
            ),
        ]

    def _tool_input_schema(self, name: str) -> Mapping[str, Any] | None:
        return next((t.input_schema for t in self.tools() if t.name == name), None)

    async def announce_tools_changed(self) -> None:
        """Tell connected clients (stdio, stateful sessions) to re-read the tool list.

        Best effort: a connection that went away drops the notice (the SDK never raises here).
        """
        for connection in list(self._connections):
            await connection.send_tool_list_changed()

    async def watch_breaker(self) -> None:
        """Run until cancelled: announce a tool-list change whenever the breaker changes state."""
        breaker = self._relay().breaker
        if breaker is None:
            await anyio.sleep_forever()
            return
        send, receive = anyio.create_memory_object_stream[BreakerState](max_buffer_size=math.inf)
        breaker.on_change(lambda _old, new: send.send_nowait(new))
        async with send, receive:
            async for _state in receive:
                await self.announce_tools_changed()

    async def _list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        return types.ListToolsResult(tools=self.tools())

    async def _call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        self._remember(ctx)
        relay = self._relay()
        arguments = params.arguments or {}
        try:
            if params.name == "ask_human":
                return render(await self._ask(ctx, relay, arguments))
            if params.name == "get_human_answer":
                request = parse_get_answer_request(arguments)
                return render(await relay.get_answer(request.case_id, owner=key_of(ctx)))
            if params.name == "get_call_history":
                history = parse_get_call_history_request(arguments)
                return render(await relay.call_history(history.call_id))
        except InvalidRequest as e:
            return render_invalid(e)
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")

    async def _ask(self, ctx: Context, relay: Relay, arguments: dict[str, Any]) -> AskResult:
        try:
            request = parse_ask_request(arguments)
        except InvalidRequest:
            metrics.invocations.labels(outcome="invalid").inc()
            raise
        session = ctx.session

        async def progress(elapsed: float, total: float, message: str) -> None:
            try:
                await session.report_progress(elapsed, total, message)
            except CLIENT_GONE:
                logger.debug("progress not delivered: the client is gone")

        # Progress only for a caller that asked for it (a token in `_meta`): otherwise every
        # report is dropped by the SDK, and the wait would keep a task for nothing.
        wants_progress = ctx.meta is not None and "progress_token" in ctx.meta
        return await relay.ask(request, progress if wants_progress else None, owner=key_of(ctx))

    def _remember(self, ctx: Context) -> None:
        # The SDK (2.3) makes a ServerSession per request; the Connection behind it is the
        # long-lived peer. It has no public accessor on the request context yet.
        connection = getattr(ctx.session, "_connection", None)
        if isinstance(connection, Connection) and connection.has_standalone_channel:
            self._connections.add(connection)


def render(result: AskResult | CallHistory) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=result.text())],
        structured_content=result.model_dump(mode="json"),
    )


def render_invalid(error: InvalidRequest) -> types.CallToolResult:
    lines = [f"{field}: {rule}" for field, rule in error.problems]
    text = "Invalid arguments. Fix these and call again:\n" + "\n".join(lines)
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content={
            "error": "invalid_request",
            "problems": [{"field": f, "rule": r} for f, r in error.problems],
        },
        is_error=True,
    )


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over stdin/stdout until the client closes it (`hitl-relay stdio`)."""
    from hitl_relay.composition import build_relay, open_backend, task_store_for

    async with open_backend(settings) as backend, anyio.create_task_group() as tg:
        relay = build_relay(backend, settings)
        mcp = RelayMcpServer(lambda: relay)
        tg.start_soon(mcp.watch_breaker)
        tasks = mcp.tasks.running(task_store_for(backend.store))
        async with relay.running(), tasks, stdio_server() as (read_stream, write_stream):
            await mcp.server.run(read_stream, write_stream, mcp.initialization_options())
        tg.cancel_scope.cancel()
