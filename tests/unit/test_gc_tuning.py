"""The garbage-collector setting and its metrics (hitl_relay.gc_tuning)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger
from prometheus_client import CollectorRegistry, generate_latest

from hitl_relay import gc_tuning, metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} not exposed"
    return value


def test_each_pause_lands_in_its_generation_and_bucket() -> None:
    clock = FakeClock()
    recorder = gc_tuning.GcMetrics(clock=clock)
    registry = CollectorRegistry()
    registry.register(recorder)
    for generation, pause in ((0, 0.0004), (0, 0.00005), (2, 0.3), (2, 7.0)):
        recorder("start", {"generation": generation})
        clock.now += pause
        recorder("stop", {"generation": generation, "collected": 0, "uncollectable": 0})

    name = "hitl_gc_pause_seconds"
    assert sample(registry, f"{name}_count", generation="0") == 2
    assert sample(registry, f"{name}_bucket", generation="0", le="0.0001") == 1
    assert sample(registry, f"{name}_bucket", generation="0", le="0.0005") == 2
    assert sample(registry, f"{name}_sum", generation="0") == pytest.approx(0.00045)
    assert sample(registry, f"{name}_count", generation="1") == 0
    # 0.3 s is above the 0.25 bucket, 7 s above every finite one: only +Inf holds both
    assert sample(registry, f"{name}_bucket", generation="2", le="0.25") == 0
    assert sample(registry, f"{name}_bucket", generation="2", le="0.5") == 1
    assert sample(registry, f"{name}_bucket", generation="2", le="5.0") == 1
    assert sample(registry, f"{name}_bucket", generation="2", le="+Inf") == 2
    assert sample(registry, f"{name}_sum", generation="2") == pytest.approx(7.3)


def test_the_relays_registry_times_real_collections() -> None:
    before = sample(metrics.REGISTRY, "hitl_gc_pause_seconds_count", generation="2")
    gc.collect()
    # at least this one (an automatic full collection may also have run meanwhile)
    assert sample(metrics.REGISTRY, "hitl_gc_pause_seconds_count", generation="2") >= before + 1
    assert b"hitl_gc_frozen_objects" in generate_latest(metrics.REGISTRY)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_tune_freezes_what_exists_and_makes_full_collections_rarer() -> None:
    young, middle, _ = gc.get_threshold()
    gc_tuning.tune(100)
    assert gc.get_threshold() == (young, middle, 100)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # at least this test process's imported modules
    assert sample(metrics.REGISTRY, "hitl_gc_frozen_objects") == frozen


def test_the_setting_defaults_to_100_and_names_its_rule() -> None:
    from hitl_relay.config import Settings

    assert Settings.model_fields["gc_full_collection_every"].default == 100
    with pytest.raises(ValueError, match="gc_full_collection_every"):
        Settings(gc_full_collection_every=0)


class FakeGc:
    """The collector as the policy sees it: a frozen count that freeze() grows by what the
    young collections left (`pending`), one memory block per object, and a log of every call."""

    def __init__(self, frozen: int, clock: FakeClock, seconds_per_block: float) -> None:
        self.frozen_count = frozen
        self.pending = 0
        self.garbage = 0  # cycles among frozen objects, found only by a full pass
        self.calls: list[str] = []
        self._clock = clock
        self._cost = seconds_per_block

    def api(self) -> gc_tuning.GcApi:
        return gc_tuning.GcApi(
            collect=self.collect, freeze=self.freeze, unfreeze=self.unfreeze,
            frozen=self.frozen, unfrozen=lambda: self.pending, blocks=self.blocks,
        )  # fmt: skip

    def blocks(self) -> int:
        return self.frozen_count + self.pending

    def collect(self, generation: int) -> int:
        self.calls.append(f"collect({generation})")
        if generation < 2:
            return 0
        self._clock.now += self.blocks() * self._cost  # a full pass walks all of them
        found, self.garbage = self.garbage, 0
        self.frozen_count -= found
        return found

    def freeze(self) -> None:
        self.calls.append("freeze")
        self.frozen_count += self.pending
        self.pending = 0

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def frozen(self) -> int:
        return self.frozen_count


def policy_over(
    fake: FakeGc, clock: FakeClock, counts: gc_tuning.PolicyCounts, **options: Any
) -> gc_tuning.FreezePolicy:
    return gc_tuning.FreezePolicy(
        options.pop("seconds_per_block", 1e-7), api=fake.api(), clock=clock, counts=counts,
        **options,
    )  # fmt: skip


def test_a_pass_collects_the_young_generations_then_freezes_their_survivors() -> None:
    clock, counts = FakeClock(), gc_tuning.PolicyCounts()
    fake = FakeGc(100_000, clock, 1e-7)
    policy = policy_over(fake, clock, counts)
    fake.pending = 3_000
    assert policy.step() == "freeze"
    assert fake.calls == ["collect(1)", "freeze"]  # never a full collection, never unfrozen
    assert fake.frozen_count == 103_000
    assert policy.frozen_since_full == 3_000
    assert counts.frozen == 103_000  # an upper bound, kept without walking the frozen objects
    assert counts.freeze_passes == 1


def test_a_full_pass_runs_once_enough_was_frozen_and_only_within_the_budget() -> None:
    clock, counts = FakeClock(), gc_tuning.PolicyCounts()
    # 1 µs per object: 40,000 frozen objects are 40 ms (within 50 ms), 60,000 are 60 ms
    fake = FakeGc(30_000, clock, 1e-6)
    policy = policy_over(fake, clock, counts, seconds_per_block=1e-6, budget_s=0.05)
    fake.pending = 10_000
    assert policy.step() == "freeze"  # now 10,000 frozen since: due from the next pass
    fake.garbage = 400
    assert policy.step() == "budget"
    assert fake.calls[-3:] == ["unfreeze", "collect(2)", "freeze"]
    assert (counts.budget_passes, counts.collected, policy.frozen_since_full) == (1, 400, 0)
    assert policy.seconds_per_block == pytest.approx(1e-6)  # measured: 40 ms over 40,000
    assert counts.frozen == 39_600  # counted once, by the full pass

    # Calls arrive and stay: 20,000 more frozen (due again), but the pass would take 59.6 ms.
    fake.pending = 20_000
    assert policy.step() == "freeze"
    for _ in range(5):
        assert policy.step() == "freeze"
    assert "unfreeze" not in fake.calls[-12:]
    assert counts.budget_passes == 1
    # The calls end (freed by reference counting): the memory shrinks, the pass fits again.
    fake.frozen_count = 45_000
    assert policy.step() == "budget"


def test_the_cap_forces_a_full_pass_whatever_it_costs_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, counts = FakeClock(), gc_tuning.PolicyCounts()
    fake = FakeGc(1_000_000, clock, 1e-6)  # a full pass: a second, far over the budget
    policy = policy_over(fake, clock, counts, seconds_per_block=1e-6, cap_objects=50_000)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        passes = []
        for _ in range(12):
            fake.pending = 10_000
            passes.append(policy.step())
    finally:
        logger.remove(sink)
    # 10,000 frozen per pass: the 6th pass finds 50,000 frozen since the last full one
    assert passes == ["freeze"] * 5 + ["cap"] + ["freeze"] * 5 + ["cap"]
    assert counts.cap_passes == 2
    assert counts.budget_passes == 0
    assert len(warnings) == 1
    assert "the cap" in warnings[0]


async def test_the_loop_passes_on_its_interval_and_stops_when_cancelled() -> None:
    clock, counts = FakeClock(), gc_tuning.PolicyCounts()
    fake = FakeGc(100_000, clock, 1e-7)
    delays: list[float] = []
    third = asyncio.Event()
    never = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 4:
            third.set()  # three passes done; this wait lasts until the loop is cancelled
            await never.wait()

    policy = gc_tuning.FreezePolicy(
        1e-7, interval_s=0.5, api=fake.api(), clock=clock, sleep=sleep, counts=counts
    )
    task = asyncio.create_task(policy.run())
    await third.wait()
    assert counts.freeze_passes == 3
    assert delays == [0.5] * 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts.freeze_passes == 3


@pytest.mark.usefixtures("restored_gc")
def test_frozen_cycles_leave_every_full_collection_until_the_policy_unfreezes() -> None:
    """Real gc: waiting objects in reference cycles, frozen by a pass, are not walked by a full
    collection (it cannot even free them once dropped); the policy's full pass reclaims them."""

    class Node:
        def __init__(self) -> None:
            self.peer: Node | None = None

    gc.collect()
    counts = gc_tuning.PolicyCounts()
    policy = gc_tuning.FreezePolicy(1e-7, budget_s=3600.0, counts=counts)
    n = 5_000
    pairs = []
    for _ in range(n):
        a, b = Node(), Node()
        a.peer, b.peer = b, a
        pairs.append(a)
    reclaimed: list[weakref.ref[Node]] = []
    refs = [weakref.ref(a, reclaimed.append) for a in pairs]
    frozen_before = gc.get_freeze_count()
    assert policy.step() == "freeze"
    assert gc.get_freeze_count() >= frozen_before + 2 * n
    generation2 = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(a) in generation2 or id(a.peer) in generation2 for a in pairs)

    del pairs, a, b
    assert gc.collect() < n  # a full collection does not walk them: the pairs stay
    assert reclaimed == []
    assert all(ref() is not None for ref in refs)

    assert policy.step() == "budget"  # 10,000 frozen since the last: due, within the budget
    assert len(reclaimed) == n
    assert counts.collected >= 2 * n
    assert gc.get_freeze_count() > 0  # the survivors are frozen again


async def test_the_served_relay_runs_the_policy_and_stops_it_with_itself() -> None:
    """`hitl-relay serve`'s server passes while it serves and leaves no task behind."""
    import uvicorn
    from starlette.applications import Starlette

    from hitl_relay.http_app import RelayServer

    clock, counts = FakeClock(), gc_tuning.PolicyCounts()
    fake = FakeGc(100_000, clock, 1e-7)
    passed = asyncio.Event()
    never = asyncio.Event()

    async def sleep(_: float) -> None:
        if counts.freeze_passes:
            passed.set()
            await never.wait()

    policy = gc_tuning.FreezePolicy(1e-7, api=fake.api(), clock=clock, sleep=sleep, counts=counts)
    config = uvicorn.Config(Starlette(), host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = RelayServer(config, drain_timeout_s=1.0, gc_policy=policy)
    serving = asyncio.create_task(server.serve())
    await asyncio.wait_for(passed.wait(), timeout=10)
    [loop_task] = [t for t in asyncio.all_tasks() if t.get_name() == "gc-freeze-policy"]
    server.should_exit = True
    await asyncio.wait_for(serving, timeout=10)
    assert loop_task.cancelled()
    assert counts.freeze_passes == 1


def test_with_the_policy_running_the_gauge_reads_its_count_without_walking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def walk() -> int:
        raise AssertionError("gc.get_freeze_count() walks every frozen object")

    monkeypatch.setattr(gc_tuning.COUNTS, "frozen", 123_456)
    monkeypatch.setattr(gc, "get_freeze_count", walk)
    assert sample(metrics.REGISTRY, "hitl_gc_frozen_objects") == 123_456


@pytest.mark.parametrize(
    ("field", "default", "bad", "rule"),
    [
        ("gc_freeze_interval_seconds", 1.0, "-1", "greater than or equal to 0"),
        ("gc_freeze_cap_objects", 10_000_000, "1000", "greater than or equal to 100000"),
    ],
)
def test_the_policy_settings_have_their_defaults_and_name_their_rules(
    monkeypatch: pytest.MonkeyPatch, field: str, default: float, bad: str, rule: str
) -> None:
    from hitl_relay.config import Settings

    assert Settings.model_fields[field].default == default
    monkeypatch.setenv(f"HITL_{field.upper()}", bad)
    with pytest.raises(ValueError, match=field) as raised:
        Settings()
    assert rule in str(raised.value)


async def test_freezing_runs_the_policy_for_the_block_and_stops_it() -> None:
    """The harness and the local stack keep as many connections waiting as the relay: they run
    the same policy while they serve, and leave no task behind."""
    threshold = gc.get_threshold()

    def policy_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "gc-freeze-policy"]

    try:
        async with gc_tuning.freezing() as policy:
            assert len(policy_tasks()) == 1
            assert gc.get_threshold()[2] == gc_tuning.DEFAULT_FULL_EVERY
            assert policy.seconds_per_block > 0  # measured by tune()'s collection
            # a measuring process never pauses for a full pass: no budget, a cap never reached
            assert (policy.budget_s, policy.cap_objects) == (0.0, gc_tuning.NEVER)
        assert policy_tasks() == []
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    from hitl_relay.config import Settings

    assert Settings.model_fields["gc_full_collection_every"].default == (
        gc_tuning.DEFAULT_FULL_EVERY
    )
