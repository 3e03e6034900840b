"""Percentiles and the report shapes the benchmark prints and writes as JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summary(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{q}": _round(percentile(values, q)) for q in qs}
    out["max"] = _round(max(values)) if values else None
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


@dataclass
class LevelResult:
    """One mode at one concurrency level."""

    mode: str
    level: int
    delivery_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    answered: int = 0
    lost: int = 0
    duplicated: int = 0
    timed_out: int = 0
    errors: list[str] = field(default_factory=list)
    db_statements_per_s: float | None = None
    rss_mb: float | None = None
    rss_kb_per_wait: float | None = None
    sockets: int | None = None
    channels: int | None = None
    wall_s: float = 0.0
    # The plan's four figures over this run's window (hitl_success_metrics), with the counts.
    success: dict[str, Any] | None = None
    # The relay's own view: answer created → relay has it (hitl_delivery_seconds), realtime only.
    relay_delivery_ms: dict[str, float | None] | None = None
    # Calls per second arriving in the open phase (0: all at once).
    rate: float = 0.0
    # Case creation split in three, realtime only (`create_split` in the JSON): the relay's own view
    # (tool call received → hitl_open_case done, its hitl_case_creation_seconds histogram); call
    # started → the case's insert committed (pg_xact_commit_timestamp); committed → an operator
    # subscriber has `case_opened`.
    relay_create_ms: dict[str, float | None] | None = None
    create_to_commit_ms: list[float] = field(default_factory=list)
    create_commit_to_operator_ms: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "level": self.level,
            "delivery_ms": summary(self.delivery_ms),
            "relay_delivery_ms": self.relay_delivery_ms,
            "arrival_rate_per_s": self.rate,
            "create_ms": {k: v for k, v in summary(self.create_ms).items() if k != "max"},
            "create_split": None
            if self.relay_create_ms is None and not self.create_to_commit_ms
            else {
                "relay_ms": self.relay_create_ms,
                "call_to_commit_ms": summary(self.create_to_commit_ms),
                "commit_to_operator_ms": summary(self.create_commit_to_operator_ms),
            },
            "answered": self.answered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "timed_out": self.timed_out,
            "errors": self.errors[:20],
            "db_statements_per_s": self.db_statements_per_s,
            "rss_mb": self.rss_mb,
            "rss_kb_per_wait": self.rss_kb_per_wait,
            "sockets": self.sockets,
            "channels": self.channels,
            "wall_s": round(self.wall_s, 2),
            "success": self.success,
        }


def ratio_p50(results: Sequence[LevelResult]) -> dict[str, Any] | None:
    """Polling p50 / realtime p50 at the highest level both modes ran."""
    by = {(r.mode, r.level): r for r in results}
    common = sorted(lvl for (mode, lvl) in by if mode == "realtime" and ("polling", lvl) in by)
    if not common:
        return None
    level = common[-1]
    rt = percentile(by[("realtime", level)].delivery_ms, 50)
    po = percentile(by[("polling", level)].delivery_ms, 50)
    if rt is None or po is None or rt <= 0:
        return None
    return {"level": level, "ratio": round(po / rt, 1)}
