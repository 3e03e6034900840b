"""The relay core: a validated question in, the operator's answer (or a fallback line) out.

It knows only the ports (`hitl_relay.ports`) and follows design.md, "The ask, in the order that
loses nothing":

 1. validate (the edge parsed `AskHumanRequest`; the time limit's window is checked here)
 2. circuit breaker open → `platform_unreachable` at once
 3. nobody present on `operators`, if configured: the case is recorded all the same (in the
    queue, its session closed as `no_operator`) and `no_operator` is returned at once with the
    case id, so `get_human_answer` finds a later answer
 4. make the case id (so the channel name is known before the row exists)
 5. join `case:<id>` and open the case concurrently
 6-7. wait (`waiting.CaseWaiter`): catch up once, then the first proven answer or clarification,
    the session's expiry or the deadline
 8. leave the channel
 9. return the answer, the operator's question (`needs_info`), or the fallback line plus the
    case id (`calls.Results`); the session is closed with its outcome right after, by a task
    the relay owns (`Relay.running()`), so the caller does not wait for that round trip; it
    starts once the result is written (`result_first`)

A follow-up after `needs_info` (`request.case_id` set) continues the same case instead of
opening one (steps 4-5 become "join `case:<case_id>` and `continue_case`") and skips step 3:
the case is already with an operator. The waiting calls, the drain on shutdown and the recovery
sweep after a platform failure are `sweep.WaitingCalls`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from uuid import UUID, uuid4

import anyio
import anyio.abc
from loguru import logger

from hitl_relay.calls import CallRecord, Outcome, Results
from hitl_relay.clock import SystemClock
from hitl_relay.errors import HitlError, InvalidRequest, PlatformUnavailable
from hitl_relay.lookups import Lookups
from hitl_relay.models import AskHumanRequest, AskResult, CallHistory
from hitl_relay.observer import LogObserver, Observer
from hitl_relay.opening import Opener, continue_request, open_request, owned_idempotency_key
from hitl_relay.options import RelayOptions
from hitl_relay.ports import (
    Answer,
    Backend,
    Clock,
    OpenCase,
    OpenedCase,
    SessionOutcome,
    Subscription,
)
from hitl_relay.resilience import CircuitBreaker
from hitl_relay.result_first import result_written
from hitl_relay.sweep import WaitingCalls
from hitl_relay.waiting import POLL_INTERVAL_S, CaseWaiter, ProgressCallback

__all__ = ["ProgressCallback", "Relay", "owned_idempotency_key"]


class Relay:
    """Answers `ask_human`, `get_human_answer` and `get_call_history` through the ports."""

    def __init__(
        self,
        backend: Backend,
        options: RelayOptions,
        *,
        clock: Clock | None = None,
        breaker: CircuitBreaker | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.store = backend.store
        self.channel = backend.channel
        self.presence = backend.presence
        self.options = options
        self.clock: Clock = clock or SystemClock()
        self.breaker = breaker
        self.observer: Observer = observer or LogObserver()
        self.calls = WaitingCalls(self.store, breaker, self.clock, options.catch_up_interval_s)
        self.results = Results(options.fallbacks, self.clock.monotonic)
        self.waiter = CaseWaiter(
            self.store, self.channel, self.clock, self.observer, self.calls, options
        )
        self.opener = Opener(self.clock, self.observer, options)
        self.lookups = Lookups(self.store, self.clock, self.calls, self.results)
        self._idle: anyio.Event | None = None  # set when _active drops to 0 while draining
        self._active = 0  # ask() calls in progress
        self.calls_taken = 0  # ask() calls since this relay started

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        """Serve with background closing (a call's session is closed after its result is
        returned), recovery sweeps and the periodic catch-up read. On exit, the closes still
        pending finish (each bounded by the platform timeout). Without it (tests of the core),
        `ask` closes the session before returning."""
        async with anyio.create_task_group() as tg:
            self.calls.background = tg
            catching_up = anyio.CancelScope()  # its own scope: the pending closes must finish
            if self.options.catch_up_interval_s > 0:
                tg.start_soon(self._catch_up, catching_up)
            try:
                yield self
            finally:
                catching_up.cancel()
                self.calls.background = None

    async def _catch_up(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self.calls.catch_up_forever()

    @property
    def draining(self) -> bool:
        return self.calls.draining

    @property
    def active_calls(self) -> int:
        """`ask_human` calls in progress (waiting or finishing)."""
        return self._active

    @property
    def sweeps(self) -> int:
        """Recovery sweeps run since start."""
        return self.calls.sweeps

    async def drain(self, timeout_s: float = 5.0) -> int:
        """Stop taking calls (`platform_unreachable` at once) and end every waiting one now: one
        last read and, without an answer, the `timeout` fallback naming its case (the session
        closes as `cancelled`, so `get_human_answer` or another replica finishes it).

        Returns the number of calls that were still in progress; waits (at most `timeout_s`)
        until they have returned."""
        self.calls.drain()
        in_progress = self._active
        if in_progress:
            logger.bind(waiting=in_progress).info(
                "draining: ending {} waiting call(s) with the fallback", in_progress
            )
            self._idle = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._idle.wait()
        return in_progress

    async def ask(
        self,
        request: AskHumanRequest,
        progress: ProgressCallback | None = None,
        *,
        owner: str | None = None,
        case_id: UUID | None = None,
    ) -> AskResult:
        """Ask an operator; return their answer, or the configured fallback and the case id.

        With `request.case_id` set it is a follow-up after `needs_info`: the question (the
        caller's reply) goes into that case and the call waits on it again.

        Raises `InvalidRequest` for a timeout outside the configured bounds, or for a follow-up
        the platform refuses (`case_id`: no such case, belongs to another call, expired); every
        platform problem becomes a fallback result, never an exception. Cancellation (the client
        went away) closes the session as `cancelled` and leaves the channel; the case stays open.

        `case_id` names the new case in advance (an MCP task records it before the case exists);
        a follow-up's case is `request.case_id`.
        """
        new_case = request.case_id is None  # a follow-up's priority is its case's, not here
        call = CallRecord(
            started=self.clock.monotonic(),
            call_id=request.call_id,
            priority=request.priority if new_case else None,
            urgency=request.urgency if new_case else None,
        )
        outcome: str = "error"  # until known; an unexpected error closes the session `failed`
        self.observer.call_started()
        self._active += 1
        self.calls_taken += 1
        try:
            result = await self._ask(request, progress, call, owner, case_id)
            outcome = result.status
            return result
        except InvalidRequest:
            outcome = "invalid"
            raise
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        finally:
            try:
                if call.opened is not None:
                    if self.calls.background is not None:
                        self.calls.background.start_soon(self._close_after_result, call, outcome)
                    else:
                        await self._close(call, outcome)
            finally:
                self._active -= 1
                if self._active == 0 and self._idle is not None:
                    self._idle.set()
                self.observer.call_ended(call, outcome, self._elapsed(call))

    async def _ask(
        self,
        request: AskHumanRequest,
        progress: ProgressCallback | None,
        call: CallRecord,
        owner: str | None,
        new_case_id: UUID | None = None,
    ) -> AskResult:
        o = self.options
        timeout = o.time_limit(request.timeout_seconds)
        deadline = call.started + timeout
        call.deadline_s = timeout
        if request.case_id is not None:
            call.follow_up_of = UUID(request.case_id)

        if self.calls.draining or self.calls.refusing:
            return self.results.fallback("platform_unreachable", call)
        unattended = (
            call.follow_up_of is None
            and o.no_operator_answers_at_once
            and await self.presence.operators_online() == 0
        )
        probe = self.calls.claim()
        if probe is None:
            return self.results.fallback("platform_unreachable", call)

        if call.follow_up_of is not None:
            call.case_id = call.follow_up_of
            try:
                await self.lookups.check_owner(call.follow_up_of, owner, call)
            except PlatformUnavailable as e:
                self.calls.record(call, failure=str(e))
                return self.results.fallback("platform_unreachable", call)
            request_ = continue_request(request, call.follow_up_of, timeout)
            continue_case = partial(self.store.continue_case, request_)
            return await self._run(call.case_id, continue_case, call, deadline, progress, probe)

        call.case_id = new_case_id or uuid4()
        opening = open_request(request, call.case_id, timeout, o, owner)
        if unattended:
            return await self._record_unattended(opening, call, deadline, probe)
        open_case = partial(self.store.open_case, opening)
        return await self._run(call.case_id, open_case, call, deadline, progress, probe)

    async def _record_unattended(
        self, request: OpenCase, call: CallRecord, deadline: float, probe: bool
    ) -> AskResult:
        """Step 3: nobody on duty. The case is recorded all the same (in the queue for whoever
        comes on duty, its session closed as `no_operator`) and the caller hears the fallback
        at once, with the case id for `get_human_answer`. A retry whose case has an answer
        meanwhile returns that answer."""
        try:
            open_fn = partial(self.store.open_case_no_operator, request)
            opened = await self.opener.open(open_fn, call, deadline, shielded=False)
        except PlatformUnavailable as e:
            self.calls.record(call, failure=str(e))
            logger.bind(call_id=call.call_id).warning("platform unavailable: {}", e.detail)
            return self.results.fallback("platform_unreachable", call)
        except InvalidRequest:
            self.calls.record(call, failure=None)  # the platform answered: it is reachable
            raise
        finally:
            if probe and not call.recorded:
                self.calls.record(call, failure="probe abandoned")
        self.calls.record(call, failure=None)
        if opened.status != "no_operator":
            # A retry: its case may have been answered meanwhile (then its session waits again
            # and is closed `answered`), or another relay is waiting on it.
            found = await self.waiter.catch_up(opened.case_id)
            if isinstance(found, Answer):
                call.opened = opened
                return self.results.finish(found, call)
        return self.results.fallback("no_operator", call, case_id=opened.case_id)

    async def _run(
        self,
        case_id: UUID,
        open_fn: Callable[[], Awaitable[OpenedCase]],
        call: CallRecord,
        deadline: float,
        progress: ProgressCallback | None,
        probe: bool,
    ) -> AskResult:
        """Steps 5-9 around `_open_and_wait`: a platform failure becomes the fallback."""
        try:
            return await self._open_and_wait(case_id, open_fn, call, deadline, progress)
        except PlatformUnavailable as e:
            call.close_as = "failed"
            self.calls.record(call, failure=str(e))
            logger.bind(call_id=call.call_id, case_id=str(call.case_id)).warning(
                "platform unavailable: {}", e.detail
            )
            return self.results.fallback("platform_unreachable", call)
        finally:
            if probe and not call.recorded:
                # A half-open probe abandoned (cancelled) must not leave the breaker stuck.
                self.calls.record(call, failure="probe abandoned")

    async def _open_and_wait(
        self,
        case_id: UUID,
        open_fn: Callable[[], Awaitable[OpenedCase]],
        call: CallRecord,
        deadline: float,
        progress: ProgressCallback | None,
    ) -> AskResult:
        """Steps 5-7; raises PlatformUnavailable when opening or joining failed.

        `open_fn` opens (`open_case`) or continues (`continue_case`) the case `case_id`.
        """
        opened: OpenedCase | None = None
        open_error: HitlError | None = None
        join_error: PlatformUnavailable | None = None
        outcome: Outcome = None
        open_done = anyio.Event()

        async def open_case(done: anyio.Event) -> None:
            nonlocal opened, open_error
            try:
                opened = call.opened = await self.opener.open(open_fn, call, deadline)
            except HitlError as e:
                open_error = e
            finally:
                done.set()

        # The subscription outlives the task group: the group ends once the case is open, so
        # leaving it (anyio checkpoints there, yielding to every task ready) is not on an
        # answer's way out of the wait. Entered and left by hand: an AsyncExitStack would keep
        # about 1 KB more per waiting call (its deque).
        subscription = self.waiter.joined(case_id)
        sub: Subscription | None = None
        try:
            # Step 5: neither the join nor the open waits for the other.
            async with anyio.create_task_group() as tg:
                tg.start_soon(open_case, open_done)
                try:
                    sub = await subscription.__aenter__()
                    await open_done.wait()
                except PlatformUnavailable as e:
                    join_error = e
            del open_done  # set and done with: not held for the whole wait (0.9 KB)
            if sub is not None and opened is not None and opened.case_id == case_id:
                self.calls.record(call, failure=None)
                try:
                    outcome = await self.waiter.wait(sub, opened, call, deadline, progress)
                except PlatformUnavailable as e:
                    join_error = e
        finally:
            if sub is not None:
                # `joined` leaves the channel whatever ended the wait (shielded, bounded).
                await subscription.__aexit__(None, None, None)
        joined = sub is not None

        if open_error is not None:
            if isinstance(open_error, PlatformUnavailable):
                raise open_error
            self.calls.record(call, failure=None)  # the platform answered: it is reachable
            raise open_error
        assert opened is not None  # open_case either set it or an error
        if join_error is not None and not joined:
            # The case is committed and operators can answer it: without its channel the
            # answer is read every POLL_INTERVAL_S until the deadline, as after a channel lost.
            logger.bind(call_id=call.call_id, case_id=str(opened.case_id)).warning(
                "joining the case channel failed, reading the answer every {} s: {}",
                POLL_INTERVAL_S,
                join_error.detail,
            )
            self.calls.record(call, failure=str(join_error))
            outcome = await self.waiter.wait(None, opened, call, deadline, progress)
            return self.results.finish(outcome, call)
        if opened.case_id != case_id:
            # A retried call: the platform returned the existing case; wait on its channel.
            logger.bind(call_id=call.call_id, case_id=str(opened.case_id)).info(
                "joined the existing case of a retried call"
            )
            async with self.waiter.joined(opened.case_id) as sub:
                self.calls.record(call, failure=None)
                outcome = await self.waiter.wait(sub, opened, call, deadline, progress)
        return self.results.finish(outcome, call)

    async def get_answer(self, case_id: str, *, owner: str | None = None) -> AskResult:
        """`get_human_answer`: see `Lookups.get_answer`."""
        return await self.lookups.get_answer(case_id, owner=owner)

    async def call_history(self, call_id: str) -> CallHistory:
        """`get_call_history`: see `Lookups.call_history`."""
        return await self.lookups.call_history(call_id)

    async def _close_after_result(self, call: CallRecord, outcome: str) -> None:
        """Close the session once the caller's result is written (`result_first`)."""
        with anyio.CancelScope(shield=True):
            await result_written()
        await self._close(call, outcome)

    async def _close(self, call: CallRecord, outcome: str) -> None:
        """Close the session with its outcome; shielded so cancellation still closes."""
        assert call.opened is not None
        status: SessionOutcome = "cancelled" if outcome == "cancelled" else call.close_as
        detail = {"outcome": outcome, "waited_ms": self.results.waited_ms(call), **call.detail}
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.options.platform_timeout_s
            try:
                await self.store.close_session(call.opened.session_id, status, detail)
            except HitlError as e:
                logger.bind(call_id=call.call_id, case_id=str(call.opened.case_id)).warning(
                    "closing the session as {} failed: {}", status, e
                )

    def _elapsed(self, call: CallRecord) -> float:
        return max(0.0, self.clock.monotonic() - call.started)
