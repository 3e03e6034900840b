"""The relay core on the in-memory twin, with a fake clock: every path of an ask, no waiting."""

from __future__ import annotations

from uuid import UUID

import anyio
import pytest
import stamina
from relay_support import Progress, Rig, ask_request, asking, make_settings

from hitl_relay import metrics
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.errors import InvalidRequest
from hitl_relay.metrics import MetricsObserver
from hitl_relay.relay import Relay
from hitl_relay.resilience import CircuitBreaker


@pytest.fixture
def rig() -> Rig:
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


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_answer_before_deadline_is_returned_with_its_case(rig: Rig) -> None:
    answered_before = sample("hitl_invocations_total", outcome="answered")
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "  Yes, Saturday works.  ")
        result = await call.wait()
    assert result.status == "answered"
    assert result.answer == "Yes, Saturday works."
    assert result.message == "Yes, Saturday works."
    assert result.case_id == str(case_id)
    assert rig.platform.session_of(case_id).status == "answered"
    assert rig.platform.joined_channels == 0
    assert sample("hitl_invocations_total", outcome="answered") == answered_before + 1


async def test_case_carries_the_request_and_is_opened_under_the_relays_case_id(rig: Rig) -> None:
    request = ask_request(
        context="Order 4411, paid",
        caller_info={"name": "Ada"},
        priority=5,
        urgency="high",
        conversation_history=[{"role": "caller", "content": "Saturday?"}],
        timeout_seconds=30,
    )
    async with asking(rig.relay, request) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        case = rig.platform.cases[case_id]
        assert (case.priority, case.urgency) == (5, "high")
        assert case.metadata["caller_info"] == {"name": "Ada"}
        assert case.metadata["conversation_history"] == [{"role": "caller", "content": "Saturday?"}]
        assert case.metadata["response_timeout"] == 30
        # The channel joined is the case's own: the relay made the id before the row existed.
        assert set(rig.platform.subscriptions) == {case_id}
        await rig.platform.operator.answer(case_id, "Yes")
        await call.wait()


async def test_deadline_returns_the_timeout_fallback_with_the_case_id(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(timeout_seconds=30)) as (call,):
        await rig.waiting()
        rig.clock.advance(29.9)
        assert not call.done.is_set()
        rig.clock.advance(0.2)
        result = await call.wait()
    case_id = UUID(str(result.case_id))
    assert result.status == "timeout"
    assert result.answer is None
    assert result.message == rig.settings.fallback_timeout
    assert result.waited_ms == 30_100
    assert rig.platform.session_of(case_id).status == "timed_out"
    assert rig.platform.cases[case_id].status == "open"  # still answerable
    assert rig.platform.joined_channels == 0


async def test_default_deadline_comes_from_configuration(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        assert rig.clock.next_wake() == pytest.approx(45)
        rig.clock.advance(45)
        assert (await call.wait()).status == "timeout"


async def test_empty_answer_is_an_unclear_answer(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, " \n\t ")
        result = await call.wait()
    assert result.status == "unclear_answer"
    assert result.answer is None
    assert result.message == rig.settings.fallback_unclear_answer
    assert result.case_id == str(case_id)


async def test_cannot_answer_is_unclear_with_the_operators_note(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "Billing must decide", kind="cannot_answer")
        result = await call.wait()
    assert result.status == "unclear_answer"
    assert result.message.startswith(rig.settings.fallback_unclear_answer)
    assert "Billing must decide" in result.message


async def test_notes_and_bot_messages_are_not_taken_as_the_answer(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "looking into it", kind="note")
        await rig.platform.operator.answer(case_id, "auto reply", sender_type="ai")
        await rig.platform.operator.answer(case_id, "The real answer")
        result = await call.wait()
    assert result.answer == "The real answer"


async def test_late_answer_is_found_by_get_answer(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        rig.clock.advance(45)
        result = await call.wait()
    assert result.status == "timeout"
    assert result.case_id is not None
    pending = await rig.relay.get_answer(result.case_id)
    assert (pending.status, pending.answer, pending.case_id) == ("pending", None, result.case_id)
    await rig.platform.operator.answer(UUID(result.case_id), "Yes, after all")
    late = await rig.relay.get_answer(result.case_id)
    assert (late.status, late.answer) == ("answered", "Yes, after all")
    assert late.case_id == result.case_id


async def test_get_answer_names_a_malformed_case_id() -> None:
    relay = Relay(
        MemoryPlatform().backend(), make_settings().relay_options(), observer=MetricsObserver()
    )
    with pytest.raises(InvalidRequest) as e:
        await relay.get_answer("not-a-uuid")
    assert (e.value.field, e.value.rule) == ("case_id", "must be a case id (a UUID)")


async def test_get_answer_on_an_unknown_case_is_an_error_naming_case_id() -> None:
    relay = Relay(
        MemoryPlatform().backend(), make_settings().relay_options(), observer=MetricsObserver()
    )
    with pytest.raises(InvalidRequest) as e:
        await relay.get_answer("00000000-0000-4000-8000-00000000dead")
    assert (e.value.field, e.value.rule) == ("case_id", "no such case")


async def test_retry_of_the_same_call_and_question_joins_the_same_case(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(), ask_request()) as (first, second):
        await rig.platform.wait_until(
            lambda: (
                len(rig.platform.cases) == 1
                and len(next(iter(rig.platform.subscriptions.values()), ())) == 2
                and rig.platform.joined_channels == 2
            )
        )
        await rig.clock.wait_for_sleepers(2)
        (case_id,) = rig.platform.cases
        await rig.platform.operator.answer(case_id, "Yes")
        results = [await first.wait(), await second.wait()]
    assert [r.answer for r in results] == ["Yes", "Yes"]
    assert {r.case_id for r in results} == {str(case_id)}
    assert len(rig.platform.sessions) == 1


async def test_retry_after_a_timeout_waits_again_on_the_same_case(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        rig.clock.advance(45)
        first = await call.wait()
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        assert len(rig.platform.cases) == 1
        await rig.platform.operator.answer(UUID(str(first.case_id)), "Now yes")
        second = await call.wait()
    assert (second.status, second.answer, second.case_id) == ("answered", "Now yes", first.case_id)


async def test_retry_of_an_answered_call_returns_the_answer_at_once(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "Yes")
        await call.wait()
    result = await rig.relay.ask(ask_request())
    assert (result.status, result.answer, result.case_id) == ("answered", "Yes", str(case_id))


async def test_cancellation_leaves_the_channel_and_marks_the_session_cancelled(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        call.scope.cancel()
        with anyio.fail_after(5):
            await call.done.wait()
    assert call.result is None
    assert call.error is None
    assert rig.platform.joined_channels == 0
    assert rig.platform.leaves == rig.platform.joins_confirmed == 1
    assert rig.platform.session_of(case_id).status == "cancelled"
    assert rig.platform.cases[case_id].status == "open"  # operators can still answer it


async def test_answer_arriving_before_the_subscription_is_confirmed_is_not_lost(
    rig: Rig,
) -> None:
    rig.platform.faults.hold_joins()
    async with asking(rig.relay, ask_request()) as (call,):
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.wait_until(lambda: rig.platform.joins_requested == 1)
        await rig.platform.operator.answer(case_id, "Answered before the join")
        assert rig.platform.joins_confirmed == 0  # nobody heard the broadcast
        rig.platform.faults.release_joins()
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Answered before the join")


async def test_answer_during_a_reconnect_is_not_lost(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.platform.disconnect()
        await rig.platform.operator.answer(case_id, "Sent while disconnected")
        assert not call.done.is_set()
        rig.platform.reconnect()
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Sent while disconnected")


async def test_channel_lost_for_good_falls_back_to_reading_the_answer(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.platform.lose_subscriptions()
        await rig.clock.wait_for_sleepers(2)  # the deadline and the poll
        await rig.platform.operator.answer(case_id, "Found by polling")
        rig.clock.advance(1.0)
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Found by polling")


async def test_session_expired_by_the_platform_ends_the_wait(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.platform.set_session_status(rig.platform.session_of(case_id), "expired")
        result = await call.wait()
    assert result.status == "timeout"
    assert rig.platform.session_of(case_id).status == "expired"


async def test_no_operator_present_records_the_case_and_answers_at_once_with_its_id() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock, operators=0)
    relay = Relay(
        platform.backend(), make_settings().relay_options(), clock=clock, observer=MetricsObserver()
    )
    request = ask_request(
        context="Order 4411",
        caller_info={"name": "Grace", "phone": "+15550100"},
        priority=2,
        urgency="low",
        conversation_history=[{"role": "caller", "content": "A refund?"}],
    )
    result = await relay.ask(request)
    assert result.status == "no_operator"
    assert result.message == make_settings().fallback_no_operator
    assert result.case_id is not None
    case = platform.cases[UUID(result.case_id)]
    assert (case.question, case.status, case.priority, case.urgency) == (
        request.question,
        "open",
        2,
        "low",
    )
    assert case.metadata["caller_info"] == {"name": "Grace", "phone": "+15550100"}
    assert case.metadata["context"] == "Order 4411"
    assert case.metadata["retell_call_id"] == request.call_id
    assert case.metadata["conversation_history"] == [{"role": "caller", "content": "A refund?"}]
    assert platform.session_of(case.id).status == "no_operator"
    assert platform.joined_channels == 0  # nobody waits on it


async def test_a_question_recorded_with_nobody_on_duty_is_answered_later_like_a_timeout() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock, operators=0)
    relay = Relay(
        platform.backend(), make_settings().relay_options(), clock=clock, observer=MetricsObserver()
    )
    result = await relay.ask(ask_request())
    assert result.case_id is not None
    pending = await relay.get_answer(result.case_id)
    assert (pending.status, pending.case_id) == ("pending", result.case_id)
    await platform.operator.go_online()
    await platform.operator.answer(UUID(result.case_id), "Yes, refund approved")
    late = await relay.get_answer(result.case_id)
    assert (late.status, late.answer) == ("answered", "Yes, refund approved")


async def test_a_retry_with_nobody_on_duty_names_the_same_case_and_returns_its_answer() -> None:
    clock = FakeClock()
    platform = MemoryPlatform(clock=clock, operators=0)
    relay = Relay(
        platform.backend(), make_settings().relay_options(), clock=clock, observer=MetricsObserver()
    )
    first = await relay.ask(ask_request())
    again = await relay.ask(ask_request())
    assert (again.status, again.case_id) == ("no_operator", first.case_id)
    assert len(platform.cases) == 1
    assert len(platform.sessions) == 1
    assert first.case_id is not None
    await platform.operator.answer(UUID(first.case_id), "Yes")
    answered = await relay.ask(ask_request())
    assert (answered.status, answered.answer, answered.case_id) == (
        "answered",
        "Yes",
        first.case_id,
    )
    assert platform.session_of(UUID(first.case_id)).status == "answered"


async def test_no_operator_with_the_platform_down_is_platform_unreachable() -> None:
    platform = MemoryPlatform(operators=0)
    relay = Relay(platform.backend(), make_settings().relay_options(), observer=MetricsObserver())
    platform.faults.rpc_down = True
    with stamina.set_testing(True, attempts=2):
        result = await relay.ask(ask_request())
    assert (result.status, result.case_id) == ("platform_unreachable", None)


async def test_no_operator_check_can_be_switched_off() -> None:
    platform = MemoryPlatform(operators=0)
    settings = make_settings(no_operator_answers_at_once=False)
    relay = Relay(platform.backend(), settings.relay_options(), observer=MetricsObserver())
    async with asking(relay, ask_request()) as (call,):
        case_id = await platform.operator.wait_for_case()
        await platform.wait_until(lambda: platform.joined_channels == 1)
        await platform.operator.answer(case_id, "Someone was there after all")
        assert (await call.wait()).status == "answered"


async def test_open_breaker_answers_platform_unreachable_without_touching_the_platform(
    rig: Rig,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=rig.clock.monotonic)
    breaker.record_failure("down")
    relay = Relay(
        rig.platform.backend(), rig.settings.relay_options(), clock=rig.clock, breaker=breaker
    )
    result = await relay.ask(ask_request())
    assert result.status == "platform_unreachable"
    assert result.message == rig.settings.fallback_platform_unreachable
    assert rig.platform.rpc_calls == []
    assert rig.platform.joins_requested == 0


async def test_platform_down_gives_platform_unreachable_and_opens_the_breaker(rig: Rig) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=rig.clock.monotonic)
    relay = Relay(
        rig.platform.backend(), rig.settings.relay_options(), clock=rig.clock, breaker=breaker
    )
    rig.platform.faults.rpc_down = True
    with stamina.set_testing(True, attempts=2):
        result = await relay.ask(ask_request())
    assert (result.status, result.case_id) == ("platform_unreachable", None)
    assert rig.platform.rpc_calls == ["open_case", "open_case"]
    assert rig.platform.joined_channels == 0
    assert breaker.is_open


async def test_a_transient_open_failure_is_retried(rig: Rig) -> None:
    rig.platform.faults.fail_rpc("open_case", 1)
    with stamina.set_testing(True, attempts=3):
        async with asking(rig.relay, ask_request()) as (call,):
            await rig.waiting()
            case_id = await rig.platform.operator.wait_for_case()
            await rig.platform.operator.answer(case_id, "Yes")
            assert (await call.wait()).status == "answered"


async def test_refused_join_after_the_case_opened_still_finds_the_answer_by_reading(
    rig: Rig,
) -> None:
    rig.platform.faults.refuse_joins = True
    async with asking(rig.relay, ask_request()) as (call,):
        case_id = await rig.platform.operator.wait_for_case()
        await rig.clock.wait_for_sleepers(2)  # the deadline and the next read
        assert rig.platform.joined_channels == 0
        await rig.platform.operator.answer(case_id, "Found by reading")
        rig.clock.advance(1.0)
        result = await call.wait()
    assert (result.status, result.answer, result.case_id) == (
        "answered",
        "Found by reading",
        str(case_id),
    )
    assert rig.platform.session_of(case_id).status == "answered"


async def test_refused_join_and_no_answer_times_out_naming_the_case(rig: Rig) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=rig.clock.monotonic)
    relay = Relay(
        rig.platform.backend(), rig.settings.relay_options(), clock=rig.clock, breaker=breaker
    )
    rig.platform.faults.refuse_joins = True
    async with asking(relay, ask_request(timeout_seconds=10)) as (call,):
        case_id = await rig.platform.operator.wait_for_case()
        await rig.clock.wait_for_sleepers(2)
        rig.clock.advance(10.0)
        result = await call.wait()
    assert (result.status, result.case_id) == ("timeout", str(case_id))
    assert rig.platform.session_of(case_id).status == "timed_out"
    # The breaker heard of the refused join (the platform is only partly reachable).
    assert "refused" in (breaker.last_error or "")


async def test_progress_is_reported_while_waiting(rig: Rig) -> None:
    progress = Progress()
    async with asking(rig.relay, ask_request(timeout_seconds=12), progress=progress) as (call,):
        await rig.waiting(sleepers=2)  # the deadline and the next progress tick
        assert [u[0] for u in progress.updates] == [0.0]
        rig.clock.advance(5)
        await rig.clock.wait_for_sleepers(2)
        rig.clock.advance(5)
        await rig.clock.wait_for_sleepers(2)
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "Yes")
        await call.wait()
    assert [(e, t) for e, t, _ in progress.updates] == [(0.0, 12.0), (5.0, 12.0), (10.0, 12.0)]
    assert progress.updates[-1][2] == "Waiting for a colleague's answer (10 s of 12 s)"


async def test_timeout_outside_the_configured_bounds_is_refused_naming_the_field() -> None:
    relay = Relay(
        MemoryPlatform().backend(),
        make_settings(min_timeout_seconds=10).relay_options(),
        observer=MetricsObserver(),
    )
    with pytest.raises(InvalidRequest) as e:
        await relay.ask(ask_request(timeout_seconds=5))
    assert str(e.value) == "timeout_seconds: must be between 10 and 600"


async def test_unknown_presence_does_not_refuse_the_call(rig: Rig) -> None:
    assert rig.platform.present is None
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        rig.clock.advance(45)
        assert (await call.wait()).status == "timeout"


async def test_answer_committed_unheard_by_the_deadline_is_still_returned(rig: Rig) -> None:
    async with asking(rig.relay, ask_request()) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.platform.disconnect()  # the broadcast never arrives, and no reconnect before the end
        await rig.platform.operator.answer(case_id, "Just in time")
        rig.clock.advance(45)
        result = await call.wait()
    assert (result.status, result.answer) == ("answered", "Just in time")
    assert rig.platform.session_of(case_id).status == "answered"
