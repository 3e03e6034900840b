"""The pytest session's Postgres cluster is stopped when the session ends (nothing of the
project is left running after `scripts/test`), also when the run is interrupted with Ctrl-C or
SIGTERM, checked on a run of its own in a fresh home; so is the pgTAP run's (`scripts/pgtap`)."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from waiting import wait_until

from hitl_devstack.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
INNER_TEST = (
    "tests/unit/test_cli_ask_output.py"
    "::test_needs_info_prints_the_operators_question_and_how_to_reply"
)

# Interrupted as a terminal's Ctrl-C does, and as `kill` or a cancelled CI job does.
BY_SIGNAL = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"]
)

# Loaded into the inner run: records the postmaster's pid of the session cluster; with
# HOLD_RUN set, the run then stays in its test's setup until it is interrupted.
RECORDER = """
import os
import threading
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _record_postmaster(pg_cluster):
    pid = (pg_cluster.datadir / "postmaster.pid").read_text().split()[0]
    Path(os.environ["RECORD_PG_PID"]).write_text(pid)
    if os.environ.get("HOLD_RUN"):
        threading.Event().wait(120)  # the outer test interrupts the run here
"""


def as_from_a_terminal() -> None:
    """In the child before it runs: Ctrl-C's SIGINT at its default, as in a terminal's
    foreground job. A suite started in the background by a non-interactive shell (`cmd &`,
    `nohup`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def running(pid: int) -> bool:
    """Exists and is not a zombie (an exited postmaster waits for init to reap it)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@asynccontextmanager
async def inner_run(tmp_path: Path) -> AsyncIterator[tuple[Path, Path]]:
    """A pytest run of INNER_TEST in a fresh home (under HITL_HOME: postgres must reach it),
    started by the caller with `start_inner`; yields the home and the file the postmaster's
    pid is recorded in. The home's cluster is destroyed afterwards whatever happened."""
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    home = base / f"session-stop-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    (tmp_path / "record_pg_pid.py").write_text(RECORDER)
    try:
        yield home, tmp_path / "pid"
    finally:
        Cluster(home / "test-pg", port=None).destroy()
        shutil.rmtree(home, ignore_errors=True)


async def start_inner(
    home: Path, pid_file: Path, *, under_shell: bool = False, **extra_env: str
) -> asyncio.subprocess.Process:
    """The inner run; `under_shell`: as a step of a shell script (`scripts/test`), the shell
    staying its parent (the `echo` after it: a lone command would be exec'd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    env |= {
        "HITL_HOME": str(home),
        "RECORD_PG_PID": str(pid_file),
        "PYTHONPATH": str(pid_file.parent),
        **extra_env,
    }
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "record_pg_pid", "-p", "no:cacheprovider",
        INNER_TEST,
    ]  # fmt: skip
    if under_shell:
        argv = ["bash", "-c", f'{shlex.join(argv)}; echo "pytest ended"']
    return await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, preexec_fn=as_from_a_terminal,
    )  # fmt: skip


async def recorded_pid(pid_file: Path) -> int:
    """The inner run's postmaster, once the run has started its cluster."""

    async def recorded() -> bool:
        return pid_file.exists() and pid_file.read_text() != ""

    await wait_until(recorded, "the inner run to start its cluster", timeout_s=150)
    return int(pid_file.read_text())


async def assert_stopped(home: Path, pid: int) -> None:
    async def gone() -> bool:
        return not running(pid)

    await wait_until(gone, f"the session's postgres ({pid}) to exit")
    assert not Cluster(home / "test-pg", port=None).status().running


async def interrupt(
    proc: asyncio.subprocess.Process, signum: signal.Signals, home: Path, pid: int
) -> None:
    """Send `signum` to the run; it ends interrupted, and its cluster (postmaster `pid`) stops."""
    proc.send_signal(signum)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0, out.decode()[-3000:]  # interrupted, not passed
    await assert_stopped(home, pid)


@pytest.mark.timeout(180)
async def test_a_pytest_session_stops_the_cluster_it_used(tmp_path: Path) -> None:
    async with inner_run(tmp_path) as (home, pid_file):
        proc = await start_inner(home, pid_file)
        out, _ = await asyncio.wait_for(proc.communicate(), 150)
        assert proc.returncode == 0, out.decode()[-3000:]
        await assert_stopped(home, int(pid_file.read_text()))


@pytest.mark.timeout(180)
@BY_SIGNAL
async def test_an_interrupted_pytest_session_stops_the_cluster_it_used(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with inner_run(tmp_path) as (home, pid_file):
        proc = await start_inner(home, pid_file, HOLD_RUN="1")
        await interrupt(proc, signum, home, await recorded_pid(pid_file))


@pytest.mark.timeout(240)
@BY_SIGNAL
async def test_an_interrupted_pgtap_run_stops_the_cluster_it_used(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with inner_run(tmp_path) as (home, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
        # One pgTAP file that holds the run until the signal: the whole suite takes about 3 s,
        # and a run that had already finished when the signal came passed (seen in CI).
        hold = tmp_path / "90_hold.sql"
        hold.write_text(
            "begin;\nselect plan(1);\nselect pg_sleep(120);\nselect pass('held');\n"
            "select * from finish();\nrollback;\n"
        )
        proc = await asyncio.create_subprocess_exec(
            "scripts/pgtap", str(hold), cwd=ROOT, env=env | {"HITL_HOME": str(home)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=as_from_a_terminal,
        )  # fmt: skip
        cluster = Cluster(home / "test-pg", port=None)
        database = f"pgtap_{proc.pid}"  # scripts/pgtap execs python: the same pid

        async def preparing() -> bool:
            if not cluster.status().running:
                return False
            try:
                conn = await asyncpg.connect(cluster.url())
            except (OSError, asyncpg.PostgresError):
                return False  # still starting
            try:
                found = await conn.fetchval(
                    "select 1 from pg_database where datname = $1", database
                )
            finally:
                await conn.close()
            return found is not None

        await wait_until(preparing, f"scripts/pgtap to create {database}", timeout_s=180)
        pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        await interrupt(proc, signum, home, pid)


@pytest.mark.timeout(180)
async def test_killing_the_shell_that_started_the_run_stops_its_cluster(tmp_path: Path) -> None:
    """`scripts/test` is a shell running pytest as one of its steps: SIGTERM to that shell alone
    (as `kill <pid>` does) ends the shell at once; the run it started must not outlive it."""
    async with inner_run(tmp_path) as (home, pid_file):
        shell = await start_inner(home, pid_file, under_shell=True, HOLD_RUN="1")
        pid = await recorded_pid(pid_file)
        shell.send_signal(signal.SIGTERM)
        await asyncio.wait_for(shell.wait(), 30)  # the shell only: pytest may hold the pipe
        assert shell.returncode == -signal.SIGTERM  # the shell died of it, leaving pytest behind
        await assert_stopped(home, pid)
