"""Relay unit-test helpers: a relay on the memory twin, a fake clock, asks in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import anyio

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.config import Settings
from hitl_relay.metrics import MetricsObserver
from hitl_relay.models import AskHumanRequest, AskResult
from hitl_relay.relay import Relay


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"backend": "memory", "progress_interval_seconds": 5.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def ask_args(**overrides: Any) -> dict[str, Any]:
    """An `ask_human` call's arguments, as an agent sends them."""
    values: dict[str, Any] = {
        "question": "Can we deliver order 4411 on Saturday?",
        "session_id": "session-1",
        "call_id": "call-1",
        "agent_id": "agent-1",
    }
    values.update(overrides)
    return values


async def wait_hung_up(platform: MemoryPlatform, case_id: UUID) -> None:
    """Until a call whose client hung up has left its channel and closed its session as
    `cancelled`; the case itself stays open (answerable later)."""
    await platform.wait_until(
        lambda: (
            platform.joined_channels == 0 and platform.session_of(case_id).status == "cancelled"
        ),
        within_s=10,
    )
    assert platform.cases[case_id].status == "open"


def ask_request(**overrides: Any) -> AskHumanRequest:
    return AskHumanRequest.model_validate(ask_args(**overrides))


@dataclass
class Progress:
    updates: list[tuple[float, float, str]] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, elapsed: float, total: float, message: str) -> None:
        self.updates.append((elapsed, total, message))
        self.arrived.set()
        self.arrived = anyio.Event()


@dataclass
class InFlight:
    """One `relay.ask` running in the background; `result` once it returned."""

    result: AskResult | None = None
    error: BaseException | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    async def wait(self, within_s: float = 5.0) -> AskResult:
        with anyio.fail_after(within_s):
            await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@asynccontextmanager
async def asking(
    relay: Relay, *requests: AskHumanRequest, progress: Progress | None = None
) -> AsyncIterator[list[InFlight]]:
    """Run asks concurrently; the block drives the operator side; exit waits for them all."""
    calls = [InFlight() for _ in requests]

    async def run(call: InFlight, request: AskHumanRequest) -> None:
        try:
            with call.scope:
                call.result = await relay.ask(request, progress)
        except Exception as e:  # surfaced by InFlight.wait in the test body
            call.error = e
        finally:
            call.done.set()

    async with anyio.create_task_group() as tg:
        for call, request in zip(calls, requests, strict=True):
            tg.start_soon(run, call, request)
        yield calls
        with anyio.fail_after(5):
            for call in calls:
                await call.done.wait()


@dataclass
class Rig:
    platform: MemoryPlatform
    clock: FakeClock
    relay: Relay
    settings: Settings

    async def waiting(self, calls: int = 1, sleepers: int | None = None) -> None:
        """Until `calls` asks are joined on their case and parked on their deadline."""
        await self.platform.wait_until(
            lambda: (
                self.platform.joined_channels >= calls
                and len(self.platform.cases) >= 1
                and all(self.platform.subscriptions)
            )
        )
        await self.clock.wait_for_sleepers(sleepers if sleepers is not None else calls)


def memory_rig(**settings: Any) -> Rig:
    """A relay on the in-memory twin with a fake clock (`settings` override `make_settings`)."""
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    relay_settings = make_settings(**settings)
    return Rig(
        platform,
        clock,
        Relay(
            platform.backend(),
            relay_settings.relay_options(),
            clock=clock,
            observer=MetricsObserver(),
        ),
        relay_settings,
    )
