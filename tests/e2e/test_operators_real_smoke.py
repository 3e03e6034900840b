"""scripts/bench operators --real at a tiny scale: the report is read from the database (the
product's success metrics and the scenario's own cases agree with each other and with what the
simulator sent) and the features show in the record (claims, no late answers under claims).
Timings are reported by the benchmark, never asserted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from hitl_devstack.cluster import Cluster, free_port

ROOT = Path(__file__).resolve().parents[2]


def check_consistent(r: dict[str, Any]) -> None:
    """One scenario's report: the figures are Postgres's and add up."""
    s, d, sim = r["success"], r["db"], r["simulator"]
    name = r["scenario"]["name"]
    where = (name, s, d, sim)
    assert sim["operator_errors"] == [], where
    assert sim["calls_sent"] > 0, where
    assert sum(sim["statuses_returned"].values()) == sim["calls_sent"], where
    # every call made one case, and the window holds this scenario's cases only
    assert s["cases"] == d["cases"] == sim["calls_sent"], where
    # a question back opens a second session on the same case
    assert d["sessions"] == sim["calls_sent"] + sim["follow_ups_sent"], where
    statuses = d["last_session_status"]
    assert "waiting" not in statuses, where
    assert s["finished"] == sum(statuses.values()), where
    # a session closed by "cannot answer" is `answered` in hil_sessions, not a success
    assert s["answered"] + s["cannot_answer"] == statuses.get("answered", 0), where
    assert s["cannot_answer"] == d["closed_by_cannot_answer"], where
    outcomes = s["answered"] + s["cannot_answer"] + s["timed_out"] + s["other"]
    assert outcomes == s["finished"], where
    assert s["timed_out"] == statuses.get("timed_out", 0) + statuses.get("expired", 0), where
    finished = s["finished"]
    assert s["success_rate"]["value"] == pytest.approx(round(s["answered"] / finished, 4)), where
    assert s["timeout_rate"]["value"] == pytest.approx(round(s["timed_out"] / finished, 4)), where
    cannot = s["cannot_answer_rate"]["value"]
    assert cannot == pytest.approx(round(s["cannot_answer"] / finished, 4)), where
    assert (s["avg_response_s"]["value"] is None) == (s["answered"] == 0), where
    util = s["operator_utilisation"]
    assert util["available_s"] > 0, where
    assert 0 <= util["value"] <= 1, where
    assert util["value"] == pytest.approx(util["handled_s"] / util["available_s"], abs=1e-4)
    first = d["time_to_first_action_s"]
    assert first["n"] == len(d["time_to_first_action_all_s"]) <= d["cases"], where
    assert d["time_to_claim_s"]["n"] <= min(d["claims"], d["cases"]), where
    assert d["one_tap_answers"] <= d["cases_with_options"], where
    assert d["answered_cases"] >= s["answered"], where
    assert d["closed_by_cannot_answer"] <= d["cannot_answer"], where


@pytest.mark.timeout(420)
async def test_operators_real_report_is_read_from_the_database_and_adds_up() -> None:
    base = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    home = base / f"operators-smoke-{uuid.uuid4().hex[:8]}"  # its own stack, under .hitl
    home.mkdir(parents=True)
    pg_port = free_port()
    out = home / "out.json"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
        env |= {
            "HITL_HOME": str(home),
            "HITL_PG_PORT": str(pg_port),
            "HITL_DEVSTACK_PORT": str(free_port()),
        }
        proc = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "bench"),
            "operators",
            "--real",
            *("--operators", "3", "--skilled", "1", "--shift-away", "1"),
            *("--rate", "2", "--duration", "6", "--deadline", "8", "--think-scale", "0.1"),
            *("--question-back", "0.3", "--cannot-answer", "0.1"),
            *("--scenarios", "baseline,all", "--json", str(out)),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        text, _ = await asyncio.wait_for(proc.communicate(), 360)
        assert proc.returncode == 0, text.decode(errors="replace")[-3000:]
        report = json.loads(out.read_text())
        runs = {r["scenario"]["name"]: r for r in report["scenarios"]}
        assert set(runs) == {"baseline", "all"}
        for r in runs.values():
            check_consistent(r)
            assert r["scenario"]["name"] in report["table"]
        baseline, full = runs["baseline"]["db"], runs["all"]["db"]
        # the baseline has no claims, skills or options; with claims nobody answers a case
        # someone else holds, so no answer arrives late
        assert (baseline["claims"], baseline["cases_with_options"]) == (0, 0)
        assert baseline["cases_with_skills"] == 0
        assert full["claims"] >= full["time_to_claim_s"]["n"] > 0
        assert full["wasted_late_answers"] == 0
        print("\n" + text.decode(errors="replace")[-1500:])
    finally:
        Cluster(home / "pg", port=pg_port).destroy()
        shutil.rmtree(home, ignore_errors=True)
