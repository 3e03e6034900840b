"""The periodic catch-up read: Realtime drops broadcasts without telling anyone (over a plan's
messages per second), so while calls wait the relay reads their cases in one batch every
`HITL_CATCH_UP_INTERVAL_SECONDS` and an answer committed with no event delivered reaches the
caller after about one interval, not at the deadline. On the memory twin with a fake clock."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from uuid import UUID, uuid4

import anyio
from relay_support import Rig, ask_request, asking, memory_rig

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.calls import CallRecord
from hitl_relay.clock import FakeClock
from hitl_relay.errors import SchemaBehind
from hitl_relay.ports import CATCH_UP_BATCH_MAX, Answer, OpenCase
from hitl_relay.sweep import WaitingCalls

INTERVAL = 5.0  # the default HITL_CATCH_UP_INTERVAL_SECONDS
DEADLINE = 45  # the default timeout_seconds


async def answer_unbroadcast(rig: Rig, case_id: UUID, text: str) -> None:
    """Commit an answer whose broadcast Realtime drops (no event reaches any subscription)."""
    rig.platform.faults.drop_broadcasts = True
    await rig.platform.operator.answer(case_id, text)
    rig.platform.faults.drop_broadcasts = False


def waiting_calls_on(
    stack: ExitStack, calls: WaitingCalls, case_ids: list[UUID]
) -> list[tuple[anyio.CancelScope, CallRecord]]:
    """One waiting call per case (its scope and record), waiting until `stack` closes."""
    waits = []
    for i, case_id in enumerate(case_ids):
        scope, record = anyio.CancelScope(), CallRecord(started=0, call_id=f"c{i}", case_id=case_id)
        stack.enter_context(calls.waiting(scope, record))
        waits.append((scope, record))
    return waits


async def answered_case(platform: MemoryPlatform, text: str) -> UUID:
    opened = await platform.store.open_case(
        OpenCase(
            case_id=uuid4(),
            question="Refund allowed?",
            mcp_session_id="s",
            retell_call_id="c",
            retell_agent_id="a",
            timeout_seconds=DEADLINE,
        )
    )
    await platform.operator.answer(opened.case_id, text)
    return opened.case_id


async def test_an_answer_whose_broadcast_was_dropped_arrives_after_one_interval() -> None:
    rig = memory_rig(catch_up_interval_seconds=INTERVAL)
    async with rig.relay.running(), asking(rig.relay, ask_request()) as (call,):
        await rig.waiting(sleepers=2)  # the call's deadline and the relay's catch-up timer
        case_id = await rig.platform.operator.wait_for_case()
        await answer_unbroadcast(rig, case_id, "Yes, Saturday.")
        await anyio.wait_all_tasks_blocked()
        assert not call.done.is_set()  # nothing told it

        rig.clock.advance(INTERVAL)
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Yes, Saturday.")
    assert result.waited_ms == INTERVAL * 1000  # not DEADLINE s
    assert rig.platform.batches_read == [[case_id]]  # one batched read
    assert rig.relay.calls.caught_up == 1
    assert rig.platform.session_of(case_id).status == "answered"


async def test_without_the_catch_up_such_an_answer_waits_for_the_deadline() -> None:
    """The behaviour the catch-up replaces (HITL_CATCH_UP_INTERVAL_SECONDS=0)."""
    rig = memory_rig(catch_up_interval_seconds=0)
    async with rig.relay.running(), asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await answer_unbroadcast(rig, case_id, "Yes, Saturday.")
        rig.clock.advance(DEADLINE - 1)
        await anyio.wait_all_tasks_blocked()
        assert not call.done.is_set()
        rig.clock.advance(1)
        result = await call.wait()
    assert (result.status, result.waited_ms) == ("answered", DEADLINE * 1000)
    assert rig.platform.batches_read == []


async def test_nothing_is_read_and_no_timer_runs_while_no_call_waits() -> None:
    rig = memory_rig(catch_up_interval_seconds=INTERVAL)
    async with rig.relay.running():
        await anyio.wait_all_tasks_blocked()
        assert rig.clock.sleepers == 0
        # A call answered live, then a quiet minute.
        async with asking(rig.relay, ask_request()) as (call,):
            await rig.waiting(sleepers=2)
            await rig.platform.operator.answer(await rig.platform.operator.wait_for_case(), "Yes")
            assert (await call.wait()).status == "answered"
        await anyio.wait_all_tasks_blocked()
        assert rig.clock.sleepers == 0  # the catch-up went idle with the last wait
        for _ in range(12):
            rig.clock.advance(INTERVAL)
            await anyio.wait_all_tasks_blocked()
    assert "replies" not in rig.platform.rpc_calls
    assert rig.relay.calls.batch_reads == 0


async def test_calls_waiting_less_than_an_interval_are_not_read_yet() -> None:
    rig = memory_rig(catch_up_interval_seconds=INTERVAL)
    ops = rig.platform.operator
    async with rig.relay.running(), asking(rig.relay, ask_request(call_id="a")) as (a,):
        await rig.waiting(sleepers=2)
        case_a = await ops.wait_for_case()
        rig.clock.advance(3)
        async with asking(rig.relay, ask_request(call_id="b")) as (b,):
            await rig.waiting(calls=2, sleepers=3)
            case_b = next(k for k in rig.platform.cases if k != case_a)
            await answer_unbroadcast(rig, case_a, "A: yes.")
            await answer_unbroadcast(rig, case_b, "B: yes.")

            rig.clock.advance(2)  # t = 5: a has waited 5 s, b 2 s
            assert (await a.wait()).answer == "A: yes."
            assert rig.platform.batches_read == [[case_a]]
            assert not b.done.is_set()

            await rig.clock.wait_for_sleepers(2)  # b's deadline and the next catch-up
            rig.clock.advance(INTERVAL)  # t = 10: b has waited 7 s
            result = await b.wait()
    assert (result.answer, result.waited_ms) == ("B: yes.", 7000)
    assert rig.platform.batches_read == [[case_a], [case_b]]


async def test_a_failed_catch_up_read_ends_no_call_and_the_next_success_sweeps() -> None:
    rig = memory_rig(catch_up_interval_seconds=INTERVAL)
    ops = rig.platform.operator
    async with rig.relay.running(), asking(rig.relay, ask_request(call_id="a")) as (a,):
        await rig.waiting(sleepers=2)
        case_a = await ops.wait_for_case()
        await answer_unbroadcast(rig, case_a, "Yes.")
        rig.platform.faults.fail_rpc("replies")

        rig.clock.advance(INTERVAL)
        await rig.platform.wait_until(lambda: "replies" in rig.platform.rpc_calls)
        await anyio.wait_all_tasks_blocked()
        assert not a.done.is_set()  # still waiting: a failed read is not the end of a wait
        assert rig.relay.sweeps == 0

        # Like any failed read: the next success (another call opening) sweeps every wait.
        async with asking(rig.relay, ask_request(call_id="b")) as (b,):
            result = await a.wait()
            assert rig.relay.sweeps == 1
            await rig.waiting(sleepers=2)
            await ops.answer(await ops.wait_for_case(), "Later.")
            assert (await b.wait()).status == "answered"
    assert (result.status, result.answer) == ("answered", "Yes.")
    assert result.waited_ms == INTERVAL * 1000


async def test_more_waiting_calls_than_one_read_takes_are_read_in_batches() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    calls = WaitingCalls(platform.store, None, clock, INTERVAL)
    answered = await answered_case(platform, "Yes.")
    case_ids = [uuid4() for _ in range(CATCH_UP_BATCH_MAX)] + [answered]
    with ExitStack() as stack:
        waits = waiting_calls_on(stack, calls, case_ids)
        clock.advance(INTERVAL)
        await calls.catch_up()
    # The one answered case is in the second read: it was read, and only its call ended.
    assert [len(batch) for batch in platform.batches_read] == [CATCH_UP_BATCH_MAX, 1]
    scope, record = waits[-1]
    assert isinstance(record.swept, Answer)
    assert record.swept.content == "Yes."
    assert scope.cancel_called
    assert not any(scope.cancel_called for scope, _ in waits[:-1])
    assert calls.caught_up == 1


class MissingFunctionStore:
    """A database where `hitl_case_replies` was never applied (e.g. `db push` without
    `--include-all` skipped a migration dated before the newest applied one)."""

    def __init__(self) -> None:
        self.reads = 0

    async def replies(self, case_ids: object) -> dict[UUID, Answer]:
        self.reads += 1
        raise SchemaBehind("hitl_case_replies: PGRST202 Could not find the function")


async def test_a_database_without_the_batched_read_turns_it_off_without_sweeping() -> None:
    """Every tick would fail alike; counted as failed reads, each would make the next success
    read every waiting call one by one (a sweep)."""
    clock = FakeClock()
    store = MissingFunctionStore()
    calls = WaitingCalls(store, None, clock, INTERVAL)  # type: ignore[arg-type]
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        calls.background = tg
        with calls.waiting(scope, CallRecord(started=0, call_id="c", case_id=uuid4())):
            clock.advance(INTERVAL)
            await calls.catch_up()
            await calls.catch_up_forever()  # returns at once: off
            calls.record(CallRecord(started=0, call_id="d"), failure=None)  # a success
            await anyio.wait_all_tasks_blocked()
    assert store.reads == 1
    assert calls.catch_up_interval_s == 0
    assert calls.sweeps == 0  # no sweep: the store has no `reply`, a sweep would have failed
    assert not scope.cancel_called  # the call still waits


async def test_the_recovery_sweep_reads_in_batches_not_one_rpc_per_waiting_call() -> None:
    """A failure is likeliest when the platform is overloaded: a sweep of one read per waiting
    call (thousands of RPCs) made it worse, each timeout starting the next sweep."""
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    calls = WaitingCalls(platform.store, None, clock)  # no periodic catch-up: only the sweep
    answered = await answered_case(platform, "Yes.")
    case_ids = [uuid4() for _ in range(2 * CATCH_UP_BATCH_MAX)] + [answered]
    with ExitStack() as stack:
        waits = waiting_calls_on(stack, calls, case_ids)
        async with anyio.create_task_group() as tg:
            calls.background = tg
            calls.read_failed()
            calls.record(CallRecord(started=0, call_id="next"), failure=None)  # the next success
    assert calls.sweeps == 1
    assert [len(batch) for batch in platform.batches_read] == [CATCH_UP_BATCH_MAX] * 2 + [1]
    assert platform.replies_read == []  # no read call by call
    scope, record = waits[-1]
    assert isinstance(record.swept, Answer)
    assert record.swept.content == "Yes."
    assert scope.cancel_called
    assert not any(scope.cancel_called for scope, _ in waits[:-1])


async def test_a_failed_batch_stops_the_sweep_and_the_next_success_sweeps_again() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    calls = WaitingCalls(platform.store, None, clock)
    answered = await answered_case(platform, "Yes.")
    case_ids = [uuid4() for _ in range(CATCH_UP_BATCH_MAX)] + [answered]
    with ExitStack() as stack:
        waits = waiting_calls_on(stack, calls, case_ids)
        async with anyio.create_task_group() as tg:
            calls.background = tg
            platform.faults.fail_rpc("replies")
            calls.read_failed()
            calls.record(CallRecord(started=0, call_id="next"), failure=None)
        assert platform.batches_read == []  # the first batch failed: nothing more was asked
        assert not waits[-1][0].cancel_called
        async with anyio.create_task_group() as tg:
            calls.background = tg
            calls.record(CallRecord(started=0, call_id="again"), failure=None)
    assert calls.sweeps == 2
    assert [len(batch) for batch in platform.batches_read] == [CATCH_UP_BATCH_MAX, 1]
    assert waits[-1][0].cancel_called


class ReplyOnlyStore:
    """A database without `hitl_case_replies` (a migration skipped): only `reply` works."""

    def __init__(self, answered: UUID) -> None:
        self.answered = answered
        self.batched = 0
        self.single: list[UUID] = []

    async def replies(self, case_ids: object) -> dict[UUID, Answer]:
        self.batched += 1
        raise SchemaBehind("hitl_case_replies: PGRST202 Could not find the function")

    async def reply(self, case_id: UUID) -> Answer | None:
        self.single.append(case_id)
        if case_id != self.answered:
            return None
        return Answer(
            message_id=uuid4(),
            case_id=case_id,
            content="Yes.",
            kind="answer",
            sender_id="operator",
            created_at=datetime.now(UTC),
        )


async def test_without_the_batched_read_the_sweep_reads_call_by_call() -> None:
    answered = uuid4()
    store = ReplyOnlyStore(answered)
    calls = WaitingCalls(store, None, FakeClock())  # type: ignore[arg-type]
    case_ids = [uuid4(), answered]
    with ExitStack() as stack:
        waits = waiting_calls_on(stack, calls, case_ids)
        for sweep in ("first", "second"):
            async with anyio.create_task_group() as tg:
                calls.background = tg
                calls.read_failed()
                calls.record(CallRecord(started=0, call_id=sweep), failure=None)
    assert store.batched == 1  # asked once, then known to be missing
    assert sorted(store.single) == sorted([*case_ids, case_ids[0]])  # the answered one ended
    assert waits[1][0].cancel_called
    assert not waits[0][0].cancel_called
