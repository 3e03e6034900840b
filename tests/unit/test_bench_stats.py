"""The benchmark's error accounting (bench/stats.py): alike failures counted as one kind."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ is a top-level directory next to the package, run as `python -m bench` from the root
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.stats import ERRORS_KEPT, LevelResult


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
