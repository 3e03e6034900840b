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
from relay_support import make_settings

import hitl_relay.mcp_http as mcp_http
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.mcp_client import connect
from hitl_relay.mcp_fast import SSE_HEADERS, Ask, FastAsk, eligible
from hitl_relay.models import AskHumanRequest, AskResult
from hitl_relay.ports import Backend
from hitl_relay.relay import Relay
from hitl_relay.security.middleware import STATE_BODY

KEY = "key-one-0123456789"
STREAM_ACCEPT = "application/json, text/event-stream"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def ask_args(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "question": "Can we deliver order 4411 on Saturday?",
        "session_id": "session-1",
        "call_id": "call-1",
        "agent_id": "agent-1",
    }
    values.update(overrides)
    return values


def call_body(
    arguments: dict[str, Any] | None, request_id: int | str = 7, **params: Any
) -> dict[str, Any]:
    p: dict[str, Any] = {"name": "ask_human", **params}
    if arguments is not None:
        p["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": p}


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


def parse_reply(response: httpx.Response) -> Reply:
    events: list[dict[str, Any]] = []
    for block in response.text.split("\r\n\r\n"):
        if not block:
            continue
        event: dict[str, Any] = {}
        for line in block.split("\r\n"):
            name, _, value = line.partition(": ")
            event[name] = value
        if "data" in event:
            event["data"] = json.loads(event["data"])
        events.append(event)
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    return Reply(response.status_code, headers, events, response.text)


async def post(
    url: str, body: dict[str, Any] | bytes, version: str | None = None, **headers: str
) -> Reply:
    sent = {"authorization": f"Bearer {KEY}", "accept": STREAM_ACCEPT}
    sent["content-type"] = "application/json"
    if version is not None:
        sent["mcp-protocol-version"] = version
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=30) as client:
        return parse_reply(await client.post(url, content=content, headers=sent))


def normalized(reply: Reply) -> Reply:
    """The reply with what differs between two calls (case ids, the wait) made equal."""
    events = []
    for event in reply.events:
        event = dict(event)
        if isinstance(event.get("data"), dict):
            data = json.loads(UUID_RE.sub("<case>", json.dumps(event["data"])))
            structured = data.get("result", {}).get("structuredContent")
            if isinstance(structured, dict) and "waited_ms" in structured:
                structured["waited_ms"] = 0
            event["data"] = data
        events.append(event)
    return Reply(reply.status, reply.headers, events, "")


Scenario = Callable[[MemoryPlatform, FakeClock], Coroutine[Any, Any, None]]


async def operator_answers(platform: MemoryPlatform, _clock: FakeClock) -> None:
    case_id = await platform.operator.wait_for_case()
    await platform.wait_until(lambda: platform.joined_channels >= 1)
    await platform.operator.answer(case_id, "Yes, Saturday works.")


async def operator_asks_back(platform: MemoryPlatform, _clock: FakeClock) -> None:
    case_id = await platform.operator.wait_for_case()
    await platform.wait_until(lambda: platform.joined_channels >= 1)
    await platform.operator.answer(case_id, "Which address?", kind="clarification")


async def deadline_passes(platform: MemoryPlatform, clock: FakeClock) -> None:
    await platform.wait_until(lambda: platform.joined_channels == 1)
    await clock.wait_for_sleepers(1)
    clock.advance(45)


async def nobody(_platform: MemoryPlatform, _clock: FakeClock) -> None:
    return None


async def through(
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, Any],
    scenario: Scenario,
    version: str | None = None,
    platform_down: bool = False,
) -> Reply:
    """One POST through `path` ("fast" or "sdk") to a fresh relay, `scenario` playing the
    operator's side."""
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    platform.faults.rpc_down = platform_down
    with monkeypatch.context() as m:
        if path == "sdk":
            m.setattr(mcp_http, "eligible", lambda *_a, **_k: None)
        async with relay_on(platform, clock) as url, anyio.create_task_group() as tg:
            tg.start_soon(scenario, platform, clock)
            with anyio.fail_after(20):
                reply = await post(url, body, version)
            tg.cancel_scope.cancel()
    return reply


def the_result(reply: Reply) -> dict[str, Any]:
    (event,) = [e for e in reply.events if "data" in e]
    assert event["event"] == "message"
    return cast(dict[str, Any], event["data"])


CASES: list[tuple[str, dict[str, Any], Scenario, bool]] = [
    ("answered", call_body(ask_args()), operator_answers, False),
    ("needs_info", call_body(ask_args(call_id="call-2")), operator_asks_back, False),
    ("timeout", call_body(ask_args(timeout_seconds=45), "abc"), deadline_passes, False),
    ("invalid", call_body(ask_args(question="", priority=9)), nobody, False),
    # An argument the tool does not declare is ignored (on both paths): the call waits.
    ("unknown argument", call_body(ask_args(colour="blue")), operator_answers, False),
    ("no arguments", call_body(None), nobody, False),
    ("platform unavailable", call_body(ask_args()), nobody, True),
]


@pytest.mark.parametrize(("name", "body", "scenario", "down"), CASES, ids=[c[0] for c in CASES])
async def test_the_fast_path_answers_as_the_sdk_does(
    monkeypatch: pytest.MonkeyPatch,
    served: Served,
    name: str,
    body: dict[str, Any],
    scenario: Scenario,
    down: bool,
) -> None:
    fast = await through("fast", monkeypatch, body, scenario, platform_down=down)
    assert served.fast == 1
    sdk = await through("sdk", monkeypatch, body, scenario, platform_down=down)
    assert served.fast == 1  # the second went to the SDK
    assert normalized(fast) == normalized(sdk)
    assert fast.status == 200
    assert fast.headers["content-type"] == "text/event-stream"
    assert fast.headers["cache-control"] == "no-cache, no-transform"
    result = the_result(fast)
    assert result["id"] == body["id"]
    expected_status = {
        "answered": "answered",
        "unknown argument": "answered",
        "needs_info": "needs_info",
        "timeout": "timeout",
        "platform unavailable": "platform_unreachable",
    }
    structured = result["result"]["structuredContent"]
    if name in expected_status:
        assert structured["status"] == expected_status[name]
        assert result["result"]["isError"] is False
    else:
        assert result["result"]["isError"] is True
        assert structured["error"] == "invalid_request"
        assert structured["problems"]  # each names its field and rule
        assert all(p["field"] and p["rule"] for p in structured["problems"])


@pytest.mark.parametrize("version", [None, "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
async def test_each_handshake_version_gets_the_sdks_result_shape(
    monkeypatch: pytest.MonkeyPatch, served: Served, version: str | None
) -> None:
    body = call_body(ask_args(question=""))
    fast = await through("fast", monkeypatch, body, nobody, version)
    sdk = await through("sdk", monkeypatch, body, nobody, version)
    assert served.fast == 1
    assert fast == sdk  # no case, no wait: the very same bytes
    assert "resultType" not in the_result(fast)["result"]


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


async def test_keep_alive_comments_flow_while_the_call_waits() -> None:
    stub = StubRelay()
    fast = FastAsk(lambda: cast(Relay, stub), None, ping_interval_s=0.01)
    sent: list[dict[str, Any]] = []
    pinged = anyio.Event()
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)
        if sum(1 for m in sent if m.get("body", b"").startswith(b": ping - ")) >= 3:
            pinged.set()

    ask = eligible(direct_scope())
    assert ask is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(fast.serve, ask, direct_scope(), receive, send)
        with anyio.fail_after(5):
            await pinged.wait()
        stub.release.set()
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
    bodies = [m["body"] for m in sent[1:]]
    assert all(re.fullmatch(rb": ping - [^\r\n]+\r\n\r\n", b) for b in bodies[:3])
    assert bodies[-2].startswith(b"event: message\r\ndata: {")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert not stub.cancelled


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
        await platform.wait_until(
            lambda: (
                platform.joined_channels == 0 and platform.session_of(case_id).status == "cancelled"
            ),
            within_s=10,
        )
    assert served.fast == 1
    assert platform.cases[case_id].status == "open"


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


async def test_the_sdks_own_client_goes_through_the_fast_path(served: Served) -> None:
    platform = MemoryPlatform()
    async with (
        relay_on(platform) as url,
        connect(url, KEY, mode="legacy") as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(operator_answers, platform, FakeClock())
        result = await client.call_tool("ask_human", ask_args(call_id="sdk-client"))
    assert served.fast == 1
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["answer"] == "Yes, Saturday works."
    assert UUID(result.structured_content["case_id"]) in platform.cases
