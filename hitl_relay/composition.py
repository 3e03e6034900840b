"""The composition root: the edge's one place that turns the settings into connected parts.

- `open_backend(settings)`: the adapter `HITL_BACKEND` names, connected, as an async context
  manager yielding its ports (`supabase`: `adapters.supabase.supabase_backend`, the supabase-py
  client, the Realtime socket pool and presence on `operators`; `memory`: a fresh
  `MemoryPlatform`, nothing persisted, for tests and demos).
- `build_relay(backend, settings)`: the core with its options, a circuit breaker and the
  Prometheus observer.
- `task_store_for(store)`: the durable MCP task store beside a Postgres-backed case store.
- `build_notifiers(settings)`: the escalation channels the settings configure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from hitl_relay import metrics
from hitl_relay.adapters.notify import EmailNotifier, WebhookNotifier
from hitl_relay.clock import SystemClock
from hitl_relay.config import Settings
from hitl_relay.ports import Backend, Clock, Notifier
from hitl_relay.relay import Relay
from hitl_relay.resilience import CircuitBreaker
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
    # Imported here: the Supabase adapter pulls in supabase-py, which the memory backend (and
    # every test on it) never needs.
    from hitl_relay.adapters.supabase import supabase_backend

    async with supabase_backend(settings.platform_options()) as backend:
        yield backend


def task_store_for(store: object) -> TaskStore | None:
    """The durable MCP task store beside a backend's case store: Postgres-backed stores only
    (the memory backend keeps nothing across processes, so it serves no tasks)."""
    if type(store).__module__ != "hitl_relay.adapters.supabase_store":
        return None
    from hitl_relay.adapters import supabase_tasks

    return supabase_tasks.task_store_for(store)


def build_relay(backend: Backend, settings: Settings, *, clock: Clock | None = None) -> Relay:
    """The relay a server runs: the backend's ports, a circuit breaker from the settings (its
    state mirrored on the `hitl_breaker_state` gauge), the Prometheus observer."""
    clock = clock or SystemClock()
    breaker = CircuitBreaker(
        failure_threshold=settings.breaker_failure_threshold,
        window_s=settings.breaker_window_seconds,
        reset_timeout_s=settings.breaker_reset_seconds,
        clock=clock.monotonic,
    )
    metrics.breaker_state.set(int(breaker.state))
    breaker.on_change(lambda _old, new: metrics.breaker_state.set(int(new)))
    return Relay(
        backend,
        settings.relay_options(),
        clock=clock,
        breaker=breaker,
        observer=metrics.MetricsObserver(),
    )


def build_notifiers(settings: Settings, **extra: Any) -> list[Notifier]:
    """The channels the settings configure (none: escalations alert the consoles only)."""
    notifiers: list[Notifier] = []
    if settings.notify_webhook_url is not None:
        secret = settings.notify_webhook_secret
        notifiers.append(
            WebhookNotifier(
                url=settings.notify_webhook_url.get_secret_value(),
                secret=secret.get_secret_value() if secret else None,
                **extra,
            )
        )
    if settings.notify_smtp_host and settings.notify_email_to:
        password = settings.notify_smtp_password
        notifiers.append(
            EmailNotifier(
                host=settings.notify_smtp_host,
                port=settings.notify_smtp_port,
                sender=settings.notify_email_from,
                recipients=list(settings.notify_email_to),
                username=settings.notify_smtp_username,
                password=password.get_secret_value() if password else None,
                starttls=settings.notify_smtp_starttls,
            )
        )
    return notifiers
