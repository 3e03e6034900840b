"""The cyclic garbage collector, set for a process that keeps thousands of calls waiting.

A waiting call holds about 530 objects the collector tracks (coroutines, tasks, cancel scopes
and events of the MCP transport, sse-starlette and its Realtime channel) for up to a minute.
CPython's full collection (generation 2) walks every tracked object with the event loop
stopped: about 0.3 ms per waiting call on the benchmark machine, so seconds at 10,000 waiting
(docs/benchmarks.md), and every call arriving and every answer landing during one waits for it.

`tune()` runs once the app is built and before it serves:

- `gc.freeze()` moves what exists then (the imported libraries: about 107,000 objects in
  `hitl-relay serve`) to the permanent generation, so no collection walks it again;
- the full collection runs after `full_every` young-generation (1) collections instead of 10.

`FreezePolicy` then keeps the waiting calls themselves out of every automatic collection
(`hitl-relay serve` runs it in its event loop; `HITL_GC_FREEZE_INTERVAL_SECONDS`, 0: off):

- every second, a young collection (`gc.collect(1)`: generations 0 and 1 only, what was
  allocated since the last pass; p50 4 ms on the busy benchmark machine at 2,000 waiting, as the
  automatic ones) frees the cycles that died young, then `gc.freeze()` moves the survivors (the
  calls still waiting) to the permanent generation. An automatic full collection then walks only
  what was promoted since the last pass. A frozen object freed by reference counting is really
  freed (CPython 3.11's `gc.freeze` splices the generation lists into the permanent one;
  deallocation unlinks an object from whichever list holds it), and most of a call's objects
  go that way when it ends: only cycles among frozen objects wait for a full pass.
- a full pass (`gc.unfreeze()`, `gc.collect(2)`, `gc.freeze()`) reclaims those cycles. It walks
  everything frozen, start-up objects included, so it runs only when its pause fits a budget
  (50 ms), i.e. when few calls wait: estimated as the allocated memory blocks times the seconds
  per block the last full pass (at first `tune()`'s collection) took. It is due once the
  objects frozen since the last one reach a quarter of what that one left frozen (CPython's own
  rule), so an idle relay makes none. Nothing in a pass walks the frozen objects: counting them
  (`gc.get_freeze_count()`) walks the whole list, 18 ns per object measured, about 100 ms with
  10,000 calls waiting; `hitl_gc_frozen_objects` then shows the policy's own count.
- a cap bounds what can pile up while calls never stop waiting: after `cap_objects`
  (`HITL_GC_FREEZE_CAP_OBJECTS`, 10 million: about 10,000 calls, as 970 objects per call were
  frozen in the 10,000-call benchmark) frozen since the last full pass, one runs whatever it
  costs (seconds at 10,000 waiting), logged once and counted in
  `hitl_gc_unfreeze_passes_total{reason="cap"}`. Measured (docs/benchmarks.md): a call that
  ended leaves about 90 objects in cycles, so about 900,000 garbage objects at most wait for the
  cap (about 150 MB at the ~165 bytes per object a waiting call's RSS implies), reached every 4
  minutes with 40 calls a second arriving. A lower cap holds less memory and pauses more often.

`hitl_gc_pause_seconds{generation}` on /metrics shows each collection's pause, and
`hitl_gc_frozen_objects` what is frozen (0: not tuned, e.g. the relay embedded in another
server; with the FreezePolicy running, its own count, an upper bound). The gc callback only
counts into plain integers: it may run inside any allocation, including one made while a
prometheus_client lock is held, so it must not call into prometheus_client.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from loguru import logger
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

# Pauses from 0.1 ms to 5 s: young collections take well under 1 ms, full ones up to seconds.
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GcMetrics(Collector):
    """Times each collection through `gc.callbacks`; a Prometheus collector of the pauses and
    of the frozen objects."""

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        # Per generation: a count per bucket (the last one is +Inf), and the sum of pauses.
        self._counts = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        pause = self._clock() - self._started
        generation = min(max(info.get("generation", 0), 0), 2)
        counts = self._counts[generation]
        for i, bound in enumerate(PAUSE_BUCKETS):
            if pause <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self._sums[generation] += pause

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "hitl_gc_pause_seconds",
            "Garbage-collector pauses (the event loop stops meanwhile), by generation.",
            labels=["generation"],
        )
        for generation in range(3):
            counts = list(self._counts[generation])
            cumulative, buckets = 0, []
            for bound, count in zip((*PAUSE_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family
        frozen = COUNTS.frozen
        yield GaugeMetricFamily(
            "hitl_gc_frozen_objects",
            "Objects in the collector's permanent generation, never walked (hitl_relay.gc_tuning;"
            " with the FreezePolicy running, an upper bound kept without walking them).",
            value=gc.get_freeze_count() if frozen is None else frozen,
        )
        yield CounterMetricFamily(
            "hitl_gc_freeze_passes",
            "FreezePolicy passes: a young collection, then the survivors frozen.",
            value=COUNTS.freeze_passes,
        )
        full = CounterMetricFamily(
            "hitl_gc_unfreeze_passes",
            "FreezePolicy full passes (unfreeze, full collection, freeze), by why: within the "
            "pause budget, or forced by the cap on objects frozen since the last one.",
            labels=["reason"],
        )
        full.add_metric(["budget"], COUNTS.budget_passes)
        full.add_metric(["cap"], COUNTS.cap_passes)
        yield full
        yield CounterMetricFamily(
            "hitl_gc_unfreeze_collected_objects",
            "Unreachable objects the FreezePolicy's full passes found (cycles among frozen ones).",
            value=COUNTS.collected,
        )


def census() -> dict[str, Any]:
    """What a full collection would walk now, counted by walking it (`gc.get_objects()` leaves
    out the frozen permanent generation): seconds of pause at millions of objects, so it is
    served only where a benchmark asks for it (`GET /metrics/census` with HITL_GC_CENSUS=1)."""
    started = time.perf_counter()
    objects = gc.get_objects()
    tracked = len(objects)
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    del objects
    return {
        "tracked_objects": float(tracked),
        # by type: where a waiting call's objects are (the benchmark takes the difference)
        "types": dict(types.most_common(300)),
        "frozen_objects": float(gc.get_freeze_count()),
        "census_seconds": time.perf_counter() - started,
        # what is imported so far: a first call that imports shows as modules added by it
        "modules": sorted(sys.modules),
    }


def census_routes() -> list[BaseRoute]:
    """`GET /metrics/census` (JSON, `census()`), only with HITL_GC_CENSUS=1: a benchmark's
    diagnostic, never on a production relay (each request pauses it for the walk)."""
    if os.environ.get("HITL_GC_CENSUS") != "1":
        return []

    async def endpoint(_: Request) -> Response:
        return JSONResponse(census())

    return [Route("/metrics/census", endpoint, methods=["GET"])]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def install(registry: CollectorRegistry) -> GcMetrics:
    """Time every collection from now on and serve the pauses from `registry`."""
    recorder = GcMetrics()
    gc.callbacks.append(recorder)
    registry.register(recorder)
    return recorder


def tune(full_every: int) -> float:
    """Freeze what exists now and make full collections rarer (see the module docstring).
    Returns the seconds per allocated memory block the full collection before the freeze took:
    the FreezePolicy's first estimate of what a full pass costs."""
    started = time.perf_counter()
    gc.collect()
    pause = time.perf_counter() - started
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_every)
    return pause / max(sys.getallocatedblocks(), 1)


@dataclass
class PolicyCounts:
    """What the FreezePolicy did, in plain integers (read by GcMetrics.collect)."""

    freeze_passes: int = 0
    budget_passes: int = 0
    cap_passes: int = 0
    collected: int = 0
    # Objects frozen: counted at the last full pass (or the start) plus those frozen since; an
    # upper bound, as frozen objects freed by reference counting are not subtracted. Counting
    # them exactly (`gc.get_freeze_count()`) walks the whole list: 18 ns per object measured,
    # about 100 ms with 10,000 calls waiting. None: no policy running.
    frozen: int | None = None


COUNTS = PolicyCounts()


def _unfrozen() -> int:
    # After a young collection, generation 2 holds everything not frozen (the young ones are
    # empty): what the freeze is about to move, counted without walking the frozen objects.
    return len(gc.get_objects(generation=2))


@dataclass(frozen=True)
class GcApi:
    """The collector functions the policy calls (tests inject fakes)."""

    collect: Callable[[int], int] = gc.collect
    freeze: Callable[[], None] = gc.freeze
    unfreeze: Callable[[], None] = gc.unfreeze
    frozen: Callable[[], int] = gc.get_freeze_count
    unfrozen: Callable[[], int] = _unfrozen
    blocks: Callable[[], int] = sys.getallocatedblocks


# A full pass is due once the objects frozen since the last one reach a quarter of what it left
# frozen (CPython's own rule for its full collection) and at least this many.
MIN_GROWTH = 10_000


class FreezePolicy:
    """Keeps long-waiting calls out of every automatic collection (see the module docstring):
    each `interval_s` a young collection then `gc.freeze()`; a full pass (unfreeze, full
    collection, freeze) when its estimated pause fits `budget_s`, or when `cap_objects` objects
    were frozen since the last one, whatever it costs.

    The estimate is the allocated memory blocks (`sys.getallocatedblocks()`: a sum over
    pymalloc's pools, well under a millisecond) times the seconds per block the last full pass
    took: it shrinks as soon as calls end, which the number of frozen objects cannot show
    without walking them all."""

    def __init__(
        self,
        seconds_per_block: float,
        *,
        interval_s: float = 1.0,
        budget_s: float = 0.05,
        cap_objects: int = 10_000_000,
        api: GcApi | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        counts: PolicyCounts = COUNTS,
    ) -> None:
        self.seconds_per_block = seconds_per_block
        self.interval_s = interval_s
        self.budget_s = budget_s
        self.cap_objects = cap_objects
        self._gc = api or GcApi()
        self._clock = clock
        self._sleep = sleep
        self.counts = counts
        self.frozen_since_full = 0  # objects frozen by the passes since the last full pass
        self._left_frozen = self._gc.frozen()  # what the last full pass (or the start) left
        self._capped_before = False

    def step(self) -> str:
        """One pass; returns which: "freeze", "budget" or "cap"."""
        due = self.frozen_since_full >= max(MIN_GROWTH, self._left_frozen // 4)
        if due and self._gc.blocks() * self.seconds_per_block <= self.budget_s:
            self._full_pass()
            self.counts.budget_passes += 1
            return "budget"
        if (since := self.frozen_since_full) >= self.cap_objects:
            pause = self._full_pass()
            self.counts.cap_passes += 1
            if not self._capped_before:
                self._capped_before = True
                logger.warning(
                    "gc: {} objects frozen since the last full collection (the cap); "
                    "ran one in {:.3f} s, {} objects left frozen (logged once; "
                    'hitl_gc_unfreeze_passes_total{{reason="cap"}} counts them)',
                    since,
                    pause,
                    self._left_frozen,
                )
            return "cap"
        self._gc.collect(1)
        self.frozen_since_full += self._gc.unfrozen()
        self._gc.freeze()
        self.counts.freeze_passes += 1
        self.counts.frozen = self._left_frozen + self.frozen_since_full
        return "freeze"

    def _full_pass(self) -> float:
        blocks = self._gc.blocks()
        started = self._clock()
        self._gc.unfreeze()
        collected = self._gc.collect(2)
        self._gc.freeze()
        pause = self._clock() - started
        self.seconds_per_block = pause / max(blocks, 1)
        self.counts.collected += collected
        self.frozen_since_full = 0
        self._left_frozen = self._gc.frozen()  # walks them once, while walking is paid anyway
        self.counts.frozen = self._left_frozen
        logger.debug(
            "gc: full pass over {} memory blocks in {:.1f} ms, {} unreachable, {} left frozen",
            blocks,
            pause * 1000,
            collected,
            self._left_frozen,
        )
        return pause

    async def run(self) -> None:
        """Pass every `interval_s` until cancelled (the server cancels it when it stops)."""
        self.counts.frozen = self._left_frozen
        try:
            while True:
                await self._sleep(self.interval_s)
                self.step()
        finally:
            self.counts.frozen = None


# What `hitl-relay serve` uses by default (Settings.gc_full_collection_every).
DEFAULT_FULL_EVERY = 100
# A cap no process reaches: `freezing()` never forces a full pass.
NEVER = sys.maxsize


@asynccontextmanager
async def freezing(full_every: int = DEFAULT_FULL_EVERY) -> AsyncIterator[FreezePolicy]:
    """`tune()`, then a FreezePolicy running until the block ends, for a process that keeps as
    many connections waiting as the relay and is not `hitl-relay serve` (the benchmark's
    harness, the local stack), so its own collections do not show up in what is measured:
    it never runs a full pass (no budget, no cap). A run lasts minutes; the dead cycles it
    leaves frozen go with the process."""
    policy = FreezePolicy(tune(full_every), budget_s=0.0, cap_objects=NEVER)
    task = asyncio.get_running_loop().create_task(policy.run(), name="gc-freeze-policy")
    try:
        yield policy
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
