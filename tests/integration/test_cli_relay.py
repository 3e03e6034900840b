"""`hitl-relay stdio`, `ask`, `keygen` and `serve`'s start-up checks, run as a user runs them."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from relay_support import make_settings
from typer.testing import CliRunner

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.cli import app
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend

HITL_RELAY = str(Path(sys.executable).parent / "hitl-relay")
KEY = "cli-test-key-0123456789"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any HITL_/SUPABASE_ settings of the machine, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    env.update(extra)
    return env


def runner_env(**extra: str) -> dict[str, str | None]:
    """For CliRunner, which overlays its env on the process's: unset the machine's settings."""
    env: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith(("HITL_", "SUPABASE_"))
    }
    env.update(extra)
    return env


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_transport_answers_ask_human(tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(
        command=HITL_RELAY,
        args=["stdio"],
        cwd=tmp_path,
        env=clean_env(
            HITL_BACKEND="memory",
            HITL_MEMORY_AUTO_ANSWER="Yes, from the demo operator",
            HITL_MEMORY_AUTO_ANSWER_DELAY_SECONDS="0",
        ),
    )
    with anyio.fail_after(60):
        async with Client(params, mode=mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool(
                "ask_human",
                {"question": "Saturday?", "session_id": "s", "call_id": "c", "agent_id": "a"},
            )
    assert {t.name for t in tools.tools} == {"ask_human", "get_human_answer", "get_call_history"}
    assert result.structured_content is not None
    assert result.structured_content["status"] == "answered"
    assert result.structured_content["answer"] == "Yes, from the demo operator"


@asynccontextmanager
async def relay_on(platform: MemoryPlatform) -> AsyncIterator[str]:
    settings: Settings = make_settings(api_keys=KEY)

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    async with running(create_app(settings, backend=backend)) as url:
        yield url + "/mcp"


async def test_ask_command_waits_for_the_operator_and_prints_the_answer(tmp_path: Path) -> None:
    platform = MemoryPlatform()
    async with relay_on(platform) as mcp_url, anyio.create_task_group() as tg:

        async def operator() -> None:
            case_id = await platform.operator.wait_for_case(within_s=30)
            await platform.wait_until(lambda: platform.joined_channels == 1, within_s=30)
            await platform.operator.answer(case_id, "Yes, Saturday is fine")

        tg.start_soon(operator)
        done = await anyio.run_process(
            [HITL_RELAY, "ask", "Can we deliver on Saturday?", "--timeout", "30"],
            env=clean_env(HITL_MCP_URL=mcp_url, HITL_API_KEY=KEY, HITL_HOME=str(tmp_path)),
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "Yes, Saturday is fine"
    (case_id,) = platform.cases
    assert f"status: answered  case: {case_id}" in done.stderr.decode()


async def test_ask_command_reads_relay_env_and_reports_a_wrong_key(tmp_path: Path) -> None:
    platform = MemoryPlatform()
    async with relay_on(platform) as mcp_url:
        (tmp_path / "relay.env").write_text(f"HITL_MCP_URL={mcp_url}\nHITL_API_KEY=wrong\n")
        done = await anyio.run_process(
            [HITL_RELAY, "ask", "Anyone there?"],
            env=clean_env(HITL_HOME=str(tmp_path)),
            check=False,
        )
    assert done.returncode == 1
    assert "the relay refused the API key (401)" in done.stderr.decode()
    assert platform.cases == {}


def test_ask_without_a_relay_to_call_says_what_to_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ask", "Hello?"], env=runner_env(HITL_HOME=str(tmp_path)))
    assert result.exit_code == 1
    assert "set HITL_MCP_URL and HITL_API_KEY" in result.output


def test_keygen_prints_a_fresh_key_and_its_env_line() -> None:
    first = CliRunner().invoke(app, ["keygen"])
    second = CliRunner().invoke(app, ["keygen"])
    assert first.exit_code == 0
    key, line = first.output.strip().splitlines()
    assert re.fullmatch(r"hitl_[A-Za-z0-9_-]{43}", key)
    assert line == f"HITL_API_KEYS={key}"
    assert second.output.splitlines()[0] != key


def test_serve_refuses_invalid_configuration_with_one_line_per_problem(tmp_path: Path) -> None:
    env = runner_env(HITL_PORT="eighty", HITL_DEFAULT_TIMEOUT_SECONDS="0", SUPABASE_URL="ftp://x")
    result = CliRunner().invoke(app, ["serve"], env=env)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("config: ")]
    assert len(lines) == 3
    assert "config: HITL_PORT: Input should be a valid integer" in result.output
    assert "config: SUPABASE_URL: must start with http:// or https://" in result.output


def test_serve_refuses_to_start_without_api_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve"], env=runner_env(HITL_BACKEND="memory"))
    assert result.exit_code == 2
    assert "HITL_API_KEYS: is required" in result.output
