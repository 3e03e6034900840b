"""docs/retell-integration.md cannot drift from the code: its tools (with their required
arguments), its statuses and its `ask_human` arguments are the server's own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.config import Settings
from hitl_relay.mcp_server import RelayMcpServer
from hitl_relay.models import Status
from hitl_relay.relay import Relay

DOC = Path(__file__).resolve().parents[2] / "docs" / "retell-integration.md"


def block(name: str) -> list[list[str]]:
    """The rows of the table between `<!-- name: ... -->` and `<!-- /name -->` (header and
    separator left out), each a list of cells."""
    text = DOC.read_text()
    found = re.search(rf"<!-- {name}:.*?-->\n(.*?)<!-- /{name} -->", text, re.S)
    assert found, f"docs/retell-integration.md has no <!-- {name}: --> block"
    rows = [line for line in found.group(1).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def names(cell: str) -> list[str]:
    return re.findall(r"`([a-z_]+)`", cell)


def tools() -> dict[str, Any]:
    relay = Relay(
        MemoryPlatform().backend(), Settings(backend="memory", insecure_local=True).relay_options()
    )
    return {tool.name: tool for tool in RelayMcpServer(lambda: relay).tools()}


def test_the_tools_and_their_required_arguments_are_the_servers() -> None:
    listed = {names(row[0])[0]: set(names(row[1])) for row in block("tools")}
    assert listed == {
        name: set(tool.input_schema.get("required", [])) for name, tool in tools().items()
    }


def test_the_statuses_are_the_results() -> None:
    documented = [names(row[0])[0] for row in block("statuses")]
    assert sorted(documented) == sorted(get_args(Status))  # each once


def test_the_ask_human_arguments_are_its_input_schema() -> None:
    documented = {name for row in block("arguments") for name in names(row[0])}
    assert documented == set(tools()["ask_human"].input_schema["properties"])
