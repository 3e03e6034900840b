"""`hitl-relay dev`: the local stack, the relay and the console, with one demo escalation.

Starts (or reuses) the devstack and a relay as child processes; once the relay answers
`/healthz` it writes `.hitl/relay.env` (`HITL_MCP_URL`, `HITL_API_KEY`) for local clients, and
removes it when the relay stops. It puts the local operator on duty (presence on `operators`,
tracked as the console tracks it, through the same supabase-py/realtime-py clients), runs one
escalation the way production runs it (an MCP client asks like a Retell agent; the operator
answers over Realtime and REST) after one warm-up call, and prints the measured delivery time.
Then it keeps serving until Ctrl-C or SIGTERM, the operator still on duty (it prints each case
that opens, with the `hitl-relay answer` line for it), or exits with `--once`.

`nobody_on_duty` starts it with nobody present, to show the `no_operator` path: the question is
recorded (case and session in the database) and the answer comes back at once.

Whatever it started it stops on exit, Ctrl-C or SIGTERM, at any point (start-up included): the
relay, the devstack and, through the devstack, Postgres, unless `keep_db` leaves Postgres
running for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from hitl_devstack.envfile import read_env_file, write_env_file

if TYPE_CHECKING:
    from hitl_devstack.operator_sim import SimulatedOperator

READY_TIMEOUT_S = 90.0


class DevError(RuntimeError):
    """Something the demo needs did not come up; the message says what and where the log is."""


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
        with contextlib.suppress(ProcessLookupError):
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
WARM_UP_QUESTION = "Warm-up: is the line to the operators open?"
WARM_UP_ANSWER = "Yes, the line is open."
THINK_S = 1.0


@dataclass
class DevStack:
    env: dict[str, str]
    mcp_url: str
    api_key: str
    reused_devstack: bool


async def devstack_alive(env: dict[str, str]) -> bool:
    """Whether the devstack `env` (devstack.env's values) names answers."""
    url, key = env.get("SUPABASE_URL"), env.get("SUPABASE_ANON_KEY")
    if not url or not key:
        return False
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/rest/v1/", headers={"apikey": key})).status_code < 500
    except httpx.HTTPError:
        return False


def relay_environment(
    base_env: Mapping[str, str], devstack_env: Mapping[str, str], api_key: str, port: int
) -> dict[str, str]:
    """The environment of a relay on 127.0.0.1:`port` over the devstack `devstack_env`."""
    return {
        **base_env,
        "HITL_BACKEND": "supabase",
        "SUPABASE_URL": devstack_env["SUPABASE_URL"],
        "SUPABASE_ANON_KEY": devstack_env["SUPABASE_ANON_KEY"],
        "SUPABASE_SERVICE_ROLE_KEY": devstack_env["SUPABASE_SERVICE_ROLE_KEY"],
        "HITL_API_KEYS": api_key,
        "HITL_HOST": "127.0.0.1",
        "HITL_PORT": str(port),
    }


def _relay_key(home: Path) -> str:
    """The local relay's API key: kept in .hitl/relay_api_key (mode 0600), made once, never in
    git (an older .hitl/relay.env's key is kept)."""
    import secrets

    path = home / "relay_api_key"
    if path.exists():
        return path.read_text().strip()
    key = read_env_file(home / "relay.env").get("HITL_API_KEY") or "hitl_" + secrets.token_urlsafe(
        32
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


class Children:
    """The processes this run started, stopped in reverse order however the run ends."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    async def spawn(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> Child:
        child = await spawn(name, argv, env, log)
        self.started.append(child)
        return child

    async def stop_all(self) -> None:
        for child in reversed(self.started):
            await child.stop()
        self.started.clear()


async def start_stack(
    home: Path, relay_port: int, children: Children, *, keep_db: bool = False
) -> DevStack:
    """Start (or reuse) the devstack, then start a relay on it; write .hitl/relay.env once the
    relay answers."""
    from hitl_devstack.cluster import _port_is_free, free_port

    base_env = {**os.environ, "HITL_HOME": str(home)}
    relay_env_path = home / "relay.env"
    api_key = _relay_key(home)
    relay_env_path.unlink(missing_ok=True)  # a stale one would name a relay that is not there
    env = read_env_file(home / "devstack.env")
    reused = await devstack_alive(env)
    if not reused:
        argv = [python(), "-m", "hitl_devstack"] + (["--keep-db"] if keep_db else [])
        devstack = await children.spawn("devstack", argv, base_env, home / "devstack.log")
        await devstack.wait_for_line("devstack ready")
        env = read_env_file(home / "devstack.env")
    if not _port_is_free(relay_port):
        relay_port = free_port()
    mcp_url = f"http://127.0.0.1:{relay_port}/mcp"
    relay_env = relay_environment(base_env, env, api_key, relay_port)
    relay = await children.spawn(
        "relay", [python(), "-m", "hitl_relay.cli", "serve"], relay_env, home / "relay.log"
    )
    await relay.wait_for_line("hitl-relay: MCP at")
    # Ready, not only alive: /readyz includes presence on `operators` joined, so the relay
    # already knows whether anyone is on duty when the first question comes in.
    await wait_http_ok(f"http://127.0.0.1:{relay_port}/readyz")
    # Only now: a client that waits for the file finds a relay listening.
    write_env_file(relay_env_path, {"HITL_MCP_URL": mcp_url, "HITL_API_KEY": api_key})
    return DevStack(env, mcp_url, api_key, reused)


def local_operator(env: dict[str, str]) -> SimulatedOperator:
    """The local operator (the devstack's operator@hitl.local), through the same clients and
    presence payload as the console (`{operator_id, status: 'available'}` under its user id)."""
    from hitl_devstack.operator_sim import SimulatedOperator

    return SimulatedOperator(
        env["SUPABASE_URL"],
        env["SUPABASE_ANON_KEY"],
        env["HITL_OPERATOR_TOKEN"],
        env["HITL_OPERATOR_ID"],
        think_time_s=(0.0, 0.0),
        answer_text=lambda case: (
            WARM_UP_ANSWER if case.get("question") == WARM_UP_QUESTION else DEMO_ANSWER
        ),
    )


async def _delivery_ms(env: dict[str, str], case_id: str, returned: datetime) -> float | None:
    """Answer committed (the message row's created_at) → result back at the MCP client."""
    import asyncpg

    conn = await asyncpg.connect(env["DATABASE_URL"])
    try:
        created = await conn.fetchval(
            "select m.created_at from cases c join messages m on m.id = c.answer_message_id"
            " where c.id = $1::uuid",
            case_id,
        )
    finally:
        await conn.close()
    return None if created is None else (returned - created).total_seconds() * 1000


async def _timed_ask(stack: DevStack, question: str) -> dict[str, object]:
    from hitl_relay.mcp_client import ask_human

    t0 = time.monotonic()
    result = await ask_human(stack.mcp_url, stack.api_key, question, timeout_seconds=30)
    returned = datetime.now(UTC)
    waited = time.monotonic() - t0
    delivery = None
    if result.get("status") == "answered":
        delivery = await _delivery_ms(stack.env, str(result.get("case_id")), returned)
    return {**result, "waited_s": waited, "delivery_ms": delivery}


async def demo(stack: DevStack, operator: SimulatedOperator) -> dict[str, object]:
    """One escalation end to end after a warm-up call: an agent asks over MCP, the operator
    (already on duty) answers over Realtime after thinking `THINK_S`.

    The first call of a freshly started relay pays one-time work (imports, connection pools,
    the clients' first decode), about 100 ms that no later call pays: it is the warm-up, and
    the second call's delivery is the one reported (docs/benchmarks.md has the distribution)."""
    operator.think_time_s = (0.0, 0.0)
    warm = await _timed_ask(stack, WARM_UP_QUESTION)
    operator.think_time_s = (THINK_S, THINK_S)
    outcome = await _timed_ask(stack, DEMO_QUESTION)
    return {**outcome, "warm_up_delivery_ms": warm.get("delivery_ms")}


async def demo_nobody_on_duty(stack: DevStack) -> dict[str, object]:
    """The `no_operator` path: with nobody present the question is recorded (case open in the
    queue, session `no_operator`) and the fallback comes back at once."""
    import asyncpg

    outcome = await _timed_ask(stack, DEMO_QUESTION)
    case_id = outcome.get("case_id")
    if isinstance(case_id, str):
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            row = await conn.fetchrow(
                "select c.status as case_status, s.status as session_status from cases c"
                " join hil_sessions s on s.case_id = c.id where c.id = $1::uuid",
                case_id,
            )
        finally:
            await conn.close()
        if row is not None:
            outcome |= {"case_status": row["case_status"], "session_status": row["session_status"]}
    return outcome


def _print_demo(outcome: dict[str, object]) -> None:
    print()
    print(f"  caller's agent asked:  {DEMO_QUESTION}")
    print(f"  operator answered:     {outcome.get('answer')}")
    print(f"  status: {outcome.get('status')}, case {outcome.get('case_id')}")
    delivery = outcome.get("delivery_ms")
    warm = outcome.get("warm_up_delivery_ms")
    if isinstance(delivery, float):
        print(
            f"  delivered {delivery:.1f} ms after the operator's message was committed"
            f" (whole wait {float(str(outcome.get('waited_s'))):.2f} s, operator thinking"
            f" {THINK_S:.0f} s)"
        )
        if isinstance(warm, float):
            print(
                f"  (the second call of this relay; its first call, a warm-up, took {warm:.1f} ms:"
                " one-time start-up work, see docs/benchmarks.md)"
            )
    print()


def _print_nobody_on_duty(outcome: dict[str, object]) -> None:
    print()
    print(f"  caller's agent asked:  {DEMO_QUESTION}")
    print("  nobody is on duty (no operator present on the operators channel)")
    print(
        f"  status: {outcome.get('status')} in {float(str(outcome.get('waited_s'))) * 1000:.0f} ms,"
        f" case {outcome.get('case_id')}"
    )
    # A cold first call (a new MCP client, the relay's one-time start-up work) takes several
    # times what later ones do: say so, beside the relay's own time for it.
    print(
        f"  (this relay's first call, from a new MCP client: one-time start-up work included;"
        f" the relay's own time {outcome.get('waited_ms')} ms; later calls: docs/benchmarks.md)"
    )
    print(f"  the caller hears:      {outcome.get('message')}")
    print(
        f"  recorded: case {outcome.get('case_status')} in the operators' queue, session"
        f" {outcome.get('session_status')}"
    )
    print()


def _print_howto(stack: DevStack, home: Path, *, on_duty: bool) -> None:
    base = stack.mcp_url.removesuffix("/mcp")
    token = stack.env.get("HITL_OPERATOR_TOKEN", "")
    print("hitl-relay is running locally:")
    print(f"  MCP endpoint     {stack.mcp_url}   (Authorization: Bearer {stack.api_key})")
    print(f"  operator console {base}/console/#token={token}")
    print(f"  Supabase (local) {stack.env.get('SUPABASE_URL')}   keys in {home / 'devstack.env'}")
    print(f"  health           {base}/readyz     metrics {base}/metrics")
    if on_duty:
        print(
            f"the local operator ({stack.env.get('HITL_OPERATOR_EMAIL', 'operator')}) is on duty:"
            " present on the operators channel, as the console would be"
        )
    else:
        print(
            "nobody is on duty: ask_human records each question and answers no_operator at once"
            " (open the console to come on duty)"
        )
    print('ask as the agent:    .venv/bin/hitl-relay ask "Can I offer a discount?" --timeout 60')
    print('answer as operator:  .venv/bin/hitl-relay answer <case_id> "Yes, 10 percent."')
    print("  (each case that opens is printed here with its answer command)")
    print("Ctrl-C stops everything.", flush=True)


async def _announce_cases(operator: SimulatedOperator, seen: set[str]) -> None:
    """Print each case that opens, so the README's `answer <case_id>` has its id."""
    while True:
        try:
            case = await operator.next_case(timeout_s=3600)
        except TimeoutError:
            continue
        case_id = str(case.get("case_id"))
        if case_id in seen:
            continue
        seen.add(case_id)
        print(
            f"case {case_id} opened: {case.get('question')!r}\n"
            f'  answer it with: .venv/bin/hitl-relay answer {case_id} "<your answer>"',
            flush=True,
        )


async def run_dev(
    *,
    once: bool,
    home: Path,
    relay_port: int = 8080,
    nobody_on_duty: bool = False,
    keep_db: bool = False,
) -> int:
    """The whole `hitl-relay dev`; SIGINT and SIGTERM stop it at any point (start-up included)
    and everything it started is stopped before it returns."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    signalled: list[int] = []
    cleaning_up = False

    def on_signal(sig: int) -> None:
        # Once: a second Ctrl-C, or one during the clean-up, must not interrupt the clean-up.
        if not signalled and not cleaning_up:
            signalled.append(sig)
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    children = Children()
    try:
        return await _run(once, home, relay_port, nobody_on_duty, keep_db, children)
    except asyncio.CancelledError:
        if not signalled:
            raise
        serving = bool(children.started) and (home / "relay.env").exists()
        print(f"\n{signal.Signals(signalled[0]).name}: stopping everything", flush=True)
        return 0 if serving else 130
    except DevError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        cleaning_up = True
        (home / "relay.env").unlink(missing_ok=True)  # the relay is stopping
        await children.stop_all()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print("stopped: relay and devstack" + ("" if keep_db else " and Postgres"), flush=True)


async def _run(
    once: bool,
    home: Path,
    relay_port: int,
    nobody_on_duty: bool,
    keep_db: bool,
    children: Children,
) -> int:
    stack = await start_stack(home, relay_port, children, keep_db=keep_db)
    print(
        f"devstack {'reused' if stack.reused_devstack else 'started'}:"
        f" {stack.env.get('SUPABASE_URL')}; relay: {stack.mcp_url}",
        flush=True,
    )
    if nobody_on_duty:
        outcome = await demo_nobody_on_duty(stack)
        _print_nobody_on_duty(outcome)
        if outcome.get("status") != "no_operator" or outcome.get("session_status") != "no_operator":
            print(
                f"error: the question was not recorded as no_operator: {outcome}", file=sys.stderr
            )
            return 1
        if once:
            return 0
        _print_howto(stack, home, on_duty=False)
        await asyncio.Event().wait()  # until a signal cancels this task
        return 0
    operator = local_operator(stack.env)
    await operator.start()
    try:
        outcome = await demo(stack, operator)
        _print_demo(outcome)
        if outcome.get("status") != "answered":
            print(f"error: the demo escalation was not answered: {outcome}", file=sys.stderr)
            return 1
        if once:
            return 0
        operator.auto_answer = False  # from now on the person at the terminal answers
        seen = set(operator.opened)
        _print_howto(stack, home, on_duty=True)
        await _announce_cases(operator, seen)
        return 0
    finally:
        await operator.stop()
