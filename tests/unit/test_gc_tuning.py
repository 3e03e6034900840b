"""The garbage-collector setting and its metrics (hitl_relay.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
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
