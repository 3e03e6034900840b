"""Session recovery on start (hitl_relay/recovery.py), on the memory twin: the app's lifespan
closes the sessions its instance left waiting before it serves, counts them, and keeps trying in
the background when the platform is down at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import uuid4

import anyio
import pytest
from relay_support import make_settings

from hitl_relay import metrics, recovery
from hitl_relay.adapters.memory import MemoryCaseStore, MemoryPlatform
from hitl_relay.config import Settings, load_settings
from hitl_relay.errors import ConfigError
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend, OpenCase, RecoveredSessions


def opening(call_id: str) -> OpenCase:
    return OpenCase(
        case_id=uuid4(),
        question=f"Question of {call_id}?",
        mcp_session_id=call_id,
        retell_call_id=call_id,
        retell_agent_id="agent-1",
        timeout_seconds=30,
    )


def recovered_total(status: str) -> float:
    value = metrics.REGISTRY.get_sample_value("hitl_recovered_sessions_total", {"status": status})
    return value or 0.0


async def left_waiting_by(platform: MemoryPlatform, instance_id: str) -> list[Any]:
    """Two sessions a dead process of `instance_id` was waiting on, one past its deadline."""
    old_process = MemoryCaseStore(platform, instance_id)
    late = await old_process.open_case(opening("call-late"))
    waiting = await old_process.open_case(opening("call-waiting"))
    platform.sessions[late.session_id].expires_at = platform.clock.now() - timedelta(seconds=1)
    return [late, waiting]


async def test_the_app_recovers_its_instances_sessions_before_serving() -> None:
    platform = MemoryPlatform()
    late, waiting = await left_waiting_by(platform, "relay-a")
    elsewhere = await MemoryCaseStore(platform, "relay-b").open_case(opening("call-b"))
    platform.store.instance_id = "relay-a"  # the restarted process
    settings: Settings = make_settings(api_keys="recovery-key-0123456789", instance_id="relay-a")
    before = recovered_total("expired"), recovered_total("cancelled")

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    async with running(create_app(settings, backend=backend)):
        statuses = {
            name: platform.sessions[opened.session_id].status
            for name, opened in (("late", late), ("waiting", waiting), ("b", elsewhere))
        }
    assert statuses == {"late": "expired", "waiting": "cancelled", "b": "waiting"}
    assert platform.sessions[waiting.session_id].detail == {"reason": "relay restarted"}
    assert platform.cases[waiting.case_id].status == "open"
    assert (recovered_total("expired"), recovered_total("cancelled")) == (
        before[0] + 1,
        before[1] + 1,
    )


async def test_a_platform_down_at_start_postpones_recovery_to_the_background() -> None:
    platform = MemoryPlatform()
    await left_waiting_by(platform, "relay-a")
    platform.faults.fail_rpc("recover_sessions", times=3)
    store = MemoryCaseStore(platform, "relay-a")

    assert await recovery.recover_on_start(store, "relay-a", timeout_s=1.0) is None
    with anyio.fail_after(5):
        done = await recovery.retry_in_background(
            store, "relay-a", first_backoff_s=0.001, max_backoff_s=0.004
        )
    assert done == RecoveredSessions(expired=1, cancelled=1)
    assert platform.rpc_calls.count("recover_sessions") == 4


async def test_background_recovery_gives_up_once_the_relay_serves_calls() -> None:
    """Its own live sessions wait under the same instance id: a late recovery would close them."""
    platform = MemoryPlatform()
    await left_waiting_by(platform, "relay-a")
    platform.faults.fail_rpc("recover_sessions", times=1)
    store = MemoryCaseStore(platform, "relay-a")
    taken = iter([0, 1])

    with anyio.fail_after(5):
        done = await recovery.retry_in_background(
            store, "relay-a", calls_taken=lambda: next(taken), first_backoff_s=0.001
        )
    assert done is None
    assert platform.rpc_calls.count("recover_sessions") == 1  # the failed try only
    assert [s.status for s in platform.sessions.values()] == ["waiting", "waiting"]


async def test_a_store_without_recovery_is_left_alone() -> None:
    class PlainStore:
        pass

    assert await recovery.recover_on_start(PlainStore(), "relay-a", timeout_s=1.0) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("instance_id", ["", "x" * 129])
def test_the_instance_id_setting_is_checked(instance_id: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(backend="memory", instance_id=instance_id)
    assert "HITL_INSTANCE_ID" in str(refused.value)
