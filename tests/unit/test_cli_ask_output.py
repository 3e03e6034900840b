"""What `hitl-relay ask` prints for each status: what to say on stdout, the status and the next
step on stderr (the answered and needs_info paths run end to end in tests/e2e/test_cli_ask.py)."""

from __future__ import annotations

import pytest

from hitl_relay.cli import _print_ask_result
from hitl_relay.models import AskResult

CASE = "5f0c6f8e-0000-4000-8000-000000000001"


def printed(capsys: pytest.CaptureFixture[str], result: AskResult) -> tuple[str, str]:
    _print_ask_result(result.model_dump(mode="json"), "cli-call-1")
    out, err = capsys.readouterr()
    return out, err


def test_a_timeout_prints_the_fallback_and_says_the_case_stays_open(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = AskResult(
        status="timeout", case_id=CASE, waited_ms=30_012, deadline_s=30, message="Not yet."
    )
    out, err = printed(capsys, result)
    assert out == "Not yet.\n"
    assert f"status: timeout  case: {CASE}  waited: 30012 ms of 30 s  call: cli-call-1" in err
    assert f"the case stays open for operators: hitl-relay answer {CASE}" in err


def test_needs_info_prints_the_operators_question_and_how_to_reply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = AskResult(
        status="needs_info",
        clarification="Which order?",
        case_id=CASE,
        message="Which order?",
    )
    out, err = printed(capsys, result)
    assert out == "Your colleague asks: Which order?\n"
    assert f'reply with: hitl-relay ask --case-id {CASE} "<the caller\'s reply>"' in err


def test_no_operator_without_a_case_prints_only_the_fallback_and_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = AskResult(status="no_operator", message="Nobody is available.")
    out, err = printed(capsys, result)
    assert out == "Nobody is available.\n"
    assert err.splitlines() == ["status: no_operator  case: -  waited: 0 ms  call: cli-call-1"]


def test_no_operator_with_a_recorded_case_says_where_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = AskResult(status="no_operator", case_id=CASE, message="Nobody is on duty.")
    out, err = printed(capsys, result)
    assert out == "Nobody is on duty.\n"
    assert err.splitlines()[1] == (
        f"nobody was on duty; the question is recorded in the operators' queue: "
        f"hitl-relay answer {CASE} ..."
    )
