"""The calls waiting for their answer, and what happens to all of them at once: the drain on
shutdown, the recovery sweep after a platform failure, and the periodic catch-up read.

After a failure (a call could not open or join, a read failed), the next success starts one
sweep: every waiting call's case is read once, and a call whose answer or clarification is there
ends with it. Realtime may have lost its database connection meanwhile with the sockets still
joined, and then the broadcasts committed in between never come (its broadcast-from-database
replication slot is temporary); without the sweep those calls would find their answer only with
the last read at their deadline.

The sweep reads in batches (`CaseStore.replies`, at most `CATCH_UP_BATCH_MAX` cases per RPC, one
RPC at a time), as the catch-up does: a failure is most likely when the platform is overloaded,
and one read per waiting call then (thousands of RPCs with thousands waiting) made the overload
worse, each timeout starting the next sweep. Only a database without the batched read is swept
call by call.

Realtime also drops broadcasts without telling anyone (over a plan's messages per second: 100/s
on Supabase's Free plan), with nothing failing on the relay's side. So while calls wait, every
`catch_up_interval_s` the cases of those waiting at least that long are read in one batch
(`CaseStore.replies`, at most `CATCH_UP_BATCH_MAX` per read) and each call whose answer or
clarification is there ends with it, as the sweep ends them. Nothing is read while no call waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import anyio
import anyio.abc
from loguru import logger

from hitl_relay.calls import CallRecord
from hitl_relay.errors import HitlError, PlatformUnavailable, SchemaBehind
from hitl_relay.ports import CATCH_UP_BATCH_MAX, Answer, CaseStore, Clarification, Clock
from hitl_relay.resilience import BreakerState, CircuitBreaker

# Reads one recovery sweep runs at once (the store bounds all RPCs too; new calls go first).
SWEEP_CONCURRENCY = 16


class WaitingCalls:
    """The cancel scope of each call waiting for its answer (a table rather than a task per call
    waiting on an event: thousands of calls wait at once), the platform's health as the calls
    see it (told to the breaker), and the sweep that follows a failure."""

    def __init__(
        self,
        store: CaseStore,
        breaker: CircuitBreaker | None,
        clock: Clock,
        catch_up_interval_s: float = 0.0,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self.clock = clock
        self.catch_up_interval_s = catch_up_interval_s
        # Set while serving (`Relay.running()`): the sweep runs there.
        self.background: anyio.abc.TaskGroup | None = None
        self.draining = False
        self._waits: dict[anyio.CancelScope, CallRecord] = {}
        self._since: dict[anyio.CancelScope, float] = {}  # when each began waiting (monotonic)
        self._someone_waits = anyio.Event()  # the catch-up's wake-up from idle
        self._ticking: anyio.CancelScope | None = None  # the catch-up's timer, while it runs
        # A failure seen since the last sweep, whether one runs, and whether another must follow
        # it (a failure and a success during it).
        self._failed_since_sweep = False
        self._sweeping = False
        self._sweep_again = False
        self.sweeps = 0  # sweeps run, for tests and the log
        # Batched reads (RPCs: catch-ups and sweeps) made and calls the catch-up ended, for
        # tests, the log and benchmarks; whether the last catch-up failed (logged once).
        self.batch_reads = 0
        self.caught_up = 0
        self._batched = True  # False once the database showed it lacks the batched read
        self._catch_up_failing = False

    @contextmanager
    def waiting(self, scope: anyio.CancelScope, call: CallRecord) -> Iterator[None]:
        """`call` waits under `scope` meanwhile (a drain or a sweep may cancel it)."""
        self._waits[scope] = call
        self._since[scope] = self.clock.monotonic()
        self._someone_waits.set()
        if self.draining:  # the drain ran between this call's start and now
            call.drained = True
            scope.cancel()
        try:
            yield
        finally:
            del self._waits[scope]
            del self._since[scope]
            if not self._waits and self._ticking is not None:
                self._ticking.cancel()  # no timer while no call waits

    def __len__(self) -> int:
        """How many calls wait now (joined, past their first read)."""
        return len(self._waits)

    def drain(self) -> None:
        """No new waits; every waiting call ends now (its wait reads once more and falls back)."""
        self.draining = True
        for scope, call in list(self._waits.items()):
            call.drained = True
            scope.cancel()

    # ------------------------------------------------------------ the platform's health

    def claim(self) -> bool | None:
        """Ask the breaker for a go: None = refused, True = this call is the half-open probe."""
        if self.breaker is None:
            return False
        half_open = self.breaker.state is BreakerState.HALF_OPEN
        if not self.breaker.allow():
            return None
        return half_open

    @property
    def refusing(self) -> bool:
        """The breaker is open: calls get `platform_unreachable` at once."""
        return self.breaker is not None and self.breaker.is_open

    def record(self, call: CallRecord, *, failure: str | None) -> None:
        """How the platform did for `call`; the first success after a failure starts a sweep."""
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

    def read_failed(self) -> None:
        """A read failed without ending its call: the next success sweeps."""
        self._failed_since_sweep = True

    # ------------------------------------------------------------ the sweep

    def _start_sweep(self) -> None:
        if self._sweeping:
            self._sweep_again = True
        elif self.background is not None:  # only when serving
            self._sweeping = True
            self.background.start_soon(self._sweep)

    async def _sweep(self) -> None:
        """Read every waiting call's case once; end the calls whose answer is there."""
        try:
            while True:
                self._sweep_again = False
                self.sweeps += 1
                waiting = [
                    (s, c)
                    for s, c in self._waits.items()
                    if c.case_id is not None and c.swept is None  # not ended by a read already
                ]
                try:
                    ended = await self._sweep_reads(waiting)
                except PlatformUnavailable:
                    self._failed_since_sweep = True  # the next success sweeps again
                    ended = 0
                logger.bind(waiting=len(waiting), ended=ended).info(
                    "platform back after a failure: read {} waiting call(s), {} had an answer",
                    len(waiting),
                    ended,
                )
                if not self._sweep_again:
                    return
        finally:
            self._sweeping = False

    async def _sweep_reads(self, waiting: list[tuple[anyio.CancelScope, CallRecord]]) -> int:
        if self._batched:
            try:
                return await self._read_batches(waiting)
            except SchemaBehind as e:
                self._batched = False
                logger.warning("the recovery sweep reads call by call: {}", e)
        limiter = anyio.CapacityLimiter(SWEEP_CONCURRENCY)
        ended: list[UUID] = []
        async with anyio.create_task_group() as tg:
            for scope, call in waiting:
                tg.start_soon(self._sweep_one, scope, call, limiter, ended)
        return len(ended)

    async def _sweep_one(
        self,
        scope: anyio.CancelScope,
        call: CallRecord,
        limiter: anyio.CapacityLimiter,
        ended: list[UUID],
    ) -> None:
        assert call.case_id is not None
        async with limiter:
            if scope not in self._waits:
                return  # it ended meanwhile
            try:
                found = await self.store.reply(call.case_id)
            except PlatformUnavailable:
                self._failed_since_sweep = True  # the next success sweeps again
                return
        if found is not None and self._end(scope, call, found):
            ended.append(call.case_id)

    # ------------------------------------------------------------ the periodic catch-up

    async def catch_up_forever(self) -> None:
        """Every `catch_up_interval_s` while calls wait, one catch-up (`catch_up`); idle (no
        timer, no read) while none waits. Runs until cancelled, in the serving task group."""
        while self.catch_up_interval_s > 0:
            if not self._waits:
                self._someone_waits = anyio.Event()
                await self._someone_waits.wait()
            with anyio.CancelScope() as self._ticking:  # the last wait to end cancels it
                await self.clock.sleep(self.catch_up_interval_s)
            self._ticking = None
            if self._waits:
                await self.catch_up()

    async def catch_up(self) -> None:
        """Read the cases of the calls waiting at least `catch_up_interval_s` in batches; end
        each call whose answer or clarification is there. A failed read ends no call: it counts
        like any failed read (the next success sweeps) and is logged once until reads work."""
        if self.draining:
            return
        oldest = self.clock.monotonic() - self.catch_up_interval_s
        due = [
            (scope, call)
            for scope, call in self._waits.items()
            if self._since[scope] <= oldest and call.case_id is not None and call.swept is None
        ]
        try:
            ended = await self._read_batches(due)
        except SchemaBehind as e:
            # Not a failing platform: every tick would fail alike, and counting it as a
            # failed read would sweep every waiting call after each one. Off until restart.
            logger.warning(
                "periodic catch-up read off: {} (apply the migrations: hitl-relay migrate,"
                " or supabase db push --include-all)",
                e,
            )
            self.catch_up_interval_s = 0.0
            self._batched = False
            return
        except HitlError as e:  # also a refusal: older SQL than this relay's must not kill it
            if not self._catch_up_failing:
                logger.bind(waiting=len(due)).warning(
                    "periodic catch-up read of {} waiting call(s) failed: {}",
                    len(due),
                    e,
                )
            self._catch_up_failing = True
            self.read_failed()
            return
        self._catch_up_failing = False
        if ended:
            self.caught_up += ended
            logger.bind(waiting=len(due), ended=ended).info(
                "periodic catch-up read: {} of {} waiting call(s) had an answer "
                "no broadcast brought",
                ended,
                len(due),
            )

    async def _read_batches(self, due: list[tuple[anyio.CancelScope, CallRecord]]) -> int:
        """Read the cases of `due` (`CATCH_UP_BATCH_MAX` per RPC, one RPC at a time) and end
        each call whose answer or clarification is there; how many ended. A store error stops
        the reading (raised): the calls not read yet wait on."""
        ended = 0
        for start in range(0, len(due), CATCH_UP_BATCH_MAX):
            batch = [(s, c) for s, c in due[start : start + CATCH_UP_BATCH_MAX] if s in self._waits]
            case_ids = list(dict.fromkeys(call.case_id for _, call in batch if call.case_id))
            if not case_ids:
                continue  # they all ended meanwhile
            self.batch_reads += 1
            found = await self.store.replies(case_ids)
            for scope, call in batch:
                reply = found.get(call.case_id) if call.case_id is not None else None
                if reply is not None and self._end(scope, call, reply):
                    ended += 1
        return ended

    def _end(
        self, scope: anyio.CancelScope, call: CallRecord, found: Answer | Clarification
    ) -> bool:
        """End a waiting call with what a read found, unless it ended meanwhile."""
        if scope not in self._waits or call.swept is not None:
            return False
        call.swept = found
        scope.cancel()  # its wait ends with what was found
        return True
