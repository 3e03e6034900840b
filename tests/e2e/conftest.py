"""End to end: the devstack as its own process (REST + Realtime over its own Postgres cluster),
a relay on the Supabase adapter serving MCP over streamable HTTP, and operators through
supabase-py with operator JWTs. The devstack runs apart from the test's event loop, as Supabase
does in production, so 200 concurrent calls are not throttled by sharing one core's loop."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hitl_devstack.cluster import Cluster, free_port
from hitl_devstack.dev import Child, python, spawn, wait_http_ok
from hitl_devstack.envfile import read_env_file
from hitl_devstack.keys import make_keys
from hitl_devstack.operator_sim import SimulatedOperator

API_KEY = "e2e-key-" + uuid.uuid4().hex


@dataclass
class DevstackProcess:
    home: Path
    port: int
    pg_port: int
    child: Child | None = None

    @property
    def env(self) -> dict[str, str]:
        return read_env_file(self.home / "devstack.env")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {
            **os.environ,
            "HITL_HOME": str(self.home),
            "HITL_DEVSTACK_PORT": str(self.port),
            "HITL_PG_PORT": str(self.pg_port),
            "HITL_REALTIME_CHANNEL_ERROR_BACKOFF_S": "0.05",
            "HITL_REALTIME_CONNECT_ERROR_BACKOFF_S": "0.05",
        }
        self.child = await spawn(
            "devstack", [python(), "-m", "hitl_devstack"], env, self.home / "devstack.out"
        )
        await self.child.wait_for_line("devstack ready", timeout_s=60)

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()
            self.child = None

    async def kill(self) -> None:
        """Gone without a goodbye: every socket drops, every broadcast in flight is lost."""
        assert self.child is not None
        self.child.proc.kill()
        await self.child.proc.wait()
        self.child = None


@pytest.fixture(scope="module")
async def devstack_proc() -> AsyncIterator[DevstackProcess]:
    # Under HITL_HOME, not pytest's 0700 temp dir: the cluster runs as the postgres user.
    root = Path(os.environ.get("HITL_HOME", Path(__file__).resolve().parents[2] / ".hitl"))
    home = root / f"e2e-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    home.mkdir(parents=True)
    proc = DevstackProcess(home=home, port=free_port(), pg_port=free_port())
    try:
        await proc.start()
        yield proc
    finally:
        await proc.stop()
        Cluster(home / "pg", port=proc.pg_port).destroy()
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Stack:
    devstack: DevstackProcess
    relay_url: str

    @property
    def mcp_url(self) -> str:
        return self.relay_url + "/mcp"

    @property
    def db_url(self) -> str:
        return self.devstack.env["DATABASE_URL"]

    def operator(self, **kw: object) -> SimulatedOperator:
        env = self.devstack.env
        operator_id = str(uuid.uuid4())
        token = make_keys(env["SUPABASE_JWT_SECRET"]).user_token(operator_id, operator=True)
        return SimulatedOperator(
            env["SUPABASE_URL"],
            env["SUPABASE_ANON_KEY"],
            token,
            operator_id,
            **kw,  # type: ignore[arg-type]
        )


def relay_env(devstack: DevstackProcess, port: int, **overrides: str) -> dict[str, str]:
    env = devstack.env
    return {
        **os.environ,
        "HITL_BACKEND": "supabase",
        "SUPABASE_URL": env["SUPABASE_URL"],
        "SUPABASE_SERVICE_ROLE_KEY": env["SUPABASE_SERVICE_ROLE_KEY"],
        "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
        "HITL_API_KEYS": API_KEY,
        "HITL_HOST": "127.0.0.1",
        "HITL_PORT": str(port),
        "HITL_PROGRESS_INTERVAL_SECONDS": "1.0",
        "HITL_PRESENCE_CACHE_TTL_SECONDS": "0",
        "HITL_LOG_LEVEL": "WARNING",
        # These tests are about correctness under concurrency; a loaded CI machine must not turn
        # a slow RPC into a fallback (the platform-down test sets its own, short timeout).
        "HITL_PLATFORM_TIMEOUT_SECONDS": "30",
        # Relays on one host share the host name as instance id: each test relay gets its own,
        # so one starting never recovers (closes) the sessions another is still waiting on.
        "HITL_INSTANCE_ID": f"e2e-relay-{port}",
        **overrides,
    }


@asynccontextmanager
async def relay_child(devstack: DevstackProcess, **overrides: str) -> AsyncIterator[RelayChild]:
    """`hitl-relay serve` as its own process, as deployed; stopped on exit if still running."""
    port = free_port()
    child = await spawn(
        "relay",
        [python(), "-m", "hitl_relay.cli", "serve"],
        relay_env(devstack, port, **overrides),
        devstack.home / f"relay-{port}.out",
    )
    try:
        await child.wait_for_line("hitl-relay: MCP at", timeout_s=60)
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        yield RelayChild(child, f"http://127.0.0.1:{port}")
    finally:
        await child.stop()
        # Shown by pytest only when the test fails (captured output): what the relay logged.
        with contextlib.suppress(OSError):
            log = child.log_path.read_text(errors="replace").splitlines()
            print(f"---- last lines of the relay's log ({child.log_path.name}) ----")
            print("\n".join(log[-80:]))


@dataclass
class RelayChild:
    child: Child
    url: str


@asynccontextmanager
async def relay_process(devstack: DevstackProcess, **overrides: str) -> AsyncIterator[str]:
    """`hitl-relay serve` as its own process; yields its base URL."""
    async with relay_child(devstack, **overrides) as relay:
        yield relay.url


@pytest.fixture(scope="module")
async def relay_url(devstack_proc: DevstackProcess) -> AsyncIterator[str]:
    async with relay_process(devstack_proc) as url:
        yield url


@pytest.fixture
async def stack(devstack_proc: DevstackProcess, relay_url: str) -> Stack:
    if devstack_proc.child is None:  # a test killed it
        await devstack_proc.start()
    return Stack(devstack_proc, relay_url)
