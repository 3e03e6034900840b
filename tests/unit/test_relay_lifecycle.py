"""The relay's lifecycle: sessions closed after the result is returned, and the drain that
ends every waiting call on shutdown (SIGTERM) without losing an answer."""

from __future__ import annotations

from uuid import UUID

import anyio
from anyio import wait_all_tasks_blocked
from relay_support import Rig, ask_request, asking, make_settings
from waiting import wait_until

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.metrics import MetricsObserver
from hitl_relay.relay import Relay
from hitl_relay.result_first import serving_request


def make_rig() -> Rig:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock)
    settings = make_settings()
    return Rig(
        platform,
        clock,
        Relay(
            platform.backend(), settings.relay_options(), clock=clock, observer=MetricsObserver()
        ),
        settings,
    )


async def test_the_answer_is_returned_before_the_session_close_round_trip() -> None:
    rig = make_rig()
    rig.platform.faults.close_gate = gate = anyio.Event()
    async with rig.relay.running():
        async with asking(rig.relay, ask_request()) as (call,):
            await rig.waiting()
            case_id = await rig.platform.operator.wait_for_case()
            await rig.platform.operator.answer(case_id, "Yes.")
            # The close is held: the result must arrive anyway.
            result = await call.wait()
        assert result.status == "answered"
        assert rig.platform.session_of(case_id).status == "waiting"
        gate.set()
    # Leaving `running()` waits for the pending close.
    assert rig.platform.session_of(case_id).status == "answered"
    assert rig.platform.joined_channels == 0


async def test_served_over_http_the_session_closes_once_the_result_is_written() -> None:
    rig = make_rig()
    async with rig.relay.running():
        with serving_request() as written:  # what the /mcp edge does for each request
            async with asking(rig.relay, ask_request()) as (call,):
                await rig.waiting()
                case_id = await rig.platform.operator.wait_for_case()
                await rig.platform.operator.answer(case_id, "Yes.")
                result = await call.wait()
            assert result.status == "answered"
            await wait_all_tasks_blocked()  # the close had every chance to run: it waits
            assert rig.platform.session_of(case_id).status == "waiting"
            written()
            await rig.platform.wait_until(
                lambda: rig.platform.session_of(case_id).status == "answered"
            )


async def test_drain_ends_waiting_calls_with_the_fallback_and_keeps_their_cases_open() -> None:
    rig = make_rig()
    async with rig.relay.running():
        requests = [ask_request(call_id=f"call-{i}", session_id=f"s-{i}") for i in range(3)]
        async with asking(rig.relay, *requests) as calls:
            await rig.waiting(calls=3)
            assert rig.relay.active_calls == 3
            ended = await rig.relay.drain(timeout_s=5)
            results = [await c.wait() for c in calls]
        assert ended == 3
    assert [r.status for r in results] == ["timeout"] * 3
    assert all(r.message == rig.settings.fallback_timeout for r in results)
    for result in results:
        assert result.case_id is not None
        case = rig.platform.cases[UUID(result.case_id)]
        session = rig.platform.session_of(case.id)
        assert case.status == "open"  # answerable by another replica or get_human_answer
        assert session.status == "cancelled"
        assert session.detail["reason"] == "relay shutting down"
    assert rig.relay.active_calls == 0


async def test_an_answer_committed_as_the_drain_begins_is_still_returned() -> None:
    rig = make_rig()
    async with rig.relay.running(), asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        # Committed while the connection is down (no broadcast reaches the wait); the drain
        # ends the wait and its last read finds the answer.
        rig.platform.disconnect()
        await rig.platform.operator.answer(case_id, "Yes, Saturday.")
        await rig.relay.drain(timeout_s=5)
        result = await call.wait()
    assert result.status == "answered"
    assert result.answer == "Yes, Saturday."
    assert rig.platform.session_of(case_id).status == "answered"


async def test_a_draining_relay_takes_no_new_call() -> None:
    rig = make_rig()
    async with rig.relay.running():
        assert await rig.relay.drain(timeout_s=1) == 0
        result = await rig.relay.ask(ask_request())
    assert result.status == "platform_unreachable"
    assert result.case_id is None
    assert rig.platform.cases == {}


async def test_a_call_still_joining_when_the_drain_begins_ends_as_soon_as_it_joins() -> None:
    """The drain ends the calls it finds waiting; one still opening or joining ends the moment
    it would start waiting, not at its deadline (the fake clock never reaches it here)."""
    rig = make_rig()
    rig.platform.faults.hold_joins()

    async def is_draining() -> bool:
        return rig.relay.draining

    async with rig.relay.running(), asking(rig.relay, ask_request()) as (call,):
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.wait_until(lambda: rig.platform.joins_requested == 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.relay.drain, 5)
            await wait_until(is_draining, "the drain to begin")
            rig.platform.faults.release_joins()
            result = await call.wait()
    assert result.status == "timeout"
    assert result.case_id == str(case_id)
    assert rig.platform.session_of(case_id).status == "cancelled"
    assert rig.platform.session_of(case_id).detail["reason"] == "relay shutting down"
    assert rig.platform.cases[case_id].status == "open"


async def test_after_a_platform_failure_the_next_success_reads_every_waiting_case() -> None:
    """Realtime lost its database connection while the sockets stayed joined: an answer
    committed then is never broadcast. Once the relay has seen a platform failure and then a
    success, one sweep reads every waiting case and the call returns its answer at once instead
    of at its deadline (the fake clock never reaches it here)."""
    rig = make_rig()
    ops = rig.platform.operator
    async with (
        rig.relay.running(),
        asking(rig.relay, ask_request(call_id="a", session_id="a")) as (a,),
    ):
        await rig.waiting()
        case_a = await ops.wait_for_case()
        rig.platform.faults.drop_broadcasts = True
        await ops.answer(case_a, "Yes, the 3 pm slot.")
        rig.platform.faults.drop_broadcasts = False
        assert not a.done.is_set()  # nothing told it

        # b opens fine (a success, but no failure seen yet: no sweep), then its catch-up
        # read fails: a platform failure.
        rig.platform.faults.fail_rpc("reply")
        async with asking(rig.relay, ask_request(call_id="b", session_id="b")) as (b,):
            await rig.waiting(calls=2)
            assert rig.relay.sweeps == 0
            assert not a.done.is_set()
            # c opens fine: the first success after the failure sweeps.
            async with asking(rig.relay, ask_request(call_id="c", session_id="c")) as (c,):
                result = await a.wait()
                assert (result.status, result.answer) == ("answered", "Yes, the 3 pm slot.")
                assert rig.relay.sweeps == 1
                # a's case was read by its catch-up and by the sweep (one batched read of every
                # waiting case), and a returned what the sweep read: no third read that could
                # fail into a fallback
                assert rig.platform.replies_read.count(case_a) == 1
                assert [case_a in batch for batch in rig.platform.batches_read] == [True]
                await rig.waiting(calls=2)  # b and c wait on: no answer in their cases
                for case_id in [k for k in rig.platform.cases if k != case_a]:
                    await ops.answer(case_id, "Later.")
                assert (await c.wait()).status == "answered"
            assert (await b.wait()).status == "answered"
    assert rig.platform.session_of(case_a).status == "answered"


async def test_without_a_platform_failure_no_call_triggers_a_sweep() -> None:
    rig = make_rig()
    async with rig.relay.running():
        requests = [ask_request(call_id=f"call-{i}", session_id=f"s-{i}") for i in range(3)]
        async with asking(rig.relay, *requests) as calls:
            await rig.waiting(calls=3)
            for case_id in list(rig.platform.cases):
                await rig.platform.operator.answer(case_id, "Yes.")
            results = [await c.wait() for c in calls]
    assert [r.status for r in results] == ["answered"] * 3
    assert rig.relay.sweeps == 0
    assert rig.platform.rpc_calls.count("reply") == 3  # each call's own catch-up read only


async def test_a_client_gone_while_its_case_is_committed_still_closes_the_session() -> None:
    """The case is committed but the reply has not arrived when the client goes away: the
    relay still learns the session and closes it `cancelled` (a retry then waits anew)."""
    rig = make_rig()
    rig.platform.faults.open_reply_gate = gate = anyio.Event()
    async with rig.relay.running(), anyio.create_task_group() as tg:
        tg.start_soon(rig.relay.ask, ask_request())
        await rig.platform.wait_until(lambda: len(rig.platform.cases) == 1)
        tg.cancel_scope.cancel()  # the client went away
        (case_id,) = rig.platform.cases
        gate.set()
    assert rig.platform.session_of(case_id).status == "cancelled"
    assert rig.platform.cases[case_id].status == "open"
