"""`hitl-relay` with and without the devstack installed: the local stack's commands come from
`hitl_devstack.cli` when it is there (a checkout), and are simply absent where only the product
is installed (the image), where `migrate` then needs its target named."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import pytest
from typer.testing import CliRunner


def fresh_cli(monkeypatch: pytest.MonkeyPatch, *, devstack: bool) -> ModuleType:
    """A newly imported `hitl_relay.cli`; monkeypatch puts the original modules back."""
    if not devstack:
        monkeypatch.setitem(sys.modules, "hitl_devstack", None)  # as if not installed
        monkeypatch.delitem(sys.modules, "hitl_devstack.cli", raising=False)
    importlib.import_module("hitl_relay.cli")  # so that there is an original to put back
    monkeypatch.delitem(sys.modules, "hitl_relay.cli")
    return importlib.import_module("hitl_relay.cli")


def command_names(cli: ModuleType) -> set[str]:
    app = cli.app
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    return commands | {g.name for g in app.registered_groups}


def test_a_checkout_has_the_local_stack_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = fresh_cli(monkeypatch, devstack=True)
    assert {"devstack", "dev", "db", "serve", "migrate"} <= command_names(cli)
    result = CliRunner().invoke(cli.app, ["db", "--help"])
    assert result.exit_code == 0, result.output
    assert "status" in result.output


def test_without_the_devstack_the_product_cli_has_no_local_stack_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli = fresh_cli(monkeypatch, devstack=False)
    names = command_names(cli)
    assert {"serve", "migrate", "doctor", "stdio", "ask", "answer"} <= names
    assert not names & {"devstack", "dev", "db"}
    assert "hitl_devstack.cli" not in sys.modules


def test_without_the_devstack_migrate_asks_for_its_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    cli = fresh_cli(monkeypatch, devstack=False)
    result = CliRunner().invoke(cli.app, ["migrate"])
    assert result.exit_code == 2
    assert "--database-url (or DATABASE_URL): required" in result.output
