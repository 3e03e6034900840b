"""The task service's state and the waits of the tasks this replica accepted: the blocking path
run in the background, the result recorded into the task row (retried), the changes this replica
sees, and the status announced to a connection that follows its task."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Self
from uuid import UUID

import anyio
import anyio.abc
import mcp_types as types
from loguru import logger
from mcp.shared.exceptions import MCPError

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.mcp_task_wire import (
    FINISH_RETRY_PAUSES_S,
    MODERN,
    TASKS_EXTENSION,
    Channel,
    Rendering,
    dump,
    effective_status,
    task_json,
)
from hitl_relay.models import AskHumanRequest, AskResult
from hitl_relay.relay import Relay
from hitl_relay.task_store import TERMINAL, TaskRecord, TaskStatus, TaskStore


class TaskWaits:
    """The tasks this relay waits on: its state, the background waits and their results."""

    def __init__(
        self,
        relay: Callable[[], Relay],
        rendering: Rendering,
    ) -> None:
        self._relay = relay
        self._rendering = rendering
        self.store: TaskStore | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._waits: dict[str, anyio.CancelScope] = {}
        # Set when this replica sees a task change (its wait ended, an input response came in):
        # a `tasks/result` blocking here returns at once instead of at its next re-read.
        self._changes: dict[str, anyio.Event] = {}
        # Tasks created over a connection with a channel of its own to the client (stdio):
        # every status change this relay sees is announced on it (`_announce`).
        self._followers: dict[str, tuple[Channel, str]] = {}
        self._server: Any = None

    @property
    def available(self) -> bool:
        return self.store is not None

    @asynccontextmanager
    async def running(self, store: TaskStore | None) -> AsyncIterator[Self]:
        """Serve tasks over `store` (None: this backend keeps no durable state, no tasks)."""
        self.store = store
        if store is not None and self._server is not None:
            # SEP-2663: advertised in the capabilities (server/discover); empty settings.
            self._server.extensions[TASKS_EXTENSION] = {}
        try:
            async with anyio.create_task_group() as tg:
                self._group = tg
                try:
                    yield self
                finally:
                    self._group = None
                    # Shutting down: the waits end, the tasks stay `working` in Postgres and any
                    # other replica answers their polls from the case.
                    tg.cancel_scope.cancel()
        finally:
            self.store = None
            if self._server is not None:
                self._server.extensions.pop(TASKS_EXTENSION, None)

    def _store(self) -> TaskStore:
        if self.store is None:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")
        return self.store

    def live_tasks(self) -> int:
        """The tasks this replica waits for: the load its clients' polls put on it."""
        return len(self._waits)

    def advised(self, task: TaskRecord) -> TaskRecord:
        """`task` with the poll interval this replica suggests now, for as many live tasks as it
        waits for (`RelayOptions.task_poll_interval`): the row keeps the one suggested at
        creation, the client is told the current one with every read."""
        interval = self._relay().options.task_poll_interval(self.live_tasks())
        if interval == task.poll_interval_ms:
            return task
        return replace(task, poll_interval_ms=interval)

    def follow(self, task_id: str, channel: Channel, owner: str) -> None:
        """Announce the task's status changes on `channel` (the connection that created it)."""
        self._followers[task_id] = (channel, owner)

    async def _announce(self, task_id: str) -> None:
        """`notifications/tasks/status` to the connection that created the task, if it has a
        channel of its own (stdio; stateless HTTP has none: there a blocking `tasks/result`
        carries them). Best effort: one read of the task, and polls stay the truth."""
        follower = self._followers.get(task_id)
        if follower is None:
            return
        channel, owner = follower
        try:
            task = await self._store().get_task(task_id, owner)
        except HitlError as e:
            logger.bind(task_id=task_id).debug("status not announced: {}", e)
            return
        if task is None or effective_status(task) in TERMINAL:
            self._followers.pop(task_id, None)
        if task is not None:
            await channel.notify("notifications/tasks/status", task_json(self.advised(task)))

    def _start_wait(
        self, record: TaskRecord, request: AskHumanRequest, case_id: UUID, key: str | None
    ) -> None:
        """`key`: the API key's fingerprint, so the task's case belongs to the key as a blocking
        call's does (a follow-up or `get_human_answer` with another key is refused)."""
        if self._group is None:
            raise MCPError(code=types.INTERNAL_ERROR, message="The relay is not serving tasks")
        scope = anyio.CancelScope()
        self._waits[record.id] = scope
        self._group.start_soon(self._wait, record, request, case_id, key, scope)

    async def _wait(
        self,
        record: TaskRecord,
        request: AskHumanRequest,
        case_id: UUID,
        key: str | None,
        scope: anyio.CancelScope,
    ) -> None:
        """The accepting relay's wait: the blocking path, then the result into the task row."""
        relay: Relay = self._relay()
        try:
            with scope:
                result: AskResult = await relay.ask(request, None, owner=key, case_id=case_id)
                if relay.draining:
                    # Shutting down: the fallback is this replica's, not the task's; leave the
                    # task working for the replicas that stay.
                    return
                if result.status == "needs_info":
                    # input_required, read from the case by every poll; the caller's reply
                    # (2025-11-25: the elicitation's response; 2026-07-28: tasks/update)
                    # continues the case.
                    return
                rendered = self._rendering.render(result)
                status: TaskStatus = (
                    "failed" if rendered.is_error and record.era != MODERN else "completed"
                )
                with anyio.CancelScope(shield=True):
                    await self._finish(
                        record.id,
                        status,
                        None,
                        dump(rendered),
                        UUID(result.case_id) if result.case_id else None,
                    )
        except InvalidRequest as e:
            # A follow-up the platform refused (no such case, another call's case, expired).
            with anyio.CancelScope(shield=True):
                await self._finish(
                    record.id,
                    "failed" if record.era != MODERN else "completed",
                    "Invalid arguments.",
                    dump(self._rendering.render_invalid(e)),
                    None,
                )
        except HitlError as e:
            logger.bind(task_id=record.id).warning("task result not recorded: {}", e)
        finally:
            self._waits.pop(record.id, None)
            self._changed(record.id)
            if record.id in self._followers and not relay.draining:
                with anyio.CancelScope(shield=True):
                    await self._announce(record.id)

    async def _finish(
        self,
        task_id: str,
        status: TaskStatus,
        status_message: str | None,
        result: Mapping[str, Any],
        case_id: UUID | None,
    ) -> None:
        """Record the result, trying again after a failed RPC: a result that is not recorded
        leaves a task whose case never opened `working` until its deadline (there is no reply
        for a poll to derive it from). Raises the last `HitlError`."""
        for attempt, pause in enumerate((*FINISH_RETRY_PAUSES_S, None)):
            try:
                await self._store().finish_task(task_id, status, status_message, result, case_id)
                return
            except HitlError as e:
                if pause is None:
                    raise
                logger.bind(task_id=task_id).info("recording the result, again: {}", e)
                await anyio.sleep(pause * (1 + attempt))  # back-off before the next attempt

    def _changed(self, task_id: str) -> None:
        event = self._changes.pop(task_id, None)
        if event is not None:
            event.set()

    async def _next_change(self, task_id: str, timeout_s: float) -> None:
        """Until this replica sees the task change, or `timeout_s` (another replica's change is
        seen by re-reading)."""
        event = self._changes.setdefault(task_id, anyio.Event())
        try:
            with anyio.move_on_after(timeout_s):
                await event.wait()
        finally:
            # Nothing kept for a task whose change another replica saw (or none did).
            if not event.is_set() and self._changes.get(task_id) is event:
                del self._changes[task_id]
