"""The blocking `ask_human` served without the SDK's per-request transport (`mcp_fast`).

Differential: the same POST goes once through the fast path and once through the SDK's
streaming transport (the router's eligibility switched off), each against a fresh relay on the
memory twin over real HTTP; status, headers and the parsed JSON-RPC messages must agree (only
the case's id and the wait's length differ between two calls). Then which requests the fast
path takes (everything else goes to the SDK), the keep-alive comments while waiting, a client
hanging up mid-wait, the drain at shutdown, and the SDK's own client going through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import anyio
import httpx
import pytest
from mcp.server import _streamable_http_modern
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from relay_support import ask_args, make_settings, wait_hung_up
from sse_starlette.sse import EventSourceResponse

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.mcp_client import connect
from hitl_relay.mcp_fast import MODERN_SSE_HEADERS, SSE_HEADERS, Ask, FastAsk, eligible
from hitl_relay.mcp_task_wire import TASKS_EXTENSION
from hitl_relay.models import AskHumanRequest, AskResult
from hitl_relay.ports import Backend
from hitl_relay.relay import Relay
from hitl_relay.security.middleware import STATE_BODY

KEY = "key-one-0123456789"
STREAM_ACCEPT = "application/json, text/event-stream"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


MODERN = "2026-07-28"
ENVELOPE = {
    PROTOCOL_VERSION_META_KEY: MODERN,
    CLIENT_CAPABILITIES_META_KEY: {},
    CLIENT_INFO_META_KEY: {"name": "test-agent", "version": "1.0"},
}


def call_body(
    arguments: dict[str, Any] | None,
    request_id: int | str = 7,
    modern: bool = False,
    **params: Any,
) -> dict[str, Any]:
    p: dict[str, Any] = {"name": "ask_human", **params}
    if arguments is not None:
        p["arguments"] = arguments
    if modern:  # the 2026 era's per-request envelope
        p["_meta"] = {**ENVELOPE, **p.get("_meta", {})}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": p}


def modern_headers(**overrides: str) -> dict[str, str]:
    headers = {"mcp_protocol_version": MODERN, "mcp_method": "tools/call"}
    headers["mcp_name"] = "ask_human"
    headers.update(overrides)
    return headers


@dataclass
class Served:
    """Which way each POST to /mcp went."""

    fast: int = 0
    sdk: int = 0


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    counts = Served()
    original = FastAsk.serve

    async def counting(self: FastAsk, ask: Ask, scope: Any, receive: Any, send: Any) -> None:
        counts.fast += 1
        await original(self, ask, scope, receive, send)

    monkeypatch.setattr(FastAsk, "serve", counting)
    return counts


@asynccontextmanager
async def relay_on(
    platform: MemoryPlatform, clock: FakeClock | None = None, **settings: Any
) -> AsyncIterator[str]:
    config: Settings = make_settings(api_keys=KEY, **settings)

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    async with running(create_app(config, backend=backend, clock=clock)) as url:
        yield url + "/mcp"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    events: list[dict[str, Any]]  # each SSE event: its fields, `data` parsed when JSON
    raw: str


def parse_reply(status: int, headers: httpx.Headers, text: str) -> Reply:
    kept = {k: v for k, v in headers.items() if k not in ("date", "content-length")}
    if kept.get("content-type") == "application/json":  # the 2026 era's reply within 15 s
        return Reply(status, kept, [{"json": json.loads(text)}], text)
    events: list[dict[str, Any]] = []
    for block in text.split("\r\n\r\n"):
        if not block:
            continue
        event: dict[str, Any] = {}
        for line in block.split("\r\n"):
            name, _, value = line.partition(": ")
            event[name] = value
        if "data" in event:
            event["data"] = json.loads(event["data"])
        events.append(event)
    return Reply(status, kept, events, text)


def is_ping(event: dict[str, Any]) -> bool:
    return set(event) == {""} and str(event[""]).startswith("ping")


async def post(
    url: str,
    body: dict[str, Any] | bytes,
    version: str | None = None,
    pinged: anyio.Event | None = None,
    **headers: str,
) -> Reply:
    """POST `body` to /mcp; `pinged` is set when a keep-alive comment arrives."""
    sent = {"authorization": f"Bearer {KEY}", "accept": STREAM_ACCEPT}
    sent["content-type"] = "application/json"
    given = modern_headers(**headers) if version == MODERN else headers
    if version is not None:
        given["mcp_protocol_version"] = version
    sent.update({k.replace("_", "-"): v for k, v in given.items()})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    text = ""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url, content=content, headers=sent) as response,
    ):
        async for chunk in response.aiter_text():
            text += chunk
            if pinged is not None and ": ping" in text:
                pinged.set()
    return parse_reply(response.status_code, response.headers, text)


def normalized(reply: Reply) -> Reply:
    """The reply with what differs between two calls (case ids, the wait) made equal."""
    events = []
    for event in reply.events:
        if is_ping(event):
            continue  # how many fit in a wait is timing, not the path
        event = dict(event)
        key = "data" if "data" in event else "json"
        if isinstance(event.get(key), dict):
            data = json.loads(UUID_RE.sub("<case>", json.dumps(event[key])))
            structured = data.get("result", {}).get("structuredContent")
            if isinstance(structured, dict) and "waited_ms" in structured:
                structured["waited_ms"] = 0
            event[key] = data
        events.append(event)
    return Reply(reply.status, reply.headers, events, "")


Scenario = Callable[[MemoryPlatform, FakeClock, anyio.Event], Coroutine[Any, Any, None]]


async def operator_answers(platform: MemoryPlatform, _clock: FakeClock, _p: anyio.Event) -> None:
    case_id = await platform.operator.wait_for_case()
    await platform.wait_until(lambda: platform.joined_channels >= 1)
    await platform.operator.answer(case_id, "Yes, Saturday works.")


async def operator_answers_after_a_ping(
    platform: MemoryPlatform, clock: FakeClock, pinged: anyio.Event
) -> None:
    await pinged.wait()
    await operator_answers(platform, clock, pinged)


async def operator_asks_back(platform: MemoryPlatform, _clock: FakeClock, _p: anyio.Event) -> None:
    case_id = await platform.operator.wait_for_case()
    await platform.wait_until(lambda: platform.joined_channels >= 1)
    await platform.operator.answer(case_id, "Which address?", kind="clarification")


async def deadline_passes(platform: MemoryPlatform, clock: FakeClock, _p: anyio.Event) -> None:
    await platform.wait_until(lambda: platform.joined_channels == 1)
    await clock.wait_for_sleepers(1)
    clock.advance(45)


async def nobody(_platform: MemoryPlatform, _clock: FakeClock, _p: anyio.Event) -> None:
    return None


async def through(
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, Any],
    scenario: Scenario,
    version: str | None = None,
    platform_down: bool = False,
    keep_alive_s: float | None = None,
) -> Reply:
    """One POST through `path` ("fast" or "sdk") to a fresh relay, `scenario` playing the
    operator's side."""
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    platform.faults.rpc_down = platform_down
    pinged = anyio.Event()
    with monkeypatch.context() as m:
        if path == "sdk":
            m.setattr(FastAsk, "take", lambda *_a, **_k: None)
        if keep_alive_s is not None:  # both paths' keep-alive (and 2026 deferral) interval
            m.setattr(EventSourceResponse, "DEFAULT_PING_INTERVAL", keep_alive_s)
            m.setattr(_streamable_http_modern, "_SSE_PING_INTERVAL", keep_alive_s)
        async with relay_on(platform, clock) as url, anyio.create_task_group() as tg:
            tg.start_soon(scenario, platform, clock, pinged)
            with anyio.fail_after(20):
                reply = await post(url, body, version, pinged)
            tg.cancel_scope.cancel()
    return reply


def the_result(reply: Reply) -> dict[str, Any]:
    if reply.headers["content-type"] == "application/json":
        return cast(dict[str, Any], reply.events[0]["json"])
    (event,) = [e for e in reply.events if "data" in e]
    assert event["event"] == "message"
    assert reply.events[-1] is event  # the result ends the stream
    return cast(dict[str, Any], event["data"])


# (name, arguments (None: absent), request id, scenario, platform down, keep-alive interval)
CASES: list[tuple[str, dict[str, Any] | None, int | str, Scenario, bool, float | None]] = [
    ("answered", ask_args(), 7, operator_answers, False, None),
    ("needs_info", ask_args(call_id="call-2"), 7, operator_asks_back, False, None),
    ("timeout", ask_args(timeout_seconds=45), "abc", deadline_passes, False, None),
    ("invalid", ask_args(question="", priority=9), 7, nobody, False, None),
    # An argument the tool does not declare is ignored (on both paths): the call waits.
    ("unknown argument", ask_args(colour="blue"), 7, operator_answers, False, None),
    ("no arguments", None, 7, nobody, False, None),
    ("platform unavailable", ask_args(), 7, nobody, True, None),
    # Answered after a keep-alive went out (2026 era: the reply became a stream).
    ("answered after keep-alive", ask_args(), 8, operator_answers_after_a_ping, False, 0.05),
]
EXPECTED_STATUS = {
    "answered": "answered",
    "answered after keep-alive": "answered",
    "unknown argument": "answered",
    "needs_info": "needs_info",
    "timeout": "timeout",
    "platform unavailable": "platform_unreachable",
}


@pytest.mark.parametrize("version", [None, MODERN], ids=["handshake", "2026"])
@pytest.mark.parametrize(
    ("name", "arguments", "request_id", "scenario", "down", "keep_alive_s"),
    CASES,
    ids=[c[0] for c in CASES],
)
async def test_the_fast_path_answers_as_the_sdk_does(
    monkeypatch: pytest.MonkeyPatch,
    served: Served,
    version: str | None,
    name: str,
    arguments: dict[str, Any] | None,
    request_id: int | str,
    scenario: Scenario,
    down: bool,
    keep_alive_s: float | None,
) -> None:
    body = call_body(arguments, request_id, modern=version == MODERN)
    options: dict[str, Any] = {"platform_down": down, "keep_alive_s": keep_alive_s}
    fast = await through("fast", monkeypatch, body, scenario, version, **options)
    assert served.fast == 1
    sdk = await through("sdk", monkeypatch, body, scenario, version, **options)
    assert served.fast == 1  # the second went to the SDK
    assert normalized(fast) == normalized(sdk)
    assert fast.status == 200
    streamed = version is None or keep_alive_s is not None
    assert fast.headers["content-type"] == ("text/event-stream" if streamed else "application/json")
    if streamed:
        assert fast.headers["cache-control"] == "no-cache, no-transform"
    pings = [e for e in fast.events if is_ping(e)]
    assert bool(pings) == (keep_alive_s is not None)
    result = the_result(fast)
    assert result["id"] == request_id
    if version == MODERN:
        assert result["result"]["resultType"] == "complete"
        assert result["result"]["_meta"][SERVER_INFO_META_KEY]["name"] == "hitl-relay"
    structured = result["result"]["structuredContent"]
    if name in EXPECTED_STATUS:
        assert structured["status"] == EXPECTED_STATUS[name]
        assert result["result"]["isError"] is False
    else:
        assert result["result"]["isError"] is True
        assert structured["error"] == "invalid_request"
        assert structured["problems"]  # each names its field and rule
        assert all(p["field"] and p["rule"] for p in structured["problems"])


@pytest.mark.parametrize(
    "version", [None, "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", MODERN]
)
async def test_each_protocol_version_gets_the_sdks_result_shape(
    monkeypatch: pytest.MonkeyPatch, served: Served, version: str | None
) -> None:
    body = call_body(ask_args(question=""), modern=version == MODERN)
    fast = await through("fast", monkeypatch, body, nobody, version)
    sdk = await through("sdk", monkeypatch, body, nobody, version)
    assert served.fast == 1
    assert fast == sdk  # no case, no wait: the very same bytes
    assert ("resultType" in the_result(fast)["result"]) == (version == MODERN)


def scope_of(body: dict[str, Any] | list[Any] | bytes, **headers: str) -> dict[str, Any]:
    sent = {"accept": STREAM_ACCEPT, "content-type": "application/json"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "headers": [(k.encode(), v.encode()) for k, v in sent.items()],
        "state": {STATE_BODY: raw},
    }


def test_a_plain_blocking_ask_human_is_taken() -> None:
    ask = eligible(scope_of(call_body(ask_args(), _meta={"other": 1})))
    assert ask is not None
    assert (ask.request_id, ask.version, ask.arguments) == (7, "2025-03-26", ask_args())
    taken = eligible(scope_of(call_body(None, "x"), mcp_protocol_version="2025-11-25"))
    assert taken is not None
    assert (taken.request_id, taken.version, taken.arguments) == ("x", "2025-11-25", {})
    assert eligible(scope_of(call_body(ask_args()), accept="*/*")) is not None


NOT_TAKEN: list[tuple[str, dict[str, Any] | list[Any] | bytes, dict[str, str]]] = [
    ("progress token", call_body(ask_args(), _meta={"progressToken": 1}), {}),
    ("task", call_body(ask_args(), task={"ttl": 60000}), {}),
    ("null task", call_body(ask_args(), task=None), {}),
    ("other tool", {**call_body({}), "params": {"name": "get_human_answer"}}, {}),
    ("other method", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {}),
    ("bool id", call_body(ask_args(), True), {}),
    ("null id", call_body(ask_args(), None), {}),  # type: ignore[arg-type]
    ("notification", {k: v for k, v in call_body(ask_args()).items() if k != "id"}, {}),
    ("arguments not an object", call_body(["q"]), {}),  # type: ignore[arg-type]
    ("unknown envelope key", {**call_body(ask_args()), "extra": 1}, {}),
    ("wrong jsonrpc", {**call_body(ask_args()), "jsonrpc": "1.0"}, {}),
    ("batch", [call_body(ask_args())], {}),
    ("not JSON", b'{"method": "tools/call", "name": "ask_human"', {}),
    ("meta not an object", call_body(ask_args(), _meta=[1]), {}),
    ("2026 era", call_body(ask_args()), {"mcp_protocol_version": "2026-07-28"}),
    ("unknown version", call_body(ask_args()), {"mcp_protocol_version": "1999-01-01"}),
    ("JSON only accepted", call_body(ask_args()), {"accept": "application/json"}),
    ("SSE only accepted", call_body(ask_args()), {"accept": "text/event-stream"}),
    ("form content", call_body(ask_args()), {"content_type": "text/plain"}),
    ("JSON-ish content", call_body(ask_args()), {"content_type": "application/json-seq"}),
]


@pytest.mark.parametrize(("name", "body", "headers"), NOT_TAKEN, ids=[c[0] for c in NOT_TAKEN])
def test_everything_else_goes_to_the_sdk(
    name: str, body: dict[str, Any] | list[Any] | bytes, headers: dict[str, str]
) -> None:
    assert eligible(scope_of(body, **headers)) is None


def any_schema(_name: str) -> dict[str, Any]:
    return {"type": "object"}


def test_a_2026_blocking_ask_human_is_taken_once_the_server_can_check_its_headers() -> None:
    scope = scope_of(call_body(ask_args(), modern=True), **modern_headers())
    ask = eligible(scope, tool_schema=any_schema)
    assert ask is not None
    assert (ask.version, ask.modern, ask.arguments) == (MODERN, True, ask_args())
    assert eligible(scope) is None  # no schema to check Mcp-Param-* against: the SDK's


NOT_TAKEN_2026: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    (
        "tasks extension",
        call_body(
            ask_args(),
            modern=True,
            _meta={CLIENT_CAPABILITIES_META_KEY: {"extensions": {TASKS_EXTENSION: {}}}},
        ),
        modern_headers(),
    ),
    ("progress token", call_body(ask_args(), modern=True, _meta={"progressToken": 3}), {}),
    ("no envelope", call_body(ask_args()), modern_headers()),
    ("method header differs", call_body(ask_args(), modern=True), modern_headers(mcp_method="x")),
    ("name header differs", call_body(ask_args(), modern=True), modern_headers(mcp_name="x")),
    (
        "Mcp-Param header",
        call_body(ask_args(), modern=True),
        modern_headers(mcp_param_call_id="call-1"),
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "headers"), NOT_TAKEN_2026, ids=[c[0] for c in NOT_TAKEN_2026]
)
def test_a_2026_request_the_sdk_must_judge_goes_to_the_sdk(
    name: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    assert eligible(scope_of(body, **(headers or modern_headers())), tool_schema=any_schema) is None


def test_a_duplicated_routing_header_goes_to_the_sdk() -> None:
    scope = scope_of(call_body(ask_args(), modern=True), **modern_headers())
    assert eligible(scope, tool_schema=any_schema) is not None
    scope["headers"].append((b"mcp-method", b"tools/call"))
    assert eligible(scope, tool_schema=any_schema) is None


def test_a_get_a_missing_body_or_an_oversized_body_goes_to_the_sdk() -> None:
    scope = scope_of(call_body(ask_args()))
    assert eligible(scope) is not None
    assert eligible({**scope, "method": "GET"}) is None
    assert eligible({**scope, "state": {}}) is None
    assert eligible(scope, max_body_bytes=10) is None


@dataclass
class StubRelay:
    """`Relay.ask` that waits until released; records a cancellation."""

    release: anyio.Event = field(default_factory=anyio.Event)
    started: anyio.Event = field(default_factory=anyio.Event)
    cancelled: bool = False

    async def ask(self, request: AskHumanRequest, progress: object, *, owner: object) -> AskResult:
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        return AskResult(status="timeout", message="No answer yet.", deadline_s=30)


def direct_scope() -> dict[str, Any]:
    return {**scope_of(call_body(ask_args())), "client": ("127.0.0.1", 1), "server": None}


@dataclass
class WaitingClient:
    """The ASGI side of a client that waits without hanging up: records what is sent; `pinged`
    once three bodies that `is_ping` recognises went out."""

    is_ping: Callable[[bytes], bool]
    sent: list[dict[str, Any]] = field(default_factory=list)
    pinged: anyio.Event = field(default_factory=anyio.Event)

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        if sum(1 for m in self.sent if self.is_ping(m.get("body", b""))) >= 3:
            self.pinged.set()

    async def served(self, fast: FastAsk, ask: Ask, scope: Any, stub: StubRelay) -> None:
        """Serve `ask` until three pings went out, then let the relay answer."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(fast.serve, ask, scope, self.receive, self.send)
            with anyio.fail_after(5):
                await self.pinged.wait()
            stub.release.set()


async def test_keep_alive_comments_flow_while_the_call_waits() -> None:
    stub = StubRelay()
    fast = FastAsk(lambda: cast(Relay, stub), None, ping_interval_s=0.01)
    client = WaitingClient(lambda body: body.startswith(b": ping - "))
    ask = eligible(direct_scope())
    assert ask is not None
    await client.served(fast, ask, direct_scope(), stub)
    sent = client.sent
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
    bodies = [m["body"] for m in sent[1:]]
    assert all(re.fullmatch(rb": ping - [^\r\n]+\r\n\r\n", b) for b in bodies[:3])
    assert bodies[-2].startswith(b"event: message\r\ndata: {")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert not stub.cancelled


async def test_a_2026_call_waiting_past_the_deferral_turns_into_a_stream_of_pings() -> None:
    stub = StubRelay()
    info = {"name": "hitl-relay", "version": "1"}
    fast = FastAsk(
        lambda: cast(Relay, stub),
        None,
        server_info=lambda: info,
        tool_schema=any_schema,
        modern_deferral_s=0.01,
    )
    client = WaitingClient(lambda body: body == b": ping\r\n\r\n")
    scope = {**scope_of(call_body(ask_args(), modern=True), **modern_headers())}
    scope.update(client=("127.0.0.1", 1), server=None)
    ask = fast.take(scope)
    assert ask is not None
    assert ask.modern
    await client.served(fast, ask, scope, stub)
    sent = client.sent
    # The headers once, at the first ping; the pings; the result as the stream's last event.
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert starts == [{"type": "http.response.start", "status": 200, "headers": MODERN_SSE_HEADERS}]
    assert sent[0] == starts[0]
    assert all(m["body"] == b": ping\r\n\r\n" for m in sent[1:-1])
    last = sent[-1]
    assert last["more_body"] is False
    assert b'"result"' in last["body"]
    assert b'"No answer yet."' in last["body"]
    assert not stub.cancelled


async def test_a_keep_alive_that_cannot_be_written_ends_the_wait_with_its_error() -> None:
    stub = StubRelay()
    fast = FastAsk(lambda: cast(Relay, stub), None, ping_interval_s=0.01)
    client = WaitingClient(lambda body: False)

    async def send(message: Any) -> None:
        if message.get("body", b"").startswith(b": ping"):
            raise OSError("connection reset")

    ask = eligible(direct_scope())
    assert ask is not None
    with anyio.fail_after(5), pytest.raises(OSError, match="connection reset"):
        await fast.serve(ask, direct_scope(), client.receive, send)
    assert stub.cancelled


async def test_a_client_gone_mid_wait_cancels_the_wait_and_nothing_more_is_written() -> None:
    stub = StubRelay()
    fast = FastAsk(lambda: cast(Relay, stub), None)
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await stub.started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    ask = eligible(direct_scope())
    assert ask is not None
    with anyio.fail_after(5):
        await fast.serve(ask, direct_scope(), receive, send)
    assert stub.cancelled
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_hanging_up_mid_wait_over_http_leaves_the_case_answerable(served: Served) -> None:
    platform = MemoryPlatform()
    async with relay_on(platform) as url:
        async with anyio.create_task_group() as tg:
            tg.start_soon(post, url, call_body(ask_args(call_id="hangup")))
            case_id = await platform.operator.wait_for_case()
            await platform.wait_until(lambda: platform.joined_channels == 1)
            tg.cancel_scope.cancel()
        await wait_hung_up(platform, case_id)
    assert served.fast == 1


async def test_a_shutdown_drains_a_waiting_fast_path_call_with_its_fallback(
    served: Served,
) -> None:
    platform = MemoryPlatform()
    replies: list[Reply] = []

    async def ask() -> None:
        replies.append(await post(url, call_body(ask_args(call_id="drained", timeout_seconds=120))))

    # Leaving `relay_on` stops the server after its drain; the task group then waits for the
    # call's reply.
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg, relay_on(platform) as url:
            tg.start_soon(ask)
            case_id = await platform.operator.wait_for_case()
            await platform.wait_until(lambda: platform.joined_channels == 1)
    assert len(replies) == 1
    assert served.fast == 1
    structured = the_result(replies[0])["result"]["structuredContent"]
    assert (structured["status"], structured["case_id"]) == ("timeout", str(case_id))
    assert platform.cases[case_id].status == "open"
    assert replies[0].events[-1]["event"] == "message"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_sdks_own_client_goes_through_the_fast_path(served: Served, mode: str) -> None:
    platform = MemoryPlatform()
    async with (
        relay_on(platform) as url,
        connect(url, KEY, mode=mode) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(operator_answers, platform, FakeClock(), anyio.Event())
        result = await client.call_tool("ask_human", ask_args(call_id=f"sdk-client-{mode}"))
    assert served.fast == 1
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["answer"] == "Yes, Saturday works."
    assert UUID(result.structured_content["case_id"]) in platform.cases
