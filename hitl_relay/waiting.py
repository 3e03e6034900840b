"""Waiting on one case: catch up once, then the first answer or clarification the channel proves,
the session's expiry, or the deadline; progress while waiting; after a reconnect or an unproven
wake-up, read again; if the channel is lost for good, read every second until the deadline."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from uuid import UUID

import anyio
from loguru import logger

from hitl_relay.calls import CallRecord, Outcome
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.observer import Observer
from hitl_relay.options import RelayOptions
from hitl_relay.ports import (
    Answer,
    CaseChannel,
    CaseStore,
    Clarification,
    Clock,
    HumanMessage,
    OpenedCase,
    Reconnected,
    SessionEvent,
    Subscription,
    WakeUp,
)
from hitl_relay.sweep import WaitingCalls

# (elapsed seconds, total seconds, message) → sent as an MCP progress notification.
# Must not raise: a client that went away is the caller's business, not the wait's.
ProgressCallback = Callable[[float, float, str], Awaitable[None]]

# The last catch-up read at the deadline may delay the fallback by at most this much.
FINAL_READ_BUDGET_S = 0.5
# When the channel is lost for good, the answer is read this often until the deadline.
POLL_INTERVAL_S = 1.0


class CaseWaiter:
    """Joins case channels and waits on them, reading the platform whenever an event proves
    nothing by itself."""

    def __init__(
        self,
        store: CaseStore,
        channel: CaseChannel,
        clock: Clock,
        observer: Observer,
        calls: WaitingCalls,
        options: RelayOptions,
    ) -> None:
        self.store = store
        self.channel = channel
        self.clock = clock
        self.observer = observer
        self.calls = calls
        self.options = options

    @asynccontextmanager
    async def joined(self, case_id: UUID) -> AsyncIterator[Subscription]:
        """The channel subscription, left (shielded, bounded) however the wait ends."""
        cm = self.channel.subscribe(case_id)
        sub = await cm.__aenter__()
        try:
            yield sub
        finally:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.options.platform_timeout_s
                await cm.__aexit__(None, None, None)

    async def wait(
        self,
        sub: Subscription | None,
        opened: OpenedCase,
        call: CallRecord,
        deadline: float,
        progress: ProgressCallback | None,
    ) -> Outcome:
        """Catch up, then the first answer or clarification, expiry, or None at the deadline.
        Without a subscription (its join failed) the answer is read every POLL_INTERVAL_S."""
        found = await self.catch_up(opened.case_id)
        if found is not None:
            return found
        outcome: Outcome = None
        # The deadline is a scope the clock cancels, not a task: the answer's way out of the
        # wait (and every waiting call's upkeep) has no task to cancel and join.
        with (
            self.clock.cancel_at(deadline) as scope,
            self.calls.waiting(scope, call),
        ):
            async with self._reporting(progress, call.started, deadline - call.started):
                try:
                    if sub is None:
                        outcome = await self._poll(opened.case_id)
                    else:
                        outcome = await self._listen(sub, opened, call)
                except PlatformUnavailable as e:
                    logger.bind(call_id=call.call_id, case_id=str(opened.case_id)).warning(
                        "channel lost, reading the answer every {} s: {}",
                        POLL_INTERVAL_S,
                        e.detail,
                    )
                    self.calls.record(call, failure=str(e))
                    outcome = await self._poll(opened.case_id)
        if outcome is None and call.swept is not None:
            return call.swept  # read already: no second read that could fail into a fallback
        if outcome is None:
            # At the deadline: one last read, for an answer committed while the deadline fired.
            with anyio.move_on_after(FINAL_READ_BUDGET_S):
                return await self.catch_up(opened.case_id)
        return outcome

    async def _listen(self, sub: Subscription, opened: OpenedCase, call: CallRecord) -> Outcome:
        outcome: Outcome = None
        while outcome is None:
            event = await sub.receive()
            if isinstance(event, HumanMessage) and event.case_id == opened.case_id:
                if event.is_answer:
                    outcome = event.as_answer()
                    delay = (self.clock.now() - event.created_at).total_seconds()
                    if delay >= 0:
                        self.observer.answer_delivered(delay)
                        call.delivery_ms = round(delay * 1000)
                elif event.sender_type == "human" and event.kind == "clarification":
                    outcome = await self._confirm_clarification(event)
            elif isinstance(event, Reconnected | WakeUp):
                # A wake-up proves nothing: only what the read returns counts.
                outcome = await self.catch_up(opened.case_id)
            elif (
                isinstance(event, SessionEvent)
                and event.session_id == opened.session_id
                and event.status == "expired"
            ):
                outcome = await self._confirm_expiry(opened.session_id)
        return outcome

    async def _poll(self, case_id: UUID) -> Answer | Clarification:
        """Read every POLL_INTERVAL_S until an answer or clarification (the deadline cancels)."""
        while True:
            found = await self.catch_up(case_id)
            if found is not None:
                return found
            await self.clock.sleep(POLL_INTERVAL_S)

    async def catch_up(self, case_id: UUID) -> Answer | Clarification | None:
        """The answer, else the pending clarification, else None (also when a read fails)."""
        try:
            return await self.store.reply(case_id)
        except PlatformUnavailable as e:
            # The channel may still deliver; a failed read is not the end of the wait.
            logger.bind(case_id=str(case_id)).warning("catch-up read failed: {}", e.detail)
            self.calls.read_failed()
            return None

    async def _confirm_clarification(self, event: HumanMessage) -> Answer | Clarification | None:
        """A clarification arrived live: end the wait with it unless the case has an answer
        (which wins) or the question was already replied to (an `ai` message after it: ignore
        it and keep waiting). If the platform cannot be read, the live message stands."""
        try:
            return await self.store.reply(event.case_id)
        except PlatformUnavailable as e:
            logger.bind(case_id=str(event.case_id)).warning(
                "confirming a clarification failed, taking it as sent: {}", e.detail
            )
            return event.as_clarification()

    async def _confirm_expiry(self, session_id: UUID) -> Outcome:
        """An `expired` event of this wait's session: end the wait only if the session is expired
        now (the event may be an earlier life's, replayed after a retry re-opened the session).
        If the platform cannot be read, keep waiting: the deadline still ends the wait."""
        try:
            status = await self.store.session_status(session_id)
        except PlatformUnavailable as e:
            logger.bind(session_id=str(session_id)).warning(
                "confirming a session expiry failed, waiting on: {}", e.detail
            )
            return None
        return "expired" if status == "expired" else None

    @asynccontextmanager
    async def _reporting(
        self, progress: ProgressCallback | None, started: float, total: float
    ) -> AsyncIterator[None]:
        """Progress reported meanwhile, for a caller that asked for it."""
        if progress is None:
            yield
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._report_progress, progress, started, total)
            yield
            tg.cancel_scope.cancel()

    async def _report_progress(
        self, progress: ProgressCallback, started: float, total: float
    ) -> None:
        interval = self.options.progress_interval_s
        while True:
            elapsed = max(0.0, self.clock.monotonic() - started)
            await progress(
                elapsed,
                total,
                f"Waiting for a colleague's answer ({math.floor(elapsed)} s of {total:.0f} s)",
            )
            await self.clock.sleep(interval)
