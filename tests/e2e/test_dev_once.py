"""The README's first command, `scripts/dev --once`, from a clean copy of the repository."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from hitl_relay.devstack.cluster import Cluster, free_port

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
    # The installs scripts/setup would make (venv, node packages) are reused, not redone.
    (dest / ".venv").symlink_to(ROOT / ".venv")
    for nm in ("tests/conformance/js/node_modules",):
        if (ROOT / nm).exists():
            (dest / nm).symlink_to(ROOT / nm)


@pytest.mark.timeout(300)
async def test_scripts_dev_once_prints_an_answered_escalation_from_a_clean_copy() -> None:
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    dest = base / f"clean-copy-{uuid.uuid4().hex[:8]}"  # under .hitl: postgres must reach it
    dest.mkdir(parents=True)
    pg_port = free_port()
    try:
        clean_copy(dest)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
        env |= {"HITL_PG_PORT": str(pg_port), "HITL_DEVSTACK_PORT": str(free_port())}
        proc = await asyncio.create_subprocess_exec(
            "scripts/dev",
            "--once",
            "--port",
            str(free_port()),
            cwd=dest,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-3000:]
        assert "operator answered:     Yes, approve the refund" in text, text[-3000:]
        assert "status: answered" in text
        assert "ms after the operator's message was committed" in text
        assert (dest / ".hitl" / "relay.env").exists()
        print("\n" + "\n".join(line for line in text.splitlines() if line.startswith("  ")))
    finally:
        Cluster(dest / ".hitl" / "pg", port=pg_port).destroy()
        shutil.rmtree(dest, ignore_errors=True)
