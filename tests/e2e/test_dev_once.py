"""The README's first commands from a clean copy of the repository: `scripts/dev --once`, then
`scripts/dev` with the README's `ask` / `answer` pair copied literally, and with nobody on duty
(the README's `ask`, then its `psql` line showing the question recorded);
each leaves no process of the project behind (Postgres included) after it exits, Ctrl-C or
SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from waiting import wait_until

from hitl_devstack.cluster import Cluster, free_port
from hitl_devstack.envfile import read_env_file

ROOT = Path(__file__).resolve().parents[2]


def clean_copy(dest: Path) -> None:
    """Tracked files only (what a fresh clone has), as they are in the working tree."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.exists():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    # The installs scripts/setup would make (venv, node packages, the tools it keeps in
    # .hitl/tools: uv, checkov) are reused, not redone; its checks of them still run.
    (dest / ".venv").symlink_to(ROOT / ".venv")
    for nm in ("tests/conformance/js/node_modules", ".hitl/tools"):
        if (ROOT / nm).exists():
            (dest / nm).parent.mkdir(parents=True, exist_ok=True)
            (dest / nm).symlink_to(ROOT / nm)


def project_processes(dest: Path) -> list[str]:
    """Every process (but this one) that runs in, or names, the copy: its pid and command."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if cwd == str(dest) or cwd.startswith(f"{dest}/") or str(dest) in cmd:
            found.append(f"{proc.name}: {cmd.strip()} (in {cwd})")
    return found


def postmaster_pid(dest: Path) -> int:
    return int((dest / ".hitl" / "pg" / "postmaster.pid").read_text().split()[0])


def pid_running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited postmaster waits for init to reap it)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def stopped(pid: int) -> None:
    """`pg_ctl stop -w` returns once the pid file is gone; the process exits right after."""

    async def gone() -> bool:
        return not pid_running(pid)

    await wait_until(gone, f"postgres {pid} to exit")


@asynccontextmanager
async def clean_copy_dir() -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """A clean copy under HITL_HOME (postgres must reach it) and an environment with free
    ports and none of this run's HITL_/SUPABASE_ settings."""
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    dest = base / f"clean-copy-{uuid.uuid4().hex[:8]}"
    dest.mkdir(parents=True)
    pg_port = free_port()
    try:
        clean_copy(dest)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
        env |= {"HITL_PG_PORT": str(pg_port), "HITL_DEVSTACK_PORT": str(free_port())}
        yield dest, env
    finally:
        Cluster(dest / ".hitl" / "pg", port=pg_port).destroy()
        shutil.rmtree(dest, ignore_errors=True)


class Console:
    """A `scripts/dev` process and the lines it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for(self, pattern: str, timeout_s: float = 240) -> re.Match[str]:
        """Read lines until one matches `pattern` (a regex)."""
        assert self.proc.stdout is not None
        for line in self.lines:
            if found := re.search(pattern, line):
                return found
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"scripts/dev exited before printing {pattern!r}:\n" + self.text()
                    )
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                if found := re.search(pattern, line):
                    return found

    async def exit_code(self, timeout_s: float = 60) -> int:
        assert self.proc.stdout is not None
        rest, _ = await asyncio.wait_for(self.proc.communicate(), timeout_s)
        self.lines += rest.decode(errors="replace").splitlines()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def text(self) -> str:
        return "\n".join(self.lines[-60:])


@asynccontextmanager
async def start_dev(dest: Path, env: dict[str, str], *args: str) -> AsyncIterator[Console]:
    """`scripts/dev` in the copy; still running when the test ends (it failed before stopping
    it), it is stopped with SIGTERM, which stops what it started, or killed if it hangs."""
    proc = await asyncio.create_subprocess_exec(
        "scripts/dev", *args, "--port", str(free_port()),
        cwd=dest, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield Console(proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.communicate(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def run_in(dest: Path, env: dict[str, str], command: str) -> tuple[int, str, str]:
    """A README command line, copied literally, run by a shell in the copy."""
    proc = await asyncio.create_subprocess_shell(
        command, cwd=dest, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def readme_line(prefix: str) -> str:
    """The README's command line that starts with `prefix`, without its trailing comment."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(prefix):
            return line.split("  #")[0].strip()
    raise AssertionError(f"README.md has no line starting with {prefix!r}")


@pytest.mark.timeout(300)
async def test_scripts_dev_once_prints_an_answered_escalation_and_leaves_no_process() -> None:
    async with clean_copy_dir() as (dest, env), start_dev(dest, env, "--once") as dev:
        await dev.wait_for("devstack started")
        pid = postmaster_pid(dest)
        code = await dev.exit_code(240)
        text = dev.text()
        assert code == 0, text
        assert "operator answered:     Yes, approve the refund" in text, text
        assert "status: answered" in text
        assert "ms after the operator's message was committed" in text
        assert "its first call, a warm-up, took" in text
        assert not (dest / ".hitl" / "relay.env").exists()  # written only while the relay serves
        await stopped(pid)
        assert project_processes(dest) == []
        print("\n" + "\n".join(line for line in dev.lines if line.startswith("  ")))


@pytest.mark.timeout(300)
async def test_the_readme_ask_and_answer_work_as_written_and_ctrl_c_stops_everything() -> None:
    ask = readme_line(".venv/bin/hitl-relay ask ")
    answer = readme_line(".venv/bin/hitl-relay answer ")
    async with clean_copy_dir() as (dest, env), start_dev(dest, env) as dev:
        await dev.wait_for("the local operator .* is on duty")
        await dev.wait_for("Ctrl-C stops everything")
        assert (dest / ".hitl" / "relay.env").exists()
        pid = postmaster_pid(dest)

        asking = asyncio.create_task(run_in(dest, env, ask))
        case_id = (await dev.wait_for(r"case ([0-9a-f-]{36}) opened", timeout_s=60)).group(1)
        code, out, err = await run_in(dest, env, answer.replace("<case_id>", case_id))
        assert (code, out.strip()) == (0, f"answered case {case_id}"), err
        code, out, err = await asking
        assert code == 0, err
        assert out.strip() == "Yes, 10 percent."
        assert f"status: answered  case: {case_id}" in err

        dev.proc.send_signal(signal.SIGINT)
        assert await dev.exit_code() == 0, dev.text()
        assert "SIGINT: stopping everything" in dev.text()
        await stopped(pid)
        assert project_processes(dest) == []
        assert not (dest / ".hitl" / "relay.env").exists()


@pytest.mark.timeout(300)
async def test_with_nobody_on_duty_the_question_is_recorded_and_sigterm_stops_everything() -> None:
    async with clean_copy_dir() as (dest, env), start_dev(dest, env, "--nobody-on-duty") as dev:
        relay_env = dest / ".hitl" / "relay.env"

        async def relay_env_written() -> bool:
            return relay_env.exists()  # replaced atomically: complete once it exists

        await wait_until(relay_env_written, ".hitl/relay.env", timeout_s=240)
        # Written once the relay serves: the first request after the file appears is answered.
        url = read_env_file(relay_env)["HITL_MCP_URL"].removesuffix("/mcp")
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200
        await dev.wait_for("Ctrl-C stops everything")
        text = dev.text()
        assert "nobody is on duty" in text
        assert re.search(r"status: no_operator in \d+ ms, case [0-9a-f-]{36}", text), text
        assert re.search(r"this relay's first call, .* the relay's own time \d+ ms", text), text
        assert "recorded: case open in the operators' queue, session no_operator" in text
        pid = postmaster_pid(dest)

        code, _, err = await run_in(dest, env, readme_line(".venv/bin/hitl-relay ask "))
        assert code == 3
        found = re.search(r"status: no_operator  case: ([0-9a-f-]{36})", err)
        assert found, err
        assert "recorded in the operators' queue" in err
        # The README's way to see the question recorded: the case open, its session no_operator.
        code, out, err = await run_in(
            dest, env, readme_line('psql "$(.venv/bin/hitl-relay db url)"')
        )
        assert code == 0, err
        rows = [line.split("|") for line in out.splitlines() if found.group(1) in line]
        assert [[cell.strip() for cell in row[1:]] for row in rows] == [
            ["open", "no_operator", "Can I offer a discount?"]
        ], out

        dev.proc.send_signal(signal.SIGTERM)
        assert await dev.exit_code() == 0, dev.text()
        await stopped(pid)
        assert project_processes(dest) == []
