"""scripts/bench --quick --json at a small level: the report's shape, every call answered in
both modes, nothing lost or duplicated. Timings are reported by the benchmark, not asserted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from hitl_devstack.cluster import Cluster, free_port

ROOT = Path(__file__).resolve().parents[2]


async def start_bench(home: Path, pg_port: int, *args: str) -> asyncio.subprocess.Process:
    """scripts/bench with a stack of its own under `home` (no inherited stack), output piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    env |= {
        "HITL_HOME": str(home),
        "HITL_PG_PORT": str(pg_port),
        "HITL_DEVSTACK_PORT": str(free_port()),
    }
    return await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "bench"),
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


FIGURES = ("avg_response_s", "success_rate", "timeout_rate", "operator_utilisation")


def check_success_figures(mode: str, level: int, success: dict[str, Any]) -> None:
    """hitl_success_metrics over the run: every case closed (the polling baseline closes its
    sessions as the relay does), all answered, and the operator's heartbeats give utilisation
    a denominator (busy time counted once, so at most 1)."""
    where = (mode, level, success)
    assert set(success) == {
        "window",
        "cases",
        "finished",
        "answered",
        "cannot_answer",
        "timed_out",
        "other",
        "cannot_answer_rate",
        *FIGURES,
    }
    assert (success["cases"], success["finished"], success["answered"]) == (level,) * 3, where
    assert (success["timed_out"], success["cannot_answer"], success["other"]) == (0, 0, 0), where
    for key in FIGURES:
        assert {"value", "target", "met"} <= set(success[key]), (key, where)
        assert success[key]["value"] is not None, (key, where)
    assert success["success_rate"]["value"] == 1.0, where
    assert success["timeout_rate"]["value"] == 0.0, where
    assert success["avg_response_s"]["value"] > 0, where
    assert 0 < success["operator_utilisation"]["value"] <= 1, where
    assert success["operator_utilisation"]["available_s"] > 0, where


@pytest.mark.timeout(300)
async def test_bench_quick_json_has_both_modes_all_answered_none_lost() -> None:
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    home = base / f"bench-smoke-{uuid.uuid4().hex[:8]}"  # its own stack, under .hitl
    home.mkdir(parents=True)
    pg_port = free_port()
    out = home / "out.json"
    plot = home / "out.png"
    try:
        proc = await start_bench(
            home, pg_port, "--quick", "--levels", "1,5", "--json", str(out), "--plot", str(plot)
        )
        text, _ = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, text.decode(errors="replace")[-3000:]
        report = json.loads(out.read_text())
        assert plot.stat().st_size > 10_000  # a real PNG was drawn
        results = {(r["mode"], r["level"]): r for r in report["results"]}
        assert set(results) == {("realtime", 1), ("realtime", 5), ("polling", 1), ("polling", 5)}
        for (mode, level), r in results.items():
            assert r["answered"] == level, (mode, level, r["errors"])
            assert r["lost"] == 0
            assert r["duplicated"] == 0
            assert set(r["delivery_ms"]) == {"p50", "p95", "p99", "max"}
            assert set(r["create_ms"]) == {"p50", "p95", "p99"}
            assert len([v for v in r["delivery_ms"].values() if v is not None]) == 4
            for key in ("db_statements_per_s", "rss_mb", "rss_kb_per_wait"):
                assert key in r
            check_success_figures(mode, level, r["success"])
            check_creation_split(mode, level, r)
            assert (r["failed_open"], r["error_counts"]) == (0, {}), r["errors"]
            assert r["load_average"], r
            check_hops(mode, level, r["hops"])
            check_harness_share(mode, level, r)
        first = report["first_call"]
        assert (first["answered"], first["lost"], first["failed_open"]) == (1, 0, 0), first
        check_hops("realtime", 1, first["hops"])
        assert isinstance(report["ratio_p50"], float)
        assert report["ratio_level"] == 5
        print("\n" + text.decode(errors="replace")[-1500:])
    finally:
        Cluster(home / "pg", port=pg_port).destroy()
        shutil.rmtree(home, ignore_errors=True)


def check_hops(mode: str, level: int, hops: dict[str, Any] | None) -> None:
    """The per-hop breakdown (bench/hops.py) measured this level's answers: the relay's hop
    closed for answers pushed over Realtime (one may come by the catch-up read instead), the
    stack's hop for each database broadcast (case_opened, message, session: more than one per
    call) and for the answers' alone, and the pauses and loop lag sampled."""
    if mode == "polling":
        assert hops is None
        return
    assert hops is not None
    assert 1 <= hops["relay_hop_ms"]["count"] <= level, hops
    assert hops["relay_hop_ms"]["p50"] is not None, hops
    assert hops["stack_hop_ms"]["count"] >= level, hops
    # each answer pushed to the relay was one `message` frame sent by the stack
    assert hops["stack_answer_hop_ms"]["count"] >= hops["relay_hop_ms"]["count"], hops
    assert set(hops["gc_pauses"]) == {"0", "1", "2"}
    assert {"count", "p50", "p99", "max_le_ms", "over_50ms"} <= set(hops["loop_lag_ms"])


def check_harness_share(mode: str, level: int, r: dict[str, Any]) -> None:
    """Realtime: every answered call's delivery split at the caller's socket, the harness's
    own share (result bytes received → call_tool returned) no larger than the delivery."""
    if mode == "polling":
        assert r["client_ms"] is None
        assert r["delivery_wire_ms"] is None
        return
    client, wire, delivery = r["client_ms"], r["delivery_wire_ms"], r["delivery_ms"]
    assert client is not None, r
    assert wire is not None, r
    assert 0 <= client["p50"] <= delivery["max"], r
    assert wire["max"] <= delivery["max"], r


def check_creation_split(mode: str, level: int, r: dict[str, Any]) -> None:
    """Realtime creation in parts: the relay's view, call → case committed, committed →
    operator; each part measured for every case, and the parts not longer than the whole."""
    split = r["create_split"]
    if mode == "polling":
        assert split is None
        return
    assert set(split) == {"relay_ms", "call_to_commit_ms", "commit_to_operator_ms"}
    assert set(split["relay_ms"]) == {"p50", "p95", "p99"}
    to_commit, to_operator = split["call_to_commit_ms"], split["commit_to_operator_ms"]
    for part in (to_commit, to_operator):
        assert set(part) == {"p50", "p95", "p99", "max"}
        assert part["p50"] is not None, split
        assert part["p50"] >= 0, split
    # commit timestamps and this process's clock, same machine: the parts fit in the whole
    assert to_commit["p50"] <= r["create_ms"]["p50"] + 1, (split, r["create_ms"])


def descendants(pid: int) -> set[int]:
    """Every process below pid (children of children included), from /proc."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parent[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(300)
async def test_bench_sigterm_stops_everything_it_started() -> None:
    """A bench killed mid-level (SIGTERM, as a CI timeout or `kill` sends) stops the relay, the
    devstack and the devstack's Postgres before it exits: nothing it started keeps running."""
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    home = base / f"bench-kill-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    pg_port = free_port()
    cluster = Cluster(home / "pg", port=pg_port)
    try:
        # 20 calls at 1 a second: the level is still opening when the signal comes
        proc = await start_bench(
            home, pg_port, "--levels", "20", "--modes", "realtime", "--rate", "1"
        )
        assert proc.stdout is not None
        seen: list[str] = []
        async with asyncio.timeout(200):
            while not any("realtime at 20" in line for line in seen):
                raw = await proc.stdout.readline()
                assert raw, "bench exited before its level started:\n" + "".join(seen)
                seen.append(raw.decode(errors="replace"))
        started = descendants(proc.pid)
        assert len(started) >= 2, started  # at least the relay and the devstack
        assert cluster.status().running
        proc.send_signal(signal.SIGTERM)
        text, _ = await asyncio.wait_for(proc.communicate(), 90)
        output = "".join(seen) + text.decode(errors="replace")
        assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
        assert "SIGTERM: stopping what it started" in output
        assert [pid for pid in started if alive(pid)] == [], output[-3000:]
        assert not cluster.status().running, output[-3000:]
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(300)
async def test_bench_two_replicas_share_the_calls_and_a_call_resumes_on_the_other() -> None:
    """--replicas 2: the calls spread over two relay processes (each its own instance id),
    every call answered on both, figures per replica; then a call asked on one replica is
    picked up on the other after the first was killed: pending before the operator answers,
    the operator's answer after."""
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    home = base / f"bench-replicas-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    pg_port = free_port()
    out = home / "out.json"
    try:
        proc = await start_bench(
            home,
            pg_port,
            *("--quick", "--levels", "6", "--modes", "realtime", "--replicas", "2"),
            *("--json", str(out)),
        )
        text, _ = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, text.decode(errors="replace")[-3000:]
        report = json.loads(out.read_text())
        (level,) = report["results"]
        assert (level["answered"], level["lost"], level["duplicated"]) == (6, 0, 0), level
        replicas = level["replicas"]
        assert [r["instance_id"] for r in replicas] == ["bench-relay-0", "bench-relay-1"]
        assert [r["calls"] for r in replicas] == [3, 3]
        assert [r["answered"] for r in replicas] == [3, 3]
        for r in replicas:
            assert r["delivery_ms"]["p50"] is not None, r
            assert r["rss_mb"] > 0, r
        resume = report["resume_on_another_replica"]
        assert "error" not in resume, resume
        assert (resume["asked_on"], resume["picked_up_on"]) == ("bench-relay-1", "bench-relay-0")
        assert (resume["before_answer"], resume["after_answer"]) == ("pending", "answered")
        assert resume["answer_matches"] is True
    finally:
        Cluster(home / "pg", port=pg_port).destroy()
        shutil.rmtree(home, ignore_errors=True)
