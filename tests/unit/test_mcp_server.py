"""The MCP server over streamable HTTP (uvicorn in-process, free port), the memory twin behind it,
and the SDK's own client acting as the voice agent: both protocol eras, progress, tool errors,
bearer keys, and a client that hangs up mid-wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest
from mcp import Client
from relay_support import ask_args, make_settings, wait_hung_up

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.mcp_client import connect
from hitl_relay.ports import Backend

KEYS = ("key-one-0123456789", "key-two-9876543210")
MODES = ["legacy", "auto"]


@dataclass
class Relay:
    url: str
    platform: MemoryPlatform
    clock: FakeClock | None

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"


@asynccontextmanager
async def relay_app(
    platform: MemoryPlatform, clock: FakeClock | None = None, **settings: Any
) -> AsyncIterator[Relay]:
    config: Settings = make_settings(api_keys=",".join(KEYS), **settings)

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    async with running(create_app(config, backend=backend, clock=clock)) as url:
        yield Relay(url, platform, clock)


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with relay_app(MemoryPlatform(), progress_interval_seconds=0.05) as r:
        yield r


async def answer_when_waiting(platform: MemoryPlatform, text: str) -> UUID:
    case_id = await platform.operator.wait_for_case()
    await platform.wait_until(lambda: platform.joined_channels >= 1)
    await platform.operator.answer(case_id, text)
    return case_id


@pytest.mark.parametrize("mode", MODES)
async def test_ask_human_returns_the_operators_answer_as_text_and_structured_content(
    relay: Relay, mode: str
) -> None:
    async with (
        connect(relay.mcp_url, KEYS[0], mode=mode) as client,
        anyio.create_task_group() as tg,
    ):
        cases: list[UUID] = []

        async def operator() -> None:
            cases.append(await answer_when_waiting(relay.platform, "Yes, Saturday works."))

        tg.start_soon(operator)
        result = await client.call_tool("ask_human", ask_args(call_id=f"call-{mode}"))
    assert result.is_error is False
    assert [c.text for c in result.content if c.type == "text"] == ["Yes, Saturday works."]
    structured = result.structured_content
    assert structured is not None
    assert structured["status"] == "answered"
    assert structured["answer"] == "Yes, Saturday works."
    assert structured["case_id"] == str(cases[0])
    assert structured["waited_ms"] >= 0
    assert relay.platform.joined_channels == 0


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_arrive_while_waiting(relay: Relay, mode: str) -> None:
    updates: list[tuple[float, float | None, str | None]] = []
    enough = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))
        if len(updates) >= 3:
            enough.set()

    async with (
        connect(relay.mcp_url, KEYS[1], mode=mode) as client,
        anyio.create_task_group() as tg,
    ):

        async def operator() -> None:
            with anyio.fail_after(10):
                await enough.wait()
            await answer_when_waiting(relay.platform, "Yes")

        tg.start_soon(operator)
        result = await client.call_tool(
            "ask_human", ask_args(call_id=f"progress-{mode}"), progress_callback=on_progress
        )
    assert result.structured_content is not None
    assert result.structured_content["status"] == "answered"
    assert len(updates) >= 3
    assert all(total == 45 for _, total, _ in updates)
    assert [p for p, _, _ in updates] == sorted(p for p, _, _ in updates)
    assert all(m and m.startswith("Waiting for a colleague's answer") for _, _, m in updates)


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_arguments_come_back_as_a_tool_error_naming_field_and_rule(
    relay: Relay, mode: str
) -> None:
    async with connect(relay.mcp_url, KEYS[0], mode=mode) as client:
        result = await client.call_tool("ask_human", ask_args(priority=9, question=""))
    assert result.is_error is True
    text = result.content[0].text if result.content[0].type == "text" else ""
    assert "priority: must be between 1 and 5" in text
    assert "question: must be 1 to 2000 characters" in text
    assert result.structured_content is not None
    assert {"field": "priority", "rule": "must be between 1 and 5"} in result.structured_content[
        "problems"
    ]
    assert relay.platform.cases == {}


async def test_camel_case_arguments_are_accepted(relay: Relay) -> None:
    args = {
        "question": "Refund allowed?",
        "sessionId": "s-9",
        "callId": "call-camel",
        "agentId": "a-9",
        "callerInfo": {"name": "Ada"},
        "conversationHistory": [{"role": "caller", "content": "I want a refund"}],
        "timeoutSeconds": 30,
    }
    async with connect(relay.mcp_url, KEYS[0]) as client, anyio.create_task_group() as tg:
        tg.start_soon(answer_when_waiting, relay.platform, "Yes")
        result = await client.call_tool("ask_human", args)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "answered"
    (case,) = relay.platform.cases.values()
    assert case.metadata["caller_info"] == {"name": "Ada"}
    assert case.metadata["response_timeout"] == 30


@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_listed_with_agent_facing_schemas(relay: Relay, mode: str) -> None:
    async with connect(relay.mcp_url, KEYS[0], mode=mode) as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"ask_human", "get_human_answer", "get_call_history"}
    ask = tools["ask_human"]
    assert ask.description is not None
    assert "checking with a colleague" in ask.description
    assert set(ask.input_schema["required"]) == {"question", "session_id", "call_id", "agent_id"}
    assert ask.input_schema["properties"]["priority"]["maximum"] == 5
    assert "$defs" not in ask.input_schema
    assert ask.output_schema is not None
    assert "status" in ask.output_schema["properties"]
    assert tools["get_human_answer"].input_schema["required"] == ["case_id"]


async def test_timeout_then_get_human_answer_picks_up_the_late_answer() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    async with (
        relay_app(platform, clock) as relay,
        connect(relay.mcp_url, KEYS[0]) as client,
        anyio.create_task_group() as tg,
    ):

        async def deadline_passes() -> None:
            await platform.wait_until(lambda: platform.joined_channels == 1)
            await clock.wait_for_sleepers(1)
            clock.advance(45)

        tg.start_soon(deadline_passes)
        timed_out = await client.call_tool("ask_human", ask_args(timeout_seconds=45))
        assert timed_out.structured_content is not None
        case_id = timed_out.structured_content["case_id"]
        assert timed_out.structured_content["status"] == "timeout"
        assert f"case_id: {case_id}" in timed_out.content[0].text  # type: ignore[union-attr]
        pending = await client.call_tool("get_human_answer", {"case_id": case_id})
        await platform.operator.answer(UUID(case_id), "Late but yes")
        late = await client.call_tool("get_human_answer", {"caseId": case_id})
    assert pending.structured_content is not None
    assert pending.structured_content["status"] == "pending"
    assert late.structured_content is not None
    assert (late.structured_content["status"], late.structured_content["answer"]) == (
        "answered",
        "Late but yes",
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("asks_progress", [False, True])
async def test_progress_is_timed_only_for_a_caller_that_asked_for_it(
    mode: str, asks_progress: bool
) -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    timers: list[int] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        return None

    async with (
        relay_app(platform, clock) as relay,
        connect(relay.mcp_url, KEYS[0], mode=mode) as client,
        anyio.create_task_group() as tg,
    ):
        await anyio.wait_all_tasks_blocked()
        idle = clock.sleepers  # the relay's own timers (sweeps, upkeep)

        async def operator() -> None:
            await platform.wait_until(lambda: platform.joined_channels == 1)
            await clock.wait_for_sleepers(idle + 1)
            await anyio.wait_all_tasks_blocked()  # the wait has started every timer it will
            timers.append(clock.sleepers - idle)
            await answer_when_waiting(platform, "Yes")

        tg.start_soon(operator)
        result = await client.call_tool(
            "ask_human",
            ask_args(call_id=f"timers-{mode}-{asks_progress}"),
            progress_callback=on_progress if asks_progress else None,
        )
    assert result.structured_content is not None
    assert result.structured_content["status"] == "answered"
    # The deadline's timer, and the progress loop's only when progress was asked for; plus the
    # relay's one catch-up timer, which runs while any call waits (one per relay, not per call).
    assert timers == [(2 if asks_progress else 1) + 1]


async def test_get_human_answer_with_a_malformed_id_is_a_tool_error(relay: Relay) -> None:
    async with connect(relay.mcp_url, KEYS[0]) as client:
        result = await client.call_tool("get_human_answer", {"case_id": "nope"})
    assert result.is_error is True
    assert "case_id: must be a case id (a UUID)" in result.content[0].text  # type: ignore[union-attr]


async def test_get_human_answer_on_an_unknown_case_is_a_tool_error_naming_case_id(
    relay: Relay,
) -> None:
    async with connect(relay.mcp_url, KEYS[0]) as client:
        result = await client.call_tool(
            "get_human_answer", {"case_id": "00000000-0000-4000-8000-00000000dead"}
        )
    assert result.is_error is True
    assert "case_id: no such case" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_client_hanging_up_mid_wait_cancels_the_wait_and_leaves_the_channel(
    relay: Relay, mode: str
) -> None:
    platform = relay.platform
    async with (
        connect(relay.mcp_url, KEYS[0], mode=mode) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.call_tool, "ask_human", ask_args(call_id=f"hangup-{mode}"))
        case_id = await platform.operator.wait_for_case()
        await platform.wait_until(lambda: platform.joined_channels == 1)
        tg.cancel_scope.cancel()
    await wait_hung_up(platform, case_id)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", "Bearer", f"Basic {KEYS[0]}", KEYS[0], f"Bearer {KEYS[0]}x"],
)
async def test_missing_or_wrong_bearer_is_refused_with_401(
    relay: Relay, authorization: str | None
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient() as http:
        response = await http.post(relay.mcp_url, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_every_configured_key_is_accepted(relay: Relay) -> None:
    for key in KEYS:
        async with connect(relay.mcp_url, key, mode="legacy") as client:
            assert {t.name for t in (await client.list_tools()).tools} == {
                "ask_human",
                "get_human_answer",
                "get_call_history",
            }


async def test_the_mcp_client_reports_a_refused_key_plainly(relay: Relay) -> None:
    from hitl_relay.mcp_client import RelayCallError, ask_human

    with pytest.raises(RelayCallError, match="401"):
        await ask_human(relay.mcp_url, "wrong", "Hello?")


async def test_health_readiness_and_metrics_endpoints(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        scraped = await http.get("/metrics")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()["ready"]) == (200, True)
    assert ready.json()["checks"]["breaker"]["state"] == "closed"
    assert scraped.status_code == 200
    assert 'hitl_invocations_total{outcome="answered"}' in scraped.text
    assert "hitl_breaker_state 0.0" in scraped.text


async def test_in_process_server_object_serves_the_newest_protocol_directly() -> None:
    """The same server object, no HTTP: what `mcp.Client(server)` does in SDK tests."""
    from hitl_relay.composition import build_relay
    from hitl_relay.mcp_server import RelayMcpServer

    platform = MemoryPlatform()
    relay = build_relay(platform.backend(), make_settings())
    server = RelayMcpServer(lambda: relay).server
    async with Client(server) as client, anyio.create_task_group() as tg:
        tg.start_soon(answer_when_waiting, platform, "Direct")
        result = await client.call_tool("ask_human", ask_args())
    assert result.structured_content is not None
    assert result.structured_content["answer"] == "Direct"


async def test_metrics_count_invalid_calls(relay: Relay) -> None:
    from hitl_relay import metrics

    before = metrics.REGISTRY.get_sample_value("hitl_invocations_total", {"outcome": "invalid"})
    async with httpx.AsyncClient(base_url=relay.url) as http:
        assert (await http.get("/healthz")).status_code == 200
    async with connect(relay.mcp_url, KEYS[0]) as client:
        await client.call_tool("ask_human", {"question": "no ids"})
    after = metrics.REGISTRY.get_sample_value("hitl_invocations_total", {"outcome": "invalid"})
    assert after == (before or 0) + 1


async def test_an_open_breaker_marks_the_tools_unavailable_and_tells_connected_clients() -> None:
    import mcp_types as types

    from hitl_relay.composition import build_relay
    from hitl_relay.mcp_server import RelayMcpServer

    platform = MemoryPlatform()
    relay = build_relay(platform.backend(), make_settings(breaker_failure_threshold=1))
    mcp = RelayMcpServer(lambda: relay)
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(mcp.watch_breaker)
        async with Client(mcp.server, mode="legacy", message_handler=on_message) as client:
            before = await client.list_tools()
            assert relay.breaker is not None
            relay.breaker.record_failure("rpc timed out")
            with anyio.fail_after(5):
                await changed.wait()
            after = await client.list_tools()
            result = await client.call_tool("ask_human", ask_args())
        tg.cancel_scope.cancel()
    assert not any("UNAVAILABLE" in (t.description or "") for t in before.tools)
    assert all((t.description or "").startswith("UNAVAILABLE RIGHT NOW") for t in after.tools)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "platform_unreachable"
    assert platform.rpc_calls == []


async def test_a_client_ready_to_call_sends_only_the_call_when_the_answer_comes(
    relay: Relay,
) -> None:
    """`hitl-relay ask` (and the bench) list the tools before the first call: otherwise the SDK
    lists them after the first result arrives, and the caller sees the answer a round trip and
    a validator import later."""
    from hitl_relay.mcp_client import ready_to_call

    statuses: list[int] = []
    async with (
        connect(relay.mcp_url, KEYS[0], statuses=statuses) as client,
        anyio.create_task_group() as tg,
    ):
        await ready_to_call(client)
        before = len(statuses)
        tg.start_soon(answer_when_waiting, relay.platform, "Yes.")
        result = await client.call_tool("ask_human", ask_args(call_id="call-ready"))
        during = statuses[before:]
    assert result.structured_content is not None
    assert result.structured_content["status"] == "answered"
    assert during == [200]  # the call alone: no listing after the result
