"""The pytest session's Postgres cluster is stopped when the session ends (nothing of the
project is left running after `scripts/test`), checked on a run of its own in a fresh home."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from waiting import wait_until

from hitl_devstack.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]

# Loaded into the inner run: records the postmaster's pid of the session cluster.
RECORDER = """
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _record_postmaster(pg_cluster):
    pid = (pg_cluster.datadir / "postmaster.pid").read_text().split()[0]
    Path(os.environ["RECORD_PG_PID"]).write_text(pid)
"""


def running(pid: int) -> bool:
    """Exists and is not a zombie (an exited postmaster waits for init to reap it)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.timeout(180)
async def test_a_pytest_session_stops_the_cluster_it_used(tmp_path: Path) -> None:
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    home = base / f"session-stop-{uuid.uuid4().hex[:8]}"  # under HITL_HOME: postgres reaches it
    home.mkdir(parents=True)
    (tmp_path / "record_pg_pid.py").write_text(RECORDER)
    pid_file = tmp_path / "pid"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    env |= {
        "HITL_HOME": str(home),
        "RECORD_PG_PID": str(pid_file),
        "PYTHONPATH": str(tmp_path),
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pytest", "-q", "-p", "record_pg_pid", "-p", "no:cacheprovider",
            "tests/unit/test_cli_ask_output.py::test_needs_info_prints_the_operators_question_and_how_to_reply",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 150)
        assert proc.returncode == 0, out.decode()[-3000:]
        pid = int(pid_file.read_text())

        async def gone() -> bool:
            return not running(pid)

        await wait_until(gone, f"the session's postgres ({pid}) to exit")
        assert not Cluster(home / "test-pg", port=None).status().running
    finally:
        Cluster(home / "test-pg", port=None).destroy()
        shutil.rmtree(home, ignore_errors=True)
