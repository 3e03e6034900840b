"""The benchmark's error accounting (bench/stats.py): alike failures counted as one kind; the
performance targets each run is judged against (bench/targets.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# bench/ is a top-level directory next to the package, run as `python -m bench` from the root
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.stats import ERRORS_KEPT, LevelResult
from bench.targets import verdicts


def test_alike_errors_count_as_one_kind_and_the_first_are_kept_in_full() -> None:
    r = LevelResult(mode="realtime", level=300)
    for i in range(265):
        r.note_error(
            "failed to open", f"[ab12cd34/{i}] Can the caller get a refund: no reply in time"
        )
    r.note_error("status error", TimeoutError("read timed out after 5 s"))
    assert r.error_total() == 266
    assert r.error_counts["failed to open: <call>: no reply in time"] == 265
    assert r.error_counts["status error: TimeoutError: read timed out after N s"] == 1
    assert len(r.errors) == ERRORS_KEPT
    assert (
        r.errors[0] == "failed to open: [ab12cd34/0] Can the caller get a refund: no reply in time"
    )
    j = r.as_json()
    assert j["failed_open"] == 0
    assert j["error_counts"]["failed to open: <call>: no reply in time"] == 265


def level_result(level: int, **figures: Any) -> dict[str, Any]:
    """A level's JSON as the harness writes it, with the figures the targets read."""
    return {
        "mode": "realtime",
        "level": level,
        "answered": figures.get("answered", level),
        "lost": 0,
        "duplicated": figures.get("duplicated", 0),
        "delivery_ms": {"p50": figures.get("p50", 1.0), "p99": figures.get("p99", 5.0)},
        "create_ms": {"p50": 5.0, "p99": figures.get("create_p99", 20.0)},
        "rss_mb": figures.get("rss_mb", 500.0),
        "hops": {
            "relay_hop_ms": {"p50": 0.2, "p99": 1.0},
            "loop_lag_ms": {"over_50ms": figures.get("lags", 0)},
            "gc_pauses": {"2": {"over_50ms": figures.get("gc", 0)}},
        },
    }


def test_each_measured_level_is_judged_against_its_targets() -> None:
    ten = level_result(10000, answered=9990, duplicated=1, p99=30.0, lags=2, gc=1, rss_mb=650.0)
    found = verdicts([level_result(1000), ten], None, {"level": 1000, "ratio": 350.0}, 1)
    judged = {(v["level"], v["target"]): (v["value"], v["met"]) for v in found}
    assert judged[(1000, "delivery p50 ms")] == (1.0, True)
    assert judged[(1000, "ratio_p50 (polling p50 / realtime p50)")] == (350.0, False)
    assert judged[(10000, "calls not answered (not opened, lost, timed out) or twice")] == (
        11.0,
        False,
    )
    assert judged[(10000, "delivery p99 ms")] == (30.0, False)
    assert judged[(10000, "event-loop lags and collector pauses over 50 ms")] == (3.0, False)
    assert judged[(10000, "relay RSS MiB (one process)")] == (650.0, False)
    assert judged[(10000, "case creation p99 ms")] == (20.0, True)
    assert all(level in (1000, 10000) for level, _ in judged)  # no first call, no other level


def test_rss_of_one_process_is_not_judged_over_replicas() -> None:
    found = verdicts([level_result(10000)], {"delivery_ms": {"p50": 25.0}}, None, replicas=3)
    names = {v["target"]: v["met"] for v in found}
    assert "relay RSS MiB (one process)" not in names
    assert names["first call of a fresh relay: delivery ms"] is False
