"""`python -m hitl_devstack` as a newcomer runs it: from a bare HITL_HOME to a ready line.

The process gets its own HITL_HOME (a fresh cluster on a free port, destroyed afterwards) and
a free API port, so it never touches 54321/54322 or the test cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hitl_devstack.cluster import Cluster, free_port

READY_TIMEOUT_S = 60.0
ENV_KEYS = {
    "SUPABASE_URL",
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SECRET_KEY",
    "SUPABASE_JWT_SECRET",
    "DATABASE_URL",
    "HITL_OPERATOR_TOKEN",
    "HITL_OPERATOR_ID",
    "HITL_OPERATOR_EMAIL",
    "HITL_OPERATOR_PASSWORD",
}


def read_env(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path
    await asyncio.to_thread(Cluster(tmp_path / "pg", port=None).destroy)


async def start(home: Path, port: int, db_port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hitl_devstack",
        "--port",
        str(port),
        "--db-port",
        str(db_port),
        env={**os.environ, "HITL_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_starts_from_bare_serves_and_stops_on_sigterm(home: Path) -> None:
    port = free_port()
    proc = await start(home, port, free_port())
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        env_file = home / "devstack.env"
        env = read_env(env_file)
        async with httpx.AsyncClient(base_url=env["SUPABASE_URL"]) as http:
            # as supabase-js sends them: the project key as apikey, the session as bearer
            cases = await http.get(
                "/rest/v1/cases?select=id",
                headers={
                    "apikey": env["SUPABASE_PUBLISHABLE_KEY"],
                    "Authorization": f"Bearer {env['HITL_OPERATOR_TOKEN']}",
                },
            )
            signed_in = await http.post(
                "/auth/v1/token?grant_type=password",
                headers={"apikey": env["SUPABASE_ANON_KEY"]},
                json={
                    "email": env["HITL_OPERATOR_EMAIL"],
                    "password": env["HITL_OPERATOR_PASSWORD"],
                },
            )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), READY_TIMEOUT_S)

    assert ready.decode().startswith(f"devstack ready at http://127.0.0.1:{port} ")
    assert set(env) == ENV_KEYS
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert cases.status_code == 200
    assert cases.json() == []
    assert signed_in.json()["user"]["id"] == env["HITL_OPERATOR_ID"]
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "devstack stopped"


async def test_a_taken_port_is_a_clear_error(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await start(home, port, free_port())
        _, err = await asyncio.wait_for(proc.communicate(), READY_TIMEOUT_S)

    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in err.decode()
    assert "Traceback" not in err.decode()
    assert not (home / "pg").exists()
