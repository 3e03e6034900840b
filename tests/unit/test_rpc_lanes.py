"""The adapter's places for RPCs in flight: a call a client is blocked on (an MCP task's handle)
takes the next free place before the ordinary calls already waiting; a wait that is cancelled
(the RPC's time limit) gives up its turn without losing a place."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from hitl_relay.adapters.supabase_store import Places, SupabaseCaseStore


async def test_an_urgent_rpc_takes_the_next_place_before_the_ordinary_ones_waiting() -> None:
    places = Places(1)
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        async with places.place(urgent):
            order.append(name)

    async with places.place():
        ordinary = asyncio.create_task(take("ordinary", False))
        await asyncio.sleep(0)  # a turn of the loop: it queues (checked below)
        urgent = asyncio.create_task(take("urgent", True))
        await asyncio.sleep(0)
        assert places.waiting == 2  # both queued, the ordinary one first
    await asyncio.wait_for(asyncio.gather(ordinary, urgent), 5)
    assert order == ["urgent", "ordinary"]


async def test_a_cancelled_wait_gives_up_its_turn_and_no_place_is_lost() -> None:
    places = Places(1)
    async with places.place():
        waiting = asyncio.create_task(places.place().__aenter__())
        await asyncio.sleep(0)
        assert places.waiting == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert places.waiting == 0
    # The one place is free again: taken at once, twice in a row.
    for _ in range(2):
        async with asyncio.timeout(1), places.place(urgent=True):
            pass


async def test_the_store_passes_urgent_rpcs_through_its_places() -> None:
    class Client:
        def rpc(self, fn: str, params: dict[str, Any]) -> Any:
            class Call:
                async def execute(self) -> Any:
                    return SimpleNamespace(data=fn)

            return Call()

    store = SupabaseCaseStore(Client(), 5.0, max_in_flight=1)  # type: ignore[arg-type]
    assert await store.rpc("hitl_task_create", {}, urgent=True) == "hitl_task_create"
    assert await store.rpc("hitl_task_get", {}) == "hitl_task_get"
