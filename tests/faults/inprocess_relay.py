"""A relay served in the test's own process (`create_app` + `running`) on the Supabase adapter,
pointed at a devstack, and an agent's `ask_human` call to it: for fault tests that need to read
or steer the relay closely (its breaker, /readyz) rather than run it as a deployed process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from hitl_devstack.server import Devstack
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.mcp_client import connect
from hitl_relay.security import generate_key

API_KEY = generate_key()


@asynccontextmanager
async def relay_on(devstack: Devstack, **overrides: Any) -> AsyncIterator[str]:
    """The relay's base URL; every call waits for an operator (no presence shortcut)."""
    values: dict[str, Any] = {
        "backend": "supabase",
        "supabase_url": devstack.url,
        "supabase_service_role_key": devstack.keys.service_role_key,
        "api_keys": API_KEY,
        "no_operator_answers_at_once": False,
        "progress_interval_seconds": 5,
        **overrides,
    }
    async with running(create_app(Settings(_env_file=None, **values))) as url:
        yield url


async def ask(relay_url: str, call_id: str, timeout_s: int = 10) -> tuple[dict[str, Any], float]:
    """One `ask_human` tool call as an agent with an open MCP session makes it; its result and
    the tool call's round trip in seconds (the session's own set-up not counted)."""
    arguments = {
        "question": f"Question of {call_id}?", "session_id": call_id, "call_id": call_id,
        "agent_id": "fault-test", "timeout_seconds": timeout_s,
    }  # fmt: skip
    async with connect(relay_url + "/mcp", API_KEY) as client:
        started = time.perf_counter()
        result = await client.call_tool("ask_human", arguments)
        elapsed = time.perf_counter() - started
    assert isinstance(result.structured_content, dict), result
    return result.structured_content, elapsed


async def readyz(relay_url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=relay_url) as http:
        response = await http.get("/readyz")
    return response.status_code, response.json()
