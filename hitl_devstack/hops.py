"""The local stack's share of an answer's delivery, for the benchmark's per-hop breakdown.

The devstack's Realtime counts, for every database broadcast (a row inserted into
realtime.messages; `NOTIFY hitl_realtime` carries it at commit), the time from the row's insert
(`at` in the notification, Unix seconds from inside the inserting transaction) to each frame of
it written to a subscriber's socket: the commit, the notification, the wait for the devstack's
loop, the fan-out and the write. Served as cumulative buckets at `GET /_devstack/hops` (a
devstack-only path), as two histograms: every database broadcast, and `message` broadcasts
only (the answers' frames: the stack's share of an answer's delivery; every broadcast also
counts the fan-out of `case_opened` to each operator).
"""

from __future__ import annotations

import bisect
from typing import Any


class HopStart:
    """When a database broadcast's row was inserted, and whether it is a `message` (an
    answer's or a clarification's frame, the one a waiting call is woken by)."""

    __slots__ = ("answer", "at")

    def __init__(self, at: float, answer: bool) -> None:
        self.at = at
        self.answer = answer


BUCKETS_S = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class HopHistogram:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.counts = [0] * (len(BUCKETS_S) + 1)  # the last: above every bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total += seconds

    def as_json(self) -> dict[str, Any]:
        cumulative: dict[str, int] = {}
        running = 0
        for le, n in zip([*map(str, BUCKETS_S), "+Inf"], self.counts, strict=True):
            running += n
            cumulative[le] = running
        return {"help": self.help, "buckets": cumulative, "count": running, "sum": self.total}
