"""The performance targets the benchmark reports against (never asserted in tests): each run
says, per level it measured, which target it met, with the figure next to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

Figure = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True)
class Target:
    level: int  # the realtime level it applies to (0: the first call of a fresh relay)
    name: str
    figure: Figure
    limit: float
    at_most: bool = True  # False: at least

    def verdict(self, result: dict[str, Any]) -> dict[str, Any]:
        value = self.figure(result)
        met = (
            None if value is None else value <= self.limit if self.at_most else value >= self.limit
        )
        rule = f"{'≤' if self.at_most else '≥'} {self.limit:g}"
        return {"level": self.level, "target": self.name, "rule": rule, "value": value, "met": met}


def _get(*path: str) -> Figure:
    def figure(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return float(value)

    return figure


def _not_answered(result: dict[str, Any]) -> float:
    return float(result["level"] - result["answered"] + result["duplicated"])


def _pauses_over_50ms(result: dict[str, Any]) -> float | None:
    hops = result.get("hops") or {}
    lag = (hops.get("loop_lag_ms") or {}).get("over_50ms")
    gcs = [(p or {}).get("over_50ms") or 0 for p in (hops.get("gc_pauses") or {}).values()]
    return None if lag is None else float(lag + sum(gcs))


TARGETS = (
    Target(0, "first call of a fresh relay: delivery ms", _get("delivery_ms", "p50"), 20),
    Target(1000, "delivery p50 ms", _get("delivery_ms", "p50"), 2),
    Target(1000, "delivery p99 ms", _get("delivery_ms", "p99"), 10),
    Target(1000, "case creation p99 ms", _get("create_ms", "p99"), 30),
    Target(1000, "relay's own hop p50 ms", _get("hops", "relay_hop_ms", "p50"), 0.3),
    Target(1000, "relay's own hop p99 ms", _get("hops", "relay_hop_ms", "p99"), 2),
    Target(10000, "calls not answered (not opened, lost, timed out) or twice", _not_answered, 0),
    Target(10000, "delivery p99 ms", _get("delivery_ms", "p99"), 25),
    Target(10000, "case creation p99 ms", _get("create_ms", "p99"), 100),
    Target(10000, "event-loop lags and collector pauses over 50 ms", _pauses_over_50ms, 0),
    Target(10000, "relay RSS MiB (one process)", _get("rss_mb"), 600),
)
RATIO_TARGET = Target(1000, "ratio_p50 (polling p50 / realtime p50)", _get("ratio"), 400, False)


def verdicts(
    results: Sequence[dict[str, Any]],
    first_call: dict[str, Any] | None,
    ratio: dict[str, Any] | None,
    replicas: int,
) -> list[dict[str, Any]]:
    """Each target whose level this run measured (realtime mode), with its figure and verdict."""
    by_level = {r["level"]: r for r in results if r["mode"] == "realtime"}
    if first_call is not None:
        by_level[0] = first_call
    found = []
    for target in TARGETS:
        result = by_level.get(target.level)
        if result is None or (target.name.endswith("(one process)") and replicas > 1):
            continue
        found.append(target.verdict(result))
    if ratio is not None and ratio.get("level") == RATIO_TARGET.level:
        found.append(RATIO_TARGET.verdict(ratio))
    return found


def render_targets(found: Sequence[dict[str, Any]], console: Console) -> None:
    if not found:
        return
    table = Table(title="targets (reported, never asserted): this run's figure against each")
    for column in ("level", "target", "rule", "value", "met"):
        table.add_column(column, justify="right" if column in ("level", "value") else "left")
    for v in found:
        value = "-" if v["value"] is None else f"{v['value']:.2f}"
        met = "-" if v["met"] is None else "met" if v["met"] else "NOT met"
        level = "first call" if v["level"] == 0 else f"{v['level']:,}"
        table.add_row(level, v["target"], v["rule"], value, met)
    console.print(table)
