"""Ports implementations: Supabase (production) and in-memory (tests).

`open_backend(settings)` picks one by `settings.backend` (`HITL_BACKEND`):

- `supabase` (default): `hitl_relay.adapters.supabase.supabase_backend(settings)`, an async
  context manager that connects (supabase-py `AsyncClient`, Realtime socket pool, presence on
  `operators`), yields a `Backend`, and disconnects on exit.
- `memory`: a fresh `MemoryPlatform` (no persistence; tests and demos only).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from hitl_relay.config import Settings
    from hitl_relay.ports import Backend
    from hitl_relay.task_store import TaskStore


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[Backend]:
    """Connect the adapter `settings.backend` names; yield its ports; disconnect on exit."""
    if settings.backend == "memory":
        from hitl_relay.adapters.memory import MemoryPlatform

        platform = MemoryPlatform(presence_ttl_s=settings.presence_cache_ttl_seconds)
        async with anyio.create_task_group() as tg:
            if settings.memory_auto_answer:
                await platform.operator.go_online()
                tg.start_soon(
                    platform.operator.answer_every_case,
                    settings.memory_auto_answer,
                    settings.memory_auto_answer_delay_seconds,
                )
            yield platform.backend()
            tg.cancel_scope.cancel()
        return
    # Imported by name: the Supabase adapter pulls in supabase-py, which tests on the memory
    # backend never need.
    supabase = importlib.import_module("hitl_relay.adapters.supabase")
    backend_cm: AbstractAsyncContextManager[Backend] = supabase.supabase_backend(settings)
    async with backend_cm as backend:
        yield backend


def task_store_for(store: object) -> TaskStore | None:
    """The durable MCP task store beside a backend's case store: Postgres-backed stores only
    (the memory backend keeps nothing across processes, so it serves no tasks)."""
    if type(store).__module__ != "hitl_relay.adapters.supabase_store":
        return None
    supabase_tasks = importlib.import_module("hitl_relay.adapters.supabase_tasks")
    found: TaskStore | None = supabase_tasks.task_store_for(store)
    return found
