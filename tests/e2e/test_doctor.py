"""`hitl-relay doctor` as an operator runs it (its own process, configured by the environment):
all ok against a healthy devstack; each broken piece is one FAIL line naming the problem and
what to do, exit 1, and never a stack trace."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from hitl_devstack.cluster import free_port
from hitl_devstack.keys import make_keys
from hitl_devstack.server import Devstack
from hitl_relay.readiness import EXPECTED_SCHEMA_VERSION
from hitl_relay.security import generate_key


@dataclass
class Outcome:
    code: int
    lines: list[str]
    stderr: str

    def line(self, what: str) -> str:
        return next(line for line in self.lines if line[5:].startswith(what))


async def doctor(tmp_path: Path, **env: str) -> Outcome:
    """Run the command in an empty directory (no .env) with only these settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hitl_relay.cli", "doctor",
        env={**base, "HITL_API_KEYS": generate_key(), **env}, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    outcome = Outcome(proc.returncode, out.decode().splitlines(), err.decode())
    print("\n".join(outcome.lines))
    assert "Traceback" not in outcome.stderr + "\n".join(outcome.lines)
    return outcome


def platform_env(devstack: Devstack) -> dict[str, str]:
    return {
        "SUPABASE_URL": devstack.url,
        "SUPABASE_SERVICE_ROLE_KEY": devstack.keys.service_role_key,
    }


async def test_a_healthy_devstack_passes_every_check(devstack: Devstack, tmp_path: Path) -> None:
    outcome = await doctor(tmp_path, **platform_env(devstack))
    assert outcome.code == 0
    checked = [line[5:].split(" — ")[0] for line in outcome.lines]
    assert checked == [
        "configuration",
        "API keys",
        "Supabase URL",
        "service key",
        "migrations",
        "realtime join",
        "presence",
    ]
    assert all(line.startswith("ok ") for line in outcome.lines)
    assert EXPECTED_SCHEMA_VERSION in outcome.line("migrations")


async def test_a_wrong_service_key_is_named(devstack: Devstack, tmp_path: Path) -> None:
    forged = make_keys(secrets.token_urlsafe(32)).service_role_key  # signed with another secret
    env = {**platform_env(devstack), "SUPABASE_SERVICE_ROLE_KEY": forged}
    outcome = await doctor(tmp_path, **env)
    assert outcome.code == 1
    line = outcome.line("service key")
    assert line.startswith("FAIL")
    assert "refused SUPABASE_SERVICE_ROLE_KEY" in line
    assert "service_role key" in line


async def test_the_anon_key_in_place_of_the_service_key_is_named(
    devstack: Devstack, tmp_path: Path
) -> None:
    env = {**platform_env(devstack), "SUPABASE_SERVICE_ROLE_KEY": devstack.keys.anon_key}
    outcome = await doctor(tmp_path, **env)
    assert outcome.code == 1
    assert "not the publishable or anon key" in outcome.line("service key")
    assert (
        outcome.line("migrations")
        == "FAIL migrations — not checked: the key is not the service role's"
    )


async def test_a_secret_key_as_supabase_secret_key_passes_every_check(
    devstack: Devstack, tmp_path: Path
) -> None:
    # A project with legacy JWT keys turned off has only sb_secret_ keys: supabase-py sends the
    # key as apikey and bearer, the gateway maps it to the service_role JWT (gateway.py).
    outcome = await doctor(
        tmp_path, SUPABASE_URL=devstack.url, SUPABASE_SECRET_KEY=devstack.keys.secret_key
    )
    assert outcome.code == 0
    assert all(line.startswith("ok ") for line in outcome.lines)
    assert outcome.line("service key").startswith("ok   service key — accepted")


async def test_an_unknown_secret_key_is_named(devstack: Devstack, tmp_path: Path) -> None:
    # hosted's gateway: 401 {"message":"Invalid API key",...} before PostgREST
    other = make_keys(secrets.token_urlsafe(32)).secret_key
    env = {**platform_env(devstack), "SUPABASE_SERVICE_ROLE_KEY": other}
    outcome = await doctor(tmp_path, **env)
    assert outcome.code == 1
    line = outcome.line("service key")
    assert line.startswith("FAIL")
    assert "refused SUPABASE_SERVICE_ROLE_KEY" in line
    assert "secret keys (sb_secret_…)" in line


async def test_a_publishable_key_in_place_of_the_secret_key_is_a_configuration_problem(
    devstack: Devstack, tmp_path: Path
) -> None:
    env = {**platform_env(devstack), "SUPABASE_SERVICE_ROLE_KEY": devstack.keys.publishable_key}
    outcome = await doctor(tmp_path, **env)
    assert outcome.code == 1
    text = "\n".join(outcome.lines)
    assert "SUPABASE_SERVICE_ROLE_KEY: is a publishable key (sb_publishable_…)" in text


async def test_an_unreachable_url_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    outcome = await doctor(
        tmp_path, SUPABASE_URL=url, SUPABASE_SERVICE_ROLE_KEY=make_keys("s" * 32).service_role_key
    )
    assert outcome.code == 1
    line = outcome.line("Supabase URL")
    assert line.startswith("FAIL")
    assert f"cannot reach {url}" in line
    assert "check SUPABASE_URL" in line


async def test_a_database_missing_the_newest_migration_is_named(
    devstack: Devstack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # As the schema was before the newest migration: the function names an older version.
    await db.execute(
        "create or replace function public.hitl_schema_version() returns text language sql"
        " as $$ select '20261125002200'::text $$"
    )
    outcome = await doctor(tmp_path, **platform_env(devstack))
    assert outcome.code == 1
    line = outcome.line("migrations")
    assert line.startswith("FAIL")
    assert f"the database is at 20261125002200, this relay needs {EXPECTED_SCHEMA_VERSION}" in line
    assert "apply the newer migrations" in line
    assert outcome.line("service key").startswith("ok")


async def test_bad_configuration_lists_every_problem_and_checks_nothing_else(
    tmp_path: Path,
) -> None:
    outcome = await doctor(tmp_path, HITL_PORT="not-a-port", HITL_API_KEYS="short")
    assert outcome.code == 1
    assert all(line.startswith("FAIL configuration") for line in outcome.lines)
    text = "\n".join(outcome.lines)
    assert "HITL_PORT: Input should be a valid integer" in text
    assert "fix it in the environment or .env" in text


async def test_doctor_reads_the_local_stacks_settings_like_stats_and_answer(
    devstack: Devstack, tmp_path: Path
) -> None:
    """Nothing in the environment or .env: the local stack's files (what `scripts/dev`
    writes) are read, and every check passes."""
    home = tmp_path / ".hitl"
    home.mkdir()
    (home / "devstack.env").write_text(
        f"SUPABASE_URL={devstack.url}\n"
        f"SUPABASE_ANON_KEY={devstack.keys.anon_key}\n"
        f"SUPABASE_SERVICE_ROLE_KEY={devstack.keys.service_role_key}\n"
    )
    (home / "relay.env").write_text(
        f"HITL_MCP_URL=http://127.0.0.1:1/mcp\nHITL_API_KEY={generate_key()}\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hitl_relay.cli", "doctor",
        env=base, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = out.decode().splitlines()
    print("\n".join(lines))
    assert proc.returncode == 0, err.decode()
    assert lines[0].startswith("reading the local stack's settings (")
    assert all(line.startswith("ok ") for line in lines[1:])
    assert len(lines) == 8
