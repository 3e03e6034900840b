"""The relay core: a validated question in, the operator's answer (or a fallback line) out.

It knows only the ports (`hitl_relay.ports`) and follows design.md, "The ask, in the order that
loses nothing":

 1. validate (the edge parsed `AskHumanRequest`; the deadline bounds are checked here)
 2. circuit breaker open → `platform_unreachable` at once
 3. nobody present on `operators` (cached presence), if configured: the case is recorded all
    the same (`open_case_no_operator`: in the queue for whoever comes on duty, its session
    closed as `no_operator`) and `no_operator` is returned at once with the case id, so
    `get_human_answer` finds a later answer as after a timeout
 4. make the case id (so the channel name is known before the row exists)
 5. join `case:<id>` and `open_case` concurrently
 6. catch-up read once both are done: the answer, else a pending clarification
 7. await the first answer, clarification or the deadline; progress while waiting; after a
    reconnect, catch up again; if the channel is lost for good, fall back to reading every second
 8. leave the channel (synchronous: the adapter sends the leave in the background)
 9. return the answer, the operator's question (`needs_info`), or the fallback line plus the
    case id for `get_human_answer`; the session is closed with its outcome right after, by a
    task the relay owns (`Relay.running()`), so the caller does not wait for that round trip
    (the answer is already decided in the database; a close that never happens is done by
    the expiry job)

After a platform failure (a call could not open or join, a read failed), the next success
starts one sweep: every waiting call's case is read once, and a call whose answer or
clarification is there ends with it. Realtime may have lost its database connection meanwhile
with the sockets still joined, and then the broadcasts committed in between never come (its
broadcast-from-database replication slot is temporary); without the sweep those calls would
find their answer only with the last read at their deadline.

Shutdown (`Relay.drain()`, on SIGTERM): no new calls are taken (`platform_unreachable` at
once), every waiting call ends now with one last read and, without an answer, the `timeout`
fallback naming its case (the session closes as `cancelled`, reason "relay shutting down"), so
`get_human_answer` or another replica finishes it; then the pending closes are awaited.

The clarification loop (issue 10): an operator's question back (a human `clarification`
message) ends the wait with `needs_info`; the session closes as `needs_info`. The agent asks the
caller and calls again with `case_id`: steps 4-5 become "join `case:<case_id>` and
`continue_case` concurrently" (the reply lands in the same case, a new session waits) and the
rest is the same, so an answer that arrived in between is returned by the catch-up read at once.
An answer always wins over a clarification. Follow-ups skip the presence check (3): the case is
already with an operator, and recording the caller's reply matters more than an early fallback.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal
from uuid import UUID, uuid4

import anyio
import anyio.abc
from loguru import logger

from hitl_relay import metrics
from hitl_relay.clock import SystemClock
from hitl_relay.config import Settings
from hitl_relay.errors import HitlError, InvalidRequest, PlatformUnavailable
from hitl_relay.models import (
    AskHumanRequest,
    AskResult,
    CallHistory,
    Status,
    ThreadExchange,
    ThreadItem,
)
from hitl_relay.ports import (
    Answer,
    Backend,
    Clarification,
    Clock,
    ContinueCase,
    HumanMessage,
    OpenCase,
    OpenedCase,
    Reconnected,
    SessionEvent,
    SessionOutcome,
    Subscription,
    ThreadEntry,
    WakeUp,
)
from hitl_relay.resilience import BreakerState, CircuitBreaker, retry_until


def owned_idempotency_key(owner: str | None, request: AskHumanRequest) -> str | None:
    """The idempotency key of a case opened for `owner`: the platform's default (call id +
    sha256 of the question) behind the owner, so a retry with the same API key joins its case
    and `CaseStore.owned` can tell whose it is. None without an owner (the platform's
    default)."""
    if owner is None:
        return None
    digest = hashlib.sha256(request.question.encode()).hexdigest()
    return f"{owner}:{request.call_id}:{digest}"


# (elapsed seconds, total seconds, message) → sent as an MCP progress notification.
# Must not raise: a client that went away is the caller's business, not the wait's.
ProgressCallback = Callable[[float, float, str], Awaitable[None]]

# How long opening a case may be retried before the call falls back: a voice call cannot wait
# for an outage: it hears platform_unreachable within about a second.
OPEN_RETRY_BUDGET_S = 1.0
# The last catch-up read at the deadline may delay the fallback by at most this much.
FINAL_READ_BUDGET_S = 0.5
# When the channel is lost for good, the answer is read this often until the deadline.
POLL_INTERVAL_S = 1.0
# Reads one recovery sweep runs at once (the store bounds all RPCs too; new calls go first).
SWEEP_CONCURRENCY = 16

_Expired = Literal["expired"]
# How a wait ends: the answer, the operator's question back, the session expired, or None (the
# deadline passed).
_Outcome = Answer | Clarification | _Expired | None


@dataclass
class _Call:
    """What one `ask` has learnt so far; read by the `finally` that closes the session."""

    started: float
    call_id: str
    case_id: UUID | None = None
    # The case a follow-up continues: it exists already, so every result names it.
    follow_up_of: UUID | None = None
    # This call's own time limit in seconds (stated in the result).
    deadline_s: int | None = None
    opened: OpenedCase | None = None
    close_as: SessionOutcome = "failed"
    detail: dict[str, Any] = field(default_factory=dict)
    # The breaker was told how the platform did for this call (success or failure).
    recorded: bool = False
    # The wait was ended by `Relay.drain()` (the relay is shutting down).
    drained: bool = False
    # The wait was ended by a recovery sweep that read this answer or clarification.
    swept: Answer | Clarification | None = None
    # For the per-call log line: tool call → case opened, answer committed → relay has it (live
    # answers only), and the case's priority and urgency.
    create_ms: int | None = None
    delivery_ms: int | None = None
    priority: int | None = None
    urgency: str | None = None


class Relay:
    """Answers `ask_human` and `get_human_answer` through the platform ports."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        *,
        clock: Clock | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.store = backend.store
        self.channel = backend.channel
        self.presence = backend.presence
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.breaker = breaker
        # Set by `running()`: closes sessions after the result is returned.
        self._background: anyio.abc.TaskGroup | None = None
        self._draining = False
        # The cancel scope of each call waiting for its answer: `drain` ends them all. (A table
        # rather than a task per call waiting on an event: thousands of calls wait at once.)
        self._waits: dict[anyio.CancelScope, _Call] = {}
        # The recovery sweep (module docstring): a failure seen since the last one, whether one
        # runs, and whether another must follow it (a failure and a success during it).
        self._failed_since_sweep = False
        self._sweeping = False
        self._sweep_again = False
        self.sweeps = 0  # sweeps run, for tests and the log
        self._idle: anyio.Event | None = None  # set when _active drops to 0 while draining
        self._active = 0  # ask() calls in progress
        self.calls_taken = 0  # ask() calls since this relay started

    # ---------------------------------------------------------------- lifecycle

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        """Serve with background closing: a call's session is closed after its result is
        returned. On exit, the closes still pending finish (each bounded by the platform
        timeout). Without it (tests of the core), `ask` closes the session before returning."""
        async with anyio.create_task_group() as tg:
            self._background = tg
            try:
                yield self
            finally:
                self._background = None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def active_calls(self) -> int:
        """`ask_human` calls in progress (waiting or finishing)."""
        return self._active

    async def drain(self, timeout_s: float = 5.0) -> int:
        """Stop taking calls and end every waiting one now (see the module docstring).

        Returns the number of calls that were still in progress; waits (at most `timeout_s`)
        until they have returned."""
        self._draining = True
        for scope, call in list(self._waits.items()):
            call.drained = True
            scope.cancel()
        in_progress = self._active
        if in_progress:
            logger.bind(waiting=in_progress).info(
                "draining: ending {} waiting call(s) with the fallback", in_progress
            )
            self._idle = anyio.Event()
            with anyio.move_on_after(timeout_s):
                await self._idle.wait()
        return in_progress

    # ---------------------------------------------------------------- ask_human

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
        call = _Call(
            started=self.clock.monotonic(),
            call_id=request.call_id,
            priority=request.priority if new_case else None,
            urgency=request.urgency if new_case else None,
        )
        outcome: str = "error"  # until known; an unexpected error closes the session `failed`
        metrics.waiting_calls.inc()
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
                    if self._background is not None:
                        self._background.start_soon(self._close, call, outcome)
                    else:
                        await self._close(call, outcome)
            finally:
                self._active -= 1
                if self._active == 0 and self._idle is not None:
                    self._idle.set()
                self._account(call, outcome)

    async def _ask(
        self,
        request: AskHumanRequest,
        progress: ProgressCallback | None,
        call: _Call,
        owner: str | None,
        new_case_id: UUID | None = None,
    ) -> AskResult:
        s = self.settings
        timeout = request.timeout_seconds or s.default_timeout_seconds
        if not s.min_timeout_seconds <= timeout <= s.max_timeout_seconds:
            raise InvalidRequest(
                "timeout_seconds",
                f"must be between {s.min_timeout_seconds} and {s.max_timeout_seconds}",
            )
        deadline = call.started + timeout
        call.deadline_s = timeout
        if request.case_id is not None:
            call.follow_up_of = UUID(request.case_id)

        if self._draining or (self.breaker is not None and self.breaker.is_open):
            return self._fallback("platform_unreachable", call)
        unattended = (
            call.follow_up_of is None
            and s.no_operator_answers_at_once
            and await self.presence.operators_online() == 0
        )
        probe = self._claim_platform()
        if probe is None:
            return self._fallback("platform_unreachable", call)

        if call.follow_up_of is not None:
            call.case_id = call.follow_up_of
            try:
                await self._check_owner(call.follow_up_of, owner, call)
            except PlatformUnavailable as e:
                self._record(call, failure=str(e))
                return self._fallback("platform_unreachable", call)
            continue_request = ContinueCase(
                case_id=call.follow_up_of,
                question=request.question,
                mcp_session_id=request.session_id,
                retell_call_id=request.call_id,
                retell_agent_id=request.agent_id,
                timeout_seconds=timeout,
            )
            continue_case = partial(self.store.continue_case, continue_request)
            return await self._run(call.case_id, continue_case, call, deadline, progress, probe)

        call.case_id = new_case_id or uuid4()
        open_request = OpenCase(
            case_id=call.case_id,
            question=request.question,
            context=request.context,
            mcp_session_id=request.session_id,
            retell_call_id=request.call_id,
            retell_agent_id=request.agent_id,
            caller_info=request.caller_info,
            priority=request.priority,
            urgency=request.urgency,
            conversation_history=[t.model_dump() for t in request.conversation_history],
            timeout_seconds=timeout,
            case_ttl_seconds=s.case_ttl_seconds,
            # Option B: the answer (or timeout) is also POSTed there, signed (hitl_relay.callbacks).
            callback_url=s.callback_url,
            webhook_secret=s.callback_secret.get_secret_value() if s.callback_secret else None,
            idempotency_key=owned_idempotency_key(owner, request),
            options=request.options,
            skills=request.skills or (),
        )
        if unattended:
            return await self._record_unattended(open_request, call, deadline, probe)
        open_case = partial(self.store.open_case, open_request)
        return await self._run(call.case_id, open_case, call, deadline, progress, probe)

    async def _record_unattended(
        self, request: OpenCase, call: _Call, deadline: float, probe: bool
    ) -> AskResult:
        """Step 3: nobody on duty. The case is recorded all the same (in the queue for whoever
        comes on duty, its session closed as `no_operator`) and the caller hears the fallback
        at once, with the case id for `get_human_answer`. A retry whose case has an answer
        meanwhile returns that answer."""
        try:
            opened = await retry_until(
                partial(self.store.open_case_no_operator, request),
                deadline=min(deadline, self.clock.monotonic() + OPEN_RETRY_BUDGET_S),
                retry_on=(PlatformUnavailable,),
                clock=self.clock.monotonic,
            )
        except PlatformUnavailable as e:
            self._record(call, failure=str(e))
            logger.bind(call_id=call.call_id).warning("platform unavailable: {}", e.detail)
            return self._fallback("platform_unreachable", call)
        except InvalidRequest:
            self._record(call, failure=None)  # the platform answered: it is reachable
            raise
        finally:
            if probe and not call.recorded:
                self._record(call, failure="probe abandoned")
        self._record(call, failure=None)
        call.case_id = opened.case_id
        created = self.clock.monotonic() - call.started
        metrics.case_creation_seconds.observe(created)
        call.create_ms = round(created * 1000)
        if opened.status != "no_operator":
            # A retry: its case may have been answered meanwhile (then its session waits again
            # and is closed `answered`), or another relay is waiting on it.
            found = await self._catch_up(opened.case_id)
            if isinstance(found, Answer):
                call.opened = opened
                return self._finish(found, call)
        return self._fallback("no_operator", call, case_id=opened.case_id)

    async def _run(
        self,
        case_id: UUID,
        open_fn: Callable[[], Awaitable[OpenedCase]],
        call: _Call,
        deadline: float,
        progress: ProgressCallback | None,
        probe: bool,
    ) -> AskResult:
        """Steps 5-9 around `_open_and_wait`: a platform failure becomes the fallback."""
        try:
            return await self._open_and_wait(case_id, open_fn, call, deadline, progress)
        except PlatformUnavailable as e:
            call.close_as = "failed"
            self._record(call, failure=str(e))
            logger.bind(call_id=call.call_id, case_id=str(call.case_id)).warning(
                "platform unavailable: {}", e.detail
            )
            return self._fallback("platform_unreachable", call)
        finally:
            if probe and not call.recorded:
                # A half-open probe abandoned (cancelled) must not leave the breaker stuck.
                self._record(call, failure="probe abandoned")

    async def _open_and_wait(
        self,
        case_id: UUID,
        open_fn: Callable[[], Awaitable[OpenedCase]],
        call: _Call,
        deadline: float,
        progress: ProgressCallback | None,
    ) -> AskResult:
        """Steps 5-7; raises PlatformUnavailable when opening or joining failed.

        `open_fn` opens (`open_case`) or continues (`continue_case`) the case `case_id`.
        """
        opened: OpenedCase | None = None
        open_error: HitlError | None = None
        join_error: PlatformUnavailable | None = None
        outcome: _Outcome = None
        open_done = anyio.Event()

        async def open_case() -> None:
            nonlocal opened, open_error
            try:
                # Shielded (and bounded): a client that goes away while the case is being
                # committed must still learn its session, or no one closes it `cancelled`.
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + (
                        OPEN_RETRY_BUDGET_S + self.settings.platform_timeout_seconds
                    )
                    opened = await retry_until(
                        open_fn,
                        deadline=min(deadline, self.clock.monotonic() + OPEN_RETRY_BUDGET_S),
                        retry_on=(PlatformUnavailable,),
                        clock=self.clock.monotonic,
                    )
                if opened is None:  # the shield's own bound ran out
                    raise PlatformUnavailable("opening the case took too long")
                call.opened = opened
                call.case_id = opened.case_id
                created = self.clock.monotonic() - call.started
                metrics.case_creation_seconds.observe(created)
                call.create_ms = round(created * 1000)
            except HitlError as e:
                open_error = e
            finally:
                open_done.set()

        # Step 5: neither the join nor the open waits for the other.
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_case)
            try:
                async with self._joined(case_id) as sub:
                    await open_done.wait()
                    if opened is not None and opened.case_id == case_id:
                        self._record(call, failure=None)
                        outcome = await self._wait(sub, opened, call, deadline, progress)
            except PlatformUnavailable as e:
                join_error = e

        if open_error is not None:
            if isinstance(open_error, PlatformUnavailable):
                raise open_error
            self._record(call, failure=None)  # the platform answered: it is reachable
            raise open_error
        assert opened is not None  # open_case either set it or an error
        if join_error is not None:
            call.close_as = "failed"
            raise join_error
        if opened.case_id != case_id:
            # A retried call: the platform returned the existing case; wait on its channel.
            logger.bind(call_id=call.call_id, case_id=str(opened.case_id)).info(
                "joined the existing case of a retried call"
            )
            async with self._joined(opened.case_id) as sub:
                self._record(call, failure=None)
                outcome = await self._wait(sub, opened, call, deadline, progress)
        return self._finish(outcome, call)

    async def _wait(
        self,
        sub: Subscription,
        opened: OpenedCase,
        call: _Call,
        deadline: float,
        progress: ProgressCallback | None,
    ) -> _Outcome:
        """Steps 6-7: catch up, then the first answer or clarification, expiry, or None at the
        deadline."""
        found = await self._catch_up(opened.case_id)
        if found is not None:
            return found
        outcome: _Outcome = None
        total = deadline - call.started
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._cancel_at, tg.cancel_scope, deadline)
            if progress is not None:
                tg.start_soon(self._report_progress, progress, call.started, total)
            self._waits[tg.cancel_scope] = call
            if self._draining:  # drain() ran between this call's start and now
                call.drained = True
                tg.cancel_scope.cancel()
            try:
                while outcome is None:
                    event = await sub.receive()
                    if isinstance(event, HumanMessage) and event.case_id == opened.case_id:
                        if event.is_answer:
                            outcome = event.as_answer()
                            delay = (self.clock.now() - event.created_at).total_seconds()
                            if delay >= 0:
                                metrics.delivery_seconds.observe(delay)
                                call.delivery_ms = round(delay * 1000)
                        elif event.sender_type == "human" and event.kind == "clarification":
                            outcome = await self._confirm_clarification(event)
                    elif isinstance(event, Reconnected | WakeUp):
                        # A wake-up proves nothing: only what the read returns counts.
                        outcome = await self._catch_up(opened.case_id)
                    elif (
                        isinstance(event, SessionEvent)
                        and event.session_id == opened.session_id
                        and event.status == "expired"
                    ):
                        outcome = await self._confirm_expiry(opened.session_id)
            except PlatformUnavailable as e:
                logger.bind(call_id=call.call_id, case_id=str(opened.case_id)).warning(
                    "channel lost, reading the answer every {} s: {}", POLL_INTERVAL_S, e.detail
                )
                self._record(call, failure=str(e))
                outcome = await self._poll(opened.case_id)
            finally:
                del self._waits[tg.cancel_scope]
            tg.cancel_scope.cancel()
        if outcome is None and call.swept is not None:
            return call.swept  # read already: no second read that could fail into a fallback
        if outcome is None:
            # At the deadline: one last read, for an answer committed while the deadline fired.
            with anyio.move_on_after(FINAL_READ_BUDGET_S):
                return await self._catch_up(opened.case_id)
        return outcome

    async def _poll(self, case_id: UUID) -> Answer | Clarification:
        """Read every POLL_INTERVAL_S until an answer or clarification (the deadline cancels)."""
        while True:
            found = await self._catch_up(case_id)
            if found is not None:
                return found
            await self.clock.sleep(POLL_INTERVAL_S)

    async def _catch_up(self, case_id: UUID) -> Answer | Clarification | None:
        """The answer, else the pending clarification, else None (also when a read fails)."""
        try:
            return await self._read(case_id)
        except PlatformUnavailable as e:
            # The channel may still deliver; a failed read is not the end of the wait.
            logger.bind(case_id=str(case_id)).warning("catch-up read failed: {}", e.detail)
            self._failed_since_sweep = True
            return None

    async def _read(self, case_id: UUID) -> Answer | Clarification | None:
        """The answer first (it always wins), then a clarification still awaiting the caller."""
        return await self.store.reply(case_id)

    async def _confirm_clarification(self, event: HumanMessage) -> Answer | Clarification | None:
        """A clarification arrived live: end the wait with it unless the case has an answer
        (which wins) or the question was already replied to (an `ai` message after it: ignore
        it and keep waiting). If the platform cannot be read, the live message stands."""
        try:
            return await self._read(event.case_id)
        except PlatformUnavailable as e:
            logger.bind(case_id=str(event.case_id)).warning(
                "confirming a clarification failed, taking it as sent: {}", e.detail
            )
            return event.as_clarification()

    async def _confirm_expiry(self, session_id: UUID) -> _Outcome:
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

    async def _cancel_at(self, scope: anyio.CancelScope, deadline: float) -> None:
        await self.clock.sleep(deadline - self.clock.monotonic())
        scope.cancel()

    async def _report_progress(
        self, progress: ProgressCallback, started: float, total: float
    ) -> None:
        interval = self.settings.progress_interval_seconds
        while True:
            elapsed = max(0.0, self.clock.monotonic() - started)
            await progress(
                elapsed,
                total,
                f"Waiting for a colleague's answer ({math.floor(elapsed)} s of {total:.0f} s)",
            )
            await self.clock.sleep(interval)

    def _finish(self, outcome: _Outcome, call: _Call) -> AskResult:
        if isinstance(outcome, Answer):
            result = self._from_answer(outcome, call)
            call.close_as = "answered"
            call.detail["message_id"] = str(outcome.message_id)
            return result
        if isinstance(outcome, Clarification):
            call.close_as = "needs_info"
            call.detail["message_id"] = str(outcome.message_id)
            return self._needs_info(outcome, call)
        if call.drained:
            call.close_as = "cancelled"
            call.detail["reason"] = "relay shutting down"
        else:
            call.close_as = "expired" if outcome == "expired" else "timed_out"
        return self._fallback("timeout", call)

    # ---------------------------------------------------------------- get_human_answer

    async def get_answer(self, case_id: str, *, owner: str | None = None) -> AskResult:
        """The answer of an earlier case if there is one now (`pending` if not); never waits.

        Raises `InvalidRequest("case_id", ...)` for a malformed id or a case that does not
        exist (a `pending` there would have the agent ask again and again for nothing). With
        `owner` (an API key's fingerprint) only a case that key opened: any other case id is
        refused as `case_id: no such case`, exactly like an unknown one."""
        started = self.clock.monotonic()
        try:
            case_uuid = UUID(str(case_id))
        except ValueError:
            raise InvalidRequest("case_id", "must be a case id (a UUID)") from None
        call = _Call(started=started, call_id="", case_id=case_uuid)
        if self.breaker is not None and self.breaker.is_open:
            return self._fallback("platform_unreachable", call, case_id=case_uuid)
        try:
            await self._check_owner(case_uuid, owner, call)
            found = await self._read(case_uuid)
        except PlatformUnavailable as e:
            self._record(call, failure=str(e))
            return self._fallback("platform_unreachable", call, case_id=case_uuid)
        if isinstance(found, Clarification):
            return self._needs_info(found, call)
        if found is None:
            try:
                known = await self.store.case_status(case_uuid)
            except PlatformUnavailable as e:
                self._record(call, failure=str(e))
                return self._fallback("platform_unreachable", call, case_id=case_uuid)
            if known is None:
                raise InvalidRequest("case_id", "no such case")
            return AskResult(
                status="pending",
                case_id=str(case_uuid),
                waited_ms=self._waited_ms(call),
                message="No answer yet. You may check again a little later in the call.",
            )
        return self._from_answer(found, call)

    async def _check_owner(self, case_id: UUID, owner: str | None, call: _Call) -> None:
        """Refuse a case another API key opened as if it did not exist (`owner` None: no keys,
        nothing to scope). Raises PlatformUnavailable when the platform cannot say."""
        if owner is None:
            return
        if not await self.store.owned(case_id, owner):
            self._record(call, failure=None)  # the platform answered: it is reachable
            raise InvalidRequest("case_id", "no such case")

    # ---------------------------------------------------------------- get_call_history

    async def call_history(self, call_id: str) -> CallHistory:
        """The call's thread: every question asked in this call, its exchanges and answer."""
        if self.breaker is not None and self.breaker.is_open:
            return _history_unavailable(call_id)
        try:
            entries = await self.store.call_history(call_id)
        except PlatformUnavailable as e:
            self._record(_Call(started=self.clock.monotonic(), call_id=call_id), failure=str(e))
            logger.bind(call_id=call_id).warning("reading the call history failed: {}", e.detail)
            return _history_unavailable(call_id)
        return history_of(call_id, entries)

    # ---------------------------------------------------------------- helpers

    def _from_answer(self, answer: Answer, call: _Call) -> AskResult:
        text = answer.content.strip()
        if answer.kind == "cannot_answer" or not text:
            message = self.settings.fallback_unclear_answer
            if answer.kind == "cannot_answer" and text:
                message += f" (My colleague noted: {text})"
            return self._fallback("unclear_answer", call, message=message, case_id=answer.case_id)
        return AskResult(
            status="answered",
            answer=text,
            case_id=str(answer.case_id),
            waited_ms=self._waited_ms(call),
            deadline_s=call.deadline_s,
            message=text,
            option_index=answer.option_index,
            option=answer.option,
            answered_by=answer.sender_id,
        )

    def _needs_info(self, clarification: Clarification, call: _Call) -> AskResult:
        question = clarification.content.strip()
        return AskResult(
            status="needs_info",
            clarification=question,
            case_id=str(clarification.case_id),
            waited_ms=self._waited_ms(call),
            deadline_s=call.deadline_s,
            message=question,
        )

    def _fallback(
        self,
        status: Status,
        call: _Call,
        *,
        message: str | None = None,
        case_id: UUID | None = None,
    ) -> AskResult:
        texts = {
            "no_operator": self.settings.fallback_no_operator,
            "platform_unreachable": self.settings.fallback_platform_unreachable,
            "timeout": self.settings.fallback_timeout,
            "unclear_answer": self.settings.fallback_unclear_answer,
        }
        if case_id is None:
            # Only a case that exists is worth naming (a follow-up's case exists already).
            case_id = call.opened.case_id if call.opened is not None else call.follow_up_of
        return AskResult(
            status=status,
            case_id=str(case_id) if case_id is not None else None,
            waited_ms=self._waited_ms(call),
            deadline_s=call.deadline_s,
            message=message or texts.get(status, self.settings.fallback_timeout),
        )

    def _waited_ms(self, call: _Call) -> int:
        return max(0, round((self.clock.monotonic() - call.started) * 1000))

    def _claim_platform(self) -> bool | None:
        """Ask the breaker for a go: None = refused, True = this call is the half-open probe."""
        if self.breaker is None:
            return False
        half_open = self.breaker.state is BreakerState.HALF_OPEN
        if not self.breaker.allow():
            return None
        return half_open

    def _record(self, call: _Call, *, failure: str | None) -> None:
        call.recorded = True
        if failure is not None:
            self._failed_since_sweep = True
        elif self._failed_since_sweep:
            self._failed_since_sweep = False
            self._start_sweep()
        if self.breaker is None:
            return
        if failure is None:
            self.breaker.record_success()
        else:
            self.breaker.record_failure(failure)

    def _start_sweep(self) -> None:
        if self._sweeping:
            self._sweep_again = True
        elif self._background is not None:  # only when serving (`running()`)
            self._sweeping = True
            self._background.start_soon(self._sweep)

    async def _sweep(self) -> None:
        """Read every waiting call's case once; end the calls whose answer is there."""
        try:
            while True:
                self._sweep_again = False
                self.sweeps += 1
                waiting = list(self._waits.items())
                limiter = anyio.CapacityLimiter(SWEEP_CONCURRENCY)
                ended: list[UUID] = []
                async with anyio.create_task_group() as tg:
                    for scope, call in waiting:
                        tg.start_soon(self._sweep_one, scope, call, limiter, ended)
                logger.bind(waiting=len(waiting), ended=len(ended)).info(
                    "platform back after a failure: read {} waiting call(s), {} had an answer",
                    len(waiting),
                    len(ended),
                )
                if not self._sweep_again:
                    return
        finally:
            self._sweeping = False

    async def _sweep_one(
        self,
        scope: anyio.CancelScope,
        call: _Call,
        limiter: anyio.CapacityLimiter,
        ended: list[UUID],
    ) -> None:
        assert call.case_id is not None
        async with limiter:
            if scope not in self._waits:
                return  # it ended meanwhile
            try:
                found = await self._read(call.case_id)
            except PlatformUnavailable:
                self._failed_since_sweep = True  # the next success sweeps again
                return
        if found is not None and scope in self._waits:
            ended.append(call.case_id)
            call.swept = found
            scope.cancel()  # its wait ends with what was found

    @asynccontextmanager
    async def _joined(self, case_id: UUID) -> AsyncIterator[Subscription]:
        """The channel subscription, left (shielded, bounded) however the wait ends."""
        cm = self.channel.subscribe(case_id)
        sub = await cm.__aenter__()
        try:
            yield sub
        finally:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.settings.platform_timeout_seconds
                await cm.__aexit__(None, None, None)

    async def _close(self, call: _Call, outcome: str) -> None:
        """Step 8: close the session with its outcome; shielded so cancellation still closes."""
        assert call.opened is not None
        status: SessionOutcome = "cancelled" if outcome == "cancelled" else call.close_as
        detail = {"outcome": outcome, "waited_ms": self._waited_ms(call), **call.detail}
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.settings.platform_timeout_seconds
            try:
                await self.store.close_session(call.opened.session_id, status, detail)
            except HitlError as e:
                logger.bind(call_id=call.call_id, case_id=str(call.opened.case_id)).warning(
                    "closing the session as {} failed: {}", status, e
                )

    def _account(self, call: _Call, outcome: str) -> None:
        waited = max(0.0, self.clock.monotonic() - call.started)
        metrics.waiting_calls.dec()
        if outcome in metrics.OUTCOMES:
            metrics.invocations.labels(outcome=outcome).inc()
            metrics.wait_seconds.labels(outcome=outcome).observe(waited)
        if outcome in metrics.FALLBACK_KINDS:
            metrics.fallbacks.labels(kind=outcome).inc()
        logger.bind(
            call_id=call.call_id,
            case_id=str(call.case_id) if call.case_id else None,
            outcome=outcome,
            waited_ms=round(waited * 1000),
            create_ms=call.create_ms,
            delivery_ms=call.delivery_ms,
            deadline_s=call.deadline_s,
            priority=call.priority,
            urgency=call.urgency,
            follow_up=call.follow_up_of is not None,
        ).info("ask_human {}", outcome)


def history_of(call_id: str, entries: Sequence[ThreadEntry]) -> CallHistory:
    """The agent's view of a call's thread (`get_call_history`)."""
    items = [
        ThreadItem(
            case_id=str(e.case_id),
            question=e.question,
            status=e.status,
            asked_at=e.asked_at.isoformat(),
            answer=e.answer,
            answer_kind=e.answer_kind,
            answered_at=e.answered_at.isoformat() if e.answered_at else None,
            exchanges=[
                ThreadExchange(
                    sender_type=m.sender_type,
                    kind=m.kind,
                    content=m.content,
                    created_at=m.created_at.isoformat(),
                )
                for m in e.exchanges
            ],
        )
        for e in entries
    ]
    if not items:
        message = "No questions were asked to colleagues in this call yet."
    else:
        answered = sum(1 for i in items if i.answer is not None)
        message = f"{len(items)} question(s) asked to colleagues in this call, {answered} answered."
    return CallHistory(status="ok", call_id=call_id, entries=items, message=message)


def _history_unavailable(call_id: str) -> CallHistory:
    return CallHistory(
        status="platform_unreachable",
        call_id=call_id,
        message="The colleagues' system cannot be reached right now; the call history is "
        "unavailable.",
    )


def build_relay(backend: Backend, settings: Settings, *, clock: Clock | None = None) -> Relay:
    """The relay a server runs: the backend's ports, a circuit breaker from the settings
    (its state mirrored on the `hitl_breaker_state` gauge)."""
    clock = clock or SystemClock()
    breaker = CircuitBreaker(
        failure_threshold=settings.breaker_failure_threshold,
        window_s=settings.breaker_window_seconds,
        reset_timeout_s=settings.breaker_reset_seconds,
        clock=clock.monotonic,
    )
    metrics.breaker_state.set(int(breaker.state))
    breaker.on_change(lambda _old, new: metrics.breaker_state.set(int(new)))
    return Relay(backend, settings, clock=clock, breaker=breaker)
