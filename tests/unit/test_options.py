"""One-tap answers (`options`) at the edge and in the core: bad options are tool errors naming
the field and the rule, good ones reach the case, and an answer choosing one comes back with its
index and text (and who answered) so the agent can branch."""

from __future__ import annotations

from typing import Any

import pytest
from relay_support import Rig, ask_request, asking, make_settings

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.errors import InvalidRequest
from hitl_relay.metrics import MetricsObserver
from hitl_relay.models import (
    OPTION_MAX_CHARS,
    OPTIONS_MAX,
    OPTIONS_MIN,
    AskHumanRequest,
    AskResult,
    parse_ask_request,
)
from hitl_relay.relay import Relay

VALID: dict[str, Any] = {
    "question": "Refund 30 euros for order 4411?",
    "session_id": "s-1",
    "call_id": "c-1",
    "agent_id": "a-1",
}


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


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        (["approve"], f"must have {OPTIONS_MIN} to {OPTIONS_MAX} items (got 1)"),
        (
            [str(n) for n in range(OPTIONS_MAX + 1)],
            f"must have {OPTIONS_MIN} to {OPTIONS_MAX} items (got 7)",
        ),
        (
            ["approve", "d" * (OPTION_MAX_CHARS + 1)],
            f"item 1 must be at most {OPTION_MAX_CHARS} characters",
        ),
        (["approve", " Approve "], "item 1 repeats an earlier option"),
        (["approve", ""], "item 1 must not be empty"),
        ("approve or deny", "must be a list"),
    ],
    ids=["too-few", "too-many", "too-long", "duplicate", "empty", "not-a-list"],
)
def test_bad_options_are_a_tool_error_naming_the_field_and_the_rule(
    options: Any, rule: str
) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_ask_request({**VALID, "options": options})
    assert e.value.problems[0] == ("options", rule)


def test_options_are_trimmed_and_skills_normalised() -> None:
    request = parse_ask_request(
        {**VALID, "options": [" approve ", "deny"], "skills": ["German", "billing", "german"]}
    )
    assert request.options == ["approve", "deny"]
    assert request.skills == ["billing", "german"]


def test_the_tool_schema_describes_options_for_the_agent() -> None:
    schema = AskHumanRequest.model_json_schema()
    assert "one tap" in schema["properties"]["options"]["description"].lower().replace("-", " ")


def test_an_option_answer_names_its_index_in_the_text() -> None:
    result = AskResult(
        status="answered", answer="deny", message="deny", option_index=1, option="deny"
    )
    assert result.text() == "deny [option_index: 1]"


async def test_the_case_keeps_the_options_and_the_answer_carries_the_chosen_one(rig: Rig) -> None:
    request = ask_request(options=["approve", "deny", "approve up to 50 euros"], skills=["billing"])
    rig.platform.claims.set_skills("operator-0", ["billing"])  # only skilled operators answer it
    async with asking(rig.relay, request) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        case = rig.platform.cases[case_id]
        assert (case.options, case.skills) == (
            ["approve", "deny", "approve up to 50 euros"],
            ("billing",),
        )
        await rig.platform.operator.answer(case_id, "", option_index=2)
        result = await call.wait()
    assert result.status == "answered"
    assert (result.option_index, result.option) == (2, "approve up to 50 euros")
    assert result.answer == "approve up to 50 euros"
    assert result.answered_by == "operator-0"


async def test_a_typed_answer_to_a_case_with_options_has_no_option(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(options=["approve", "deny"])) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.answer(case_id, "Only 20 euros")
        result = await call.wait()
    assert (result.status, result.answer, result.option_index, result.option) == (
        "answered",
        "Only 20 euros",
        None,
        None,
    )


async def test_a_late_option_answer_is_found_by_get_answer(rig: Rig) -> None:
    async with asking(rig.relay, ask_request(options=["approve", "deny"], timeout_seconds=5)) as (
        call,
    ):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.clock.advance(6)
        result = await call.wait()
    assert result.status == "timeout"
    await rig.platform.operator.answer(case_id, "deny", option_index=1)
    late = await rig.relay.get_answer(str(case_id))
    assert (late.status, late.option_index, late.option) == ("answered", 1, "deny")
