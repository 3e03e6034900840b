"""`hitl-relay dev`: the local stack, the relay and the console, with one demo escalation.

Starts (or reuses) the devstack and a relay as child processes, writes `.hitl/relay.env`
(`HITL_MCP_URL`, `HITL_API_KEY`) for local clients, runs one escalation the way production
runs it (an MCP client asks like a Retell agent; a simulated operator answers over Realtime and
REST) and prints the measured delivery time. Then it keeps serving until Ctrl-C, or exits
with `--once`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

READY_TIMEOUT_S = 90.0


class DevError(RuntimeError):
    """Something the demo needs did not come up; the message says what and where the log is."""


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in values.items())


@dataclass
class Child:
    """A child process whose output goes to a log file; `ready` when a marker line appears."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path

    async def wait_for_line(self, marker: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        assert self.proc.stdout is not None
        with self.log_path.open("a") as log:
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        raw = await self.proc.stdout.readline()
                        if not raw:
                            raise DevError(
                                f"{self.name} exited (code {await self.proc.wait()}) before it "
                                f"was ready; see {self.log_path}"
                            )
                        line = raw.decode(errors="replace")
                        log.write(line)
                        log.flush()
                        if marker in line:
                            break
            except TimeoutError:
                raise DevError(
                    f"{self.name} was not ready after {timeout_s:.0f} s; see {self.log_path}"
                ) from None
        asyncio.get_running_loop().create_task(self._drain())
        return line

    async def _drain(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("a") as log:
            async for raw in self.proc.stdout:
                log.write(raw.decode(errors="replace"))
                log.flush()

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
    )
    return Child(name=name, proc=proc, log_path=log_path)


async def wait_http_ok(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll a readiness URL; a start-up probe, not test synchronisation."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise DevError(f"{url} did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


def python() -> str:
    return sys.executable


DEMO_QUESTION = "The caller wants a refund of 42 euros for a damaged parcel. May I approve it?"
DEMO_ANSWER = "Yes, approve the refund; it is under the 50 euro limit."


@dataclass
class DevStack:
    env: dict[str, str]
    mcp_url: str
    api_key: str
    relay: Child
    devstack: Child | None
    reused_devstack: bool


async def _devstack_alive(env: dict[str, str]) -> bool:
    url, key = env.get("SUPABASE_URL"), env.get("SUPABASE_ANON_KEY")
    if not url or not key:
        return False
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/rest/v1/", headers={"apikey": key})).status_code < 500
    except httpx.HTTPError:
        return False


def _relay_key(home: Path) -> str:
    """The local relay's API key: kept in .hitl/relay.env, made once (never in git)."""
    import secrets

    existing = read_env_file(home / "relay.env").get("HITL_API_KEY")
    return existing or "hitl_" + secrets.token_urlsafe(32)


async def start_stack(home: Path, relay_port: int) -> DevStack:
    """Start (or reuse) the devstack, then start a relay on it; write .hitl/relay.env."""
    from hitl_relay.devstack.cluster import _port_is_free, free_port

    base_env = {**os.environ, "HITL_HOME": str(home)}
    env = read_env_file(home / "devstack.env")
    devstack: Child | None = None
    reused = await _devstack_alive(env)
    if not reused:
        devstack = await spawn(
            "devstack", [python(), "-m", "hitl_relay.devstack"], base_env, home / "devstack.log"
        )
        await devstack.wait_for_line("devstack ready")
        env = read_env_file(home / "devstack.env")
    if not _port_is_free(relay_port):
        relay_port = free_port()
    api_key = _relay_key(home)
    mcp_url = f"http://127.0.0.1:{relay_port}/mcp"
    write_env_file(home / "relay.env", {"HITL_MCP_URL": mcp_url, "HITL_API_KEY": api_key})
    relay_env = {
        **base_env,
        "HITL_BACKEND": "supabase",
        "SUPABASE_URL": env["SUPABASE_URL"],
        "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
        "SUPABASE_SERVICE_ROLE_KEY": env["SUPABASE_SERVICE_ROLE_KEY"],
        "HITL_API_KEYS": api_key,
        "HITL_HOST": "127.0.0.1",
        "HITL_PORT": str(relay_port),
    }
    relay = await spawn(
        "relay", [python(), "-m", "hitl_relay.cli", "serve"], relay_env, home / "relay.log"
    )
    try:
        await relay.wait_for_line("hitl-relay: MCP at")
        await wait_http_ok(f"http://127.0.0.1:{relay_port}/healthz")
    except DevError:
        if devstack is not None:
            await devstack.stop()
        raise
    return DevStack(env, mcp_url, api_key, relay, devstack, reused)


async def demo(stack: DevStack) -> dict[str, object]:
    """One escalation end to end: an agent asks over MCP, an operator answers over Realtime."""
    import asyncpg

    from hitl_relay.devstack.operator_sim import SimulatedOperator
    from hitl_relay.mcp_client import ask_human

    env = stack.env
    operator = SimulatedOperator(
        env["SUPABASE_URL"],
        env["SUPABASE_ANON_KEY"],
        env["HITL_OPERATOR_TOKEN"],
        env["HITL_OPERATOR_ID"],
        think_time_s=(1.0, 1.0),
        answer_text=lambda _: DEMO_ANSWER,
    )
    await operator.start()
    try:
        t0 = time.monotonic()
        result = await ask_human(stack.mcp_url, stack.api_key, DEMO_QUESTION, timeout_seconds=30)
        returned = datetime.now(UTC)
        waited = time.monotonic() - t0
    finally:
        await operator.stop()
    delivery_ms: float | None = None
    case_id = str(result.get("case_id"))
    conn = await asyncpg.connect(env["DATABASE_URL"])
    try:
        created = await conn.fetchval(
            "select m.created_at from cases c join messages m on m.id = c.answer_message_id"
            " where c.id = $1::uuid",
            case_id,
        )
    finally:
        await conn.close()
    if created is not None:
        delivery_ms = (returned - created).total_seconds() * 1000
    return {**result, "waited_s": waited, "delivery_ms": delivery_ms}


def _print_demo(outcome: dict[str, object]) -> None:
    print()
    print(f"  caller's agent asked:  {DEMO_QUESTION}")
    print(f"  operator answered:     {outcome.get('answer')}")
    print(f"  status: {outcome.get('status')}, case {outcome.get('case_id')}")
    delivery = outcome.get("delivery_ms")
    if isinstance(delivery, float):
        print(
            f"  delivered {delivery:.1f} ms after the operator's message was committed"
            f" (whole wait {float(str(outcome.get('waited_s'))):.2f} s, operator thinking 1 s)"
        )
    print()


def _print_howto(stack: DevStack, home: Path) -> None:
    base = stack.mcp_url.removesuffix("/mcp")
    token = stack.env.get("HITL_OPERATOR_TOKEN", "")
    print("hitl-relay is running locally:")
    print(f"  MCP endpoint     {stack.mcp_url}   (Authorization: Bearer {stack.api_key})")
    print(f"  operator console {base}/console/#token={token}")
    print(f"  Supabase (local) {stack.env.get('SUPABASE_URL')}   keys in {home / 'devstack.env'}")
    print(f"  health           {base}/readyz     metrics {base}/metrics")
    print('ask as the agent:    .venv/bin/hitl-relay ask "Can I offer a discount?" --timeout 60')
    print('answer as operator:  .venv/bin/hitl-relay answer <case_id> "Yes, 10 percent."')
    print("Ctrl-C stops everything.")


async def run_dev(*, once: bool, home: Path, relay_port: int = 8080) -> int:
    try:
        stack = await start_stack(home, relay_port)
    except DevError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        print(
            f"devstack {'reused' if stack.reused_devstack else 'started'}:"
            f" {stack.env.get('SUPABASE_URL')}; relay: {stack.mcp_url}"
        )
        outcome = await demo(stack)
        _print_demo(outcome)
        if outcome.get("status") != "answered":
            print(f"error: the demo escalation was not answered: {outcome}", file=sys.stderr)
            return 1
        if once:
            return 0
        _print_howto(stack, home)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await stack.relay.stop()
        if stack.devstack is not None:
            await stack.devstack.stop()
