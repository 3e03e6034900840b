"""The circuit breaker and deadline-bounded retries, driven by a fake clock (no waiting)."""

from __future__ import annotations

import pytest
import stamina

from hitl_relay.resilience import BreakerState, CircuitBreaker, retry_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_breaker(clock: FakeClock, **kw: float) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=int(kw.get("threshold", 3)),
        window_s=kw.get("window", 10.0),
        reset_timeout_s=kw.get("reset", 5.0),
        clock=clock,
    )


def test_breaker_opens_after_threshold_failures_within_window() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(2):
        breaker.record_failure("rpc 503")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure("rpc 503")
    assert breaker.state is BreakerState.OPEN
    assert breaker.is_open
    assert not breaker.allow()
    assert breaker.last_error == "rpc 503"


def test_failures_spread_beyond_the_window_do_not_open_it() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(5):
        breaker.record_failure()
        clock.advance(6.0)  # at most two failures ever share one 10 s window
    assert breaker.state is BreakerState.CLOSED


def test_success_resets_the_failure_count() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(4.9)
    assert not breaker.allow()
    assert breaker.seconds_until_probe() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # nobody else while the probe is out
    assert breaker.is_open
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_failed_probe_opens_again_for_a_full_reset_timeout() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_failure("still down")
    assert breaker.state is BreakerState.OPEN
    clock.advance(4.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_listeners_hear_every_state_change_in_order() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=1)
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker.on_change(lambda old, new: changes.append((old, new)))
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_success()
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_invalid_breaker_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return "ok"


@pytest.fixture
def no_backoff_waits() -> object:
    stamina.set_testing(True, attempts=5)
    yield None
    stamina.set_testing(False)


@pytest.mark.usefixtures("no_backoff_waits")
async def test_retry_succeeds_after_transient_failures() -> None:
    flaky = Flaky(failures=2)
    clock = FakeClock()
    assert (
        await retry_until(flaky, deadline=clock() + 10, retry_on=(ConnectionError,), clock=clock)
        == "ok"
    )
    assert flaky.calls == 3


@pytest.mark.usefixtures("no_backoff_waits")
async def test_retry_gives_up_and_raises_the_last_error() -> None:
    flaky = Flaky(failures=100)
    clock = FakeClock()
    with pytest.raises(ConnectionError, match="attempt 5 failed"):
        await retry_until(flaky, deadline=clock() + 10, retry_on=(ConnectionError,), clock=clock)
    assert flaky.calls == 5


async def test_retry_with_no_time_left_makes_exactly_one_attempt() -> None:
    flaky = Flaky(failures=1)
    clock = FakeClock()
    with pytest.raises(ConnectionError):
        await retry_until(flaky, deadline=clock() - 1, retry_on=(ConnectionError,), clock=clock)
    assert flaky.calls == 1


async def test_errors_not_listed_are_not_retried() -> None:
    async def bad_input() -> str:
        raise ValueError("question: must not be empty")

    clock = FakeClock()
    with pytest.raises(ValueError, match="question"):
        await retry_until(
            bad_input, deadline=clock() + 10, retry_on=(ConnectionError,), clock=clock
        )
