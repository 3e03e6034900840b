"""Calling a running relay over MCP the way a voice agent does (`hitl-relay ask`, scripts, tests).

Streamable HTTP with a bearer key, through the `mcp` SDK's own client, so what works here works
for Retell's client too.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from dotenv import dotenv_values
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from hitl_relay.errors import HitlError


class RelayCallError(HitlError):
    """The relay could not be reached or refused the call; the message says why, plainly."""


def client_env(home: Path | None = None) -> tuple[str | None, str | None]:
    """`HITL_MCP_URL` and `HITL_API_KEY` from the environment, else from `.hitl/relay.env`."""
    url = os.environ.get("HITL_MCP_URL")
    key = os.environ.get("HITL_API_KEY")
    env_file = (home or Path(os.environ.get("HITL_HOME", ".hitl"))) / "relay.env"
    if (not url or not key) and env_file.exists():
        values = dotenv_values(env_file)
        url = url or values.get("HITL_MCP_URL")
        key = key or values.get("HITL_API_KEY")
    return url, key


@asynccontextmanager
async def connect(
    url: str, api_key: str, *, mode: str = "auto", statuses: list[int] | None = None
) -> AsyncIterator[Client]:
    """An MCP client session on `url` with `Authorization: Bearer <api_key>`.

    `mode="legacy"` speaks the handshake-era protocol (initialize), the default negotiates the
    newest the server offers. HTTP status codes of the responses are appended to `statuses`
    (the SDK reports a 401 only as "Server returned an error response").
    """
    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = httpx2.Timeout(30.0, read=660.0)  # a wait may last up to 600 s

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=timeout, event_hooks={"response": [record]}
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def ready_to_call(client: Client) -> None:
    """What an agent does once connected, before its first call: list the tools (the SDK checks
    each result against its tool's output schema and would otherwise list them after the first
    result) and load the schema validator the SDK imports on first use. Both would otherwise
    land between the first answer's arrival and the caller seeing it (about 60 ms, measured)."""
    await client.list_tools()
    importlib.import_module("jsonschema.validators")
    importlib.import_module("referencing")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def ask_human(
    url: str,
    api_key: str,
    question: str,
    *,
    timeout_seconds: int | None = None,
    call_id: str | None = None,
    progress: ProgressFnT | None = None,
    mode: str = "auto",
    case_id: str | None = None,
) -> dict[str, Any]:
    """Call `ask_human` once; return its structured result {status, answer, case_id, ...}.

    With `case_id` it is a follow-up after `needs_info` (`question` is the caller's reply); the
    platform accepts it only from the call that asked (`call_id`)."""
    call = call_id or f"cli-{uuid.uuid4().hex[:12]}"
    arguments: dict[str, Any] = {
        "question": question,
        "session_id": call,
        "call_id": call,
        "agent_id": "hitl-relay-cli",
    }
    if timeout_seconds is not None:
        arguments["timeout_seconds"] = timeout_seconds
    if case_id is not None:
        arguments["case_id"] = case_id
    statuses: list[int] = []
    try:
        async with connect(url, api_key, mode=mode, statuses=statuses) as client:
            await ready_to_call(client)
            result = await client.call_tool("ask_human", arguments, progress_callback=progress)
    except (MCPError, httpx2.HTTPError, OSError, ExceptionGroup) as e:
        if 401 in statuses:
            raise RelayCallError("the relay refused the API key (401)") from None
        refused = [code for code in statuses if code >= 400]
        if refused:
            raise RelayCallError(f"the relay answered HTTP {refused[-1]}") from None
        reasons = "; ".join(str(leaf) for leaf in _leaves(e))
        raise RelayCallError(f"cannot complete the call to {url}: {reasons}") from None
    text = " ".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        raise RelayCallError(text or "the relay returned an error")
    structured = result.structured_content
    if not isinstance(structured, dict):
        raise RelayCallError(f"unexpected result from the relay: {text}")
    return structured
