"""Percentiles and the report shapes the benchmark prints and writes as JSON."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ERRORS_KEPT = 20


def _generic(text: str) -> str:
    """A message with its per-call parts (the bench's question tags, uuids, numbers) blanked,
    so the same failure on 265 calls counts as one kind."""
    text = re.sub(r"\[[0-9a-f]{8}/\d+\][^:]*", "<call>", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<uuid>", text)
    return re.sub(r"\d+", "N", text)[:200]


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
    # calls whose case no operator ever saw open (the call failed, or had not returned when the
    # open phase ended): results, counted with their errors, not a reason to wait
    failed_open: int = 0
    errors: list[str] = field(default_factory=list)
    # errors by kind and message, so that 265 alike failures read as one line with a count
    error_counts: Counter[str] = field(default_factory=Counter)
    db_statements_per_s: float | None = None
    rss_mb: float | None = None
    rss_kb_per_wait: float | None = None
    sockets: int | None = None
    channels: int | None = None
    wall_s: float = 0.0
    # The plan's four figures over this run's window (hitl_success_metrics), with the counts.
    success: dict[str, Any] | None = None
    # The harness's own share of each answered call's delivery, realtime only: the tool result's
    # last bytes received → its MCP client's call_tool returned (bench/arrivals.py).
    client_ms: list[float] = field(default_factory=list)
    # Delivery to the caller's socket: answer committed → the result's last bytes received (the
    # delivery less the harness's own share).
    delivery_wire_ms: list[float] = field(default_factory=list)
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
    # Per-hop breakdown, pauses and loop lag over the level (bench/hops.py), realtime only.
    hops: dict[str, Any] | None = None
    # Objects the relay's collector tracks, idle and with the level waiting (--census).
    gc_census: dict[str, Any] | None = None
    # Per replica (scale-out: more than one relay process): instance id, calls, RSS, delivery
    # and the per-hop breakdown. The level's own figures are over every replica.
    replicas: list[dict[str, Any]] = field(default_factory=list)
    # The machine's load average (1, 5, 15 min) when the level started → when it ended.
    load_average: str | None = None

    def note_error(self, kind: str, detail: object) -> None:
        """Count an error under `kind: message` (the message without this call's own ids, so
        alike failures group), and keep the first few in full."""
        text = detail if isinstance(detail, str) else f"{detail.__class__.__name__}: {detail}"
        self.error_counts[f"{kind}: {_generic(text)}"] += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(f"{kind}: {text}")

    def error_total(self) -> int:
        return sum(self.error_counts.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "level": self.level,
            "delivery_ms": summary(self.delivery_ms),
            "relay_delivery_ms": self.relay_delivery_ms,
            "client_ms": summary(self.client_ms) if self.client_ms else None,
            "delivery_wire_ms": summary(self.delivery_wire_ms) if self.delivery_wire_ms else None,
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
            "failed_open": self.failed_open,
            "errors": self.errors[:ERRORS_KEPT],
            "error_counts": dict(self.error_counts.most_common(20)),
            "db_statements_per_s": self.db_statements_per_s,
            "rss_mb": self.rss_mb,
            "rss_kb_per_wait": self.rss_kb_per_wait,
            "sockets": self.sockets,
            "channels": self.channels,
            "wall_s": round(self.wall_s, 2),
            "success": self.success,
            "hops": self.hops,
            "load_average": self.load_average,
            "gc_census": self.gc_census,
            "replicas": self.replicas,
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
