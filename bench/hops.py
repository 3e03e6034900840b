"""Where each millisecond of a level went, from histograms the relay and the devstack keep:
snapshots before and after a level, and the level's share is the difference.

- relay hop: `hitl_answer_hop_seconds` (the relay's /metrics): the case channel's frame read off
  the socket → the tool result's bytes written (hitl_relay/hops.py);
- stack hop: the devstack's `GET /_devstack/hops`: a database broadcast's row inserted (inside
  the transaction, so its commit included) → its frame written to a subscriber's socket
  (hitl_devstack/hops.py), every database broadcast of the level (case_opened, message,
  session);
- event-loop lag: `hitl_event_loop_lag_seconds` (how late the relay's 0.5 s timer fired);
- garbage-collector pauses: `hitl_gc_pause_seconds{generation}`.
Quantiles are interpolated within buckets (Prometheus' histogram_quantile); "max ≤" is the upper
edge of the highest bucket that counted anything.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.run import histogram_delta, histogram_quantile


@dataclass
class Snapshot:
    metrics: str = ""
    stack: dict[str, Any] = field(default_factory=dict)


async def snapshot(mcp_url: str, stack_url: str) -> Snapshot:
    out = Snapshot()
    async with httpx.AsyncClient(timeout=5) as client:
        with contextlib.suppress(httpx.HTTPError):
            out.metrics = (await client.get(mcp_url.removesuffix("/mcp") + "/metrics")).text
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get(stack_url + "/_devstack/hops")
            if r.status_code == 200:
                hops = r.json()["hops"]
                out.stack = {"db": hops[0], "answers": hops[1] if len(hops) > 1 else None}
    return out


def buckets(text: str, name: str, labels: str = "") -> dict[float, float]:
    """Cumulative bucket counts of one histogram series (labels: `generation="2",`), summed
    over every copy of the series in `text`."""
    out: dict[float, float] = {}
    prefix = f"{name}_bucket{{{labels}"
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = out.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def value(text: str, series: str) -> float:
    """A sample's value, summed over every copy (`merged` snapshots hold one per replica)."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " ")
    )


def merged(snapshots: list[Snapshot]) -> Snapshot:
    """Several replicas' snapshots as one: their histograms add up."""
    return Snapshot(
        metrics="\n".join(s.metrics for s in snapshots),
        stack=snapshots[0].stack if snapshots else {},
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def summarise(delta: dict[float, float]) -> dict[str, Any]:
    edges = sorted(delta)
    count = delta[edges[-1]] if edges else 0.0
    top = None
    previous = 0.0
    for le in edges:
        if delta[le] > previous:
            top = le
        previous = delta[le]
    return {
        "count": int(count),
        **{f"p{q}": _ms(histogram_quantile(delta, q / 100)) for q in (50, 99)},
        "max_le_ms": None if top is None else ("inf" if top == float("inf") else _ms(top)),
    }


def above(delta: dict[float, float], seconds: float) -> int:
    """How many observations were above `seconds` (an edge of the histogram)."""
    edges = sorted(delta)
    if not edges:
        return 0
    return int(delta[edges[-1]] - delta.get(seconds, 0.0))


def exact_figures(delta: dict[float, float], total_s: float) -> dict[str, Any]:
    """What the buckets' interpolation does not blur: the mean (the histogram's sum over its
    count) and the share of observations within each target's edge (0.3 and 2 ms)."""
    edges = sorted(delta)
    count = delta[edges[-1]] if edges else 0.0
    if not count:
        return {"mean_ms": None, "within_0_3ms": None, "within_2ms": None}
    return {
        "mean_ms": _ms(total_s / count),
        "within_0_3ms": round(delta.get(0.0003, 0.0) / count, 3),
        "within_2ms": round(delta.get(0.002, 0.0) / count, 3),
    }


def breakdown(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    relay = histogram_delta(
        buckets(before.metrics, "hitl_answer_hop_seconds"),
        buckets(after.metrics, "hitl_answer_hop_seconds"),
    )
    lag = histogram_delta(
        buckets(before.metrics, "hitl_event_loop_lag_seconds"),
        buckets(after.metrics, "hitl_event_loop_lag_seconds"),
    )
    relay_sum = value(after.metrics, "hitl_answer_hop_seconds_sum") - value(
        before.metrics, "hitl_answer_hop_seconds_sum"
    )
    out: dict[str, Any] = {
        "relay_hop_ms": {**summarise(relay), **exact_figures(relay, relay_sum)},
        "stack_hop_ms": None,
        "stack_answer_hop_ms": None,
        "loop_lag_ms": {**summarise(lag), "over_50ms": above(lag, 0.05)},
        "gc_pauses": {},
    }
    if before.stack and after.stack:
        for key, name in (("stack_hop_ms", "db"), ("stack_answer_hop_ms", "answers")):
            if before.stack.get(name) and after.stack.get(name):
                b, a = before.stack[name]["buckets"], after.stack[name]["buckets"]
                out[key] = summarise({float(le): a[le] - b.get(le, 0) for le in a})
    for gen in ("0", "1", "2"):
        labels = f'generation="{gen}",'
        pauses = histogram_delta(
            buckets(before.metrics, "hitl_gc_pause_seconds", labels),
            buckets(after.metrics, "hitl_gc_pause_seconds", labels),
        )
        series = f'hitl_gc_pause_seconds_sum{{generation="{gen}"}}'
        total = value(after.metrics, series) - value(before.metrics, series)
        out["gc_pauses"][gen] = {
            **summarise(pauses),
            "total_ms": round(total * 1000, 1),
            "over_50ms": above(pauses, 0.05),
        }
    return out
