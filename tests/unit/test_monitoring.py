"""The background monitor (hitl_relay.monitoring) on the memory twin: presence, readiness,
the expiry job and the event loop's lag land on the gauges the alert rules read."""

from __future__ import annotations

import math
import time

import anyio
import anyio.lowlevel

from hitl_relay import metrics
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.monitoring import LAG_TICK_S, Monitor
from hitl_relay.readiness import ReadinessMonitor


async def test_presence_and_readiness_are_sampled_onto_their_gauges() -> None:
    platform = MemoryPlatform(operators=2, presence_ttl_s=0.0)
    readiness = ReadinessMonitor(platform, None)
    monitor = Monitor(platform.presence, readiness.check, platform.store)
    await monitor.sample()
    assert metrics.REGISTRY.get_sample_value("hitl_operators_online") == 2
    assert metrics.REGISTRY.get_sample_value("hitl_ready") == 1

    platform.present = set()
    platform.schema_version = "20000101000000"  # migrations behind: not ready
    monitor = Monitor(platform.presence, ReadinessMonitor(platform, None).check, None)
    await monitor.sample()
    assert metrics.REGISTRY.get_sample_value("hitl_operators_online") == 0
    assert metrics.REGISTRY.get_sample_value("hitl_ready") == 0


async def test_unknown_presence_is_nan_so_the_no_operator_alert_stays_quiet() -> None:
    monitor = Monitor(MemoryPlatform(operators=None).presence, None, None)
    await monitor.sample()
    assert math.isnan(metrics.REGISTRY.get_sample_value("hitl_operators_online") or 0.0)


async def test_the_expiry_jobs_last_run_is_exported_and_never_is_zero() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    monitor = Monitor(platform.presence, None, platform.store)
    await monitor.sample_expiry()
    assert metrics.REGISTRY.get_sample_value("hitl_expiry_last_run_timestamp_seconds") == 0.0
    platform.expire_sessions()
    await monitor.sample_expiry()
    assert (
        metrics.REGISTRY.get_sample_value("hitl_expiry_last_run_timestamp_seconds")
        == clock.now().timestamp()
    )
    platform.expiry_scheduled = False
    await monitor.sample_expiry()
    assert math.isnan(
        metrics.REGISTRY.get_sample_value("hitl_expiry_last_run_timestamp_seconds") or 0.0
    )


async def test_an_unreadable_expiry_job_is_unknown_not_an_error() -> None:
    platform = MemoryPlatform()
    platform.faults.rpc_down = True
    monitor = Monitor(platform.presence, None, platform.store)
    await monitor.sample_expiry()
    assert math.isnan(
        metrics.REGISTRY.get_sample_value("hitl_expiry_last_run_timestamp_seconds") or 0.0
    )


async def test_a_blocked_event_loop_is_measured_as_lag() -> None:
    before = metrics.REGISTRY.get_sample_value("hitl_event_loop_lag_seconds_count") or 0.0
    slow_before = (
        metrics.REGISTRY.get_sample_value("hitl_event_loop_lag_seconds_bucket", {"le": "0.1"})
        or 0.0
    )
    monitor = Monitor(MemoryPlatform().presence, None, None)
    with anyio.move_on_after(LAG_TICK_S * 2.5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor._watch_lag)
            await anyio.lowlevel.checkpoint()  # the watcher's timer is set
            # The loop blocked past the timer's due time, as by a long garbage collection.
            blocked_until = time.monotonic() + LAG_TICK_S + 0.3
            while time.monotonic() < blocked_until:
                pass
    count = metrics.REGISTRY.get_sample_value("hitl_event_loop_lag_seconds_count") or 0.0
    fast = metrics.REGISTRY.get_sample_value("hitl_event_loop_lag_seconds_bucket", {"le": "0.1"})
    assert count - before >= 1
    # At least one tick was late by more than 0.1 s (the blocked one).
    assert (count - before) - ((fast or 0.0) - slow_before) >= 1
