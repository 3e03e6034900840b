"""Hypothesis fuzzing of everything a stranger controls: the Retell webhook body (signed, so it
reaches the parser), the `ask_human` arguments (the model, and the MCP endpoint over HTTP).
Never a 500, never a traceback in a response, never a case written for an invalid request."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_support import (
    KEY_A,
    RETELL_KEY,
    RetellSigner,
    bearer,
    make_settings,
    relay_app,
)

from hitl_relay.errors import InvalidRequest
from hitl_relay.models import AskHumanRequest, parse_ask_request
from hitl_relay.retell import PATH

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
NASTY = [
    "'; drop table public.cases; --",
    "' or '1'='1",
    "\"); delete from public.messages where ('1'='1",
    "nul \x00 char",
    "<script>alert(1)</script>",
    "{{call_id}}",
    "${jndi:ldap://x/a}",
    "%s%s%n",
    "\u202e\u200b\ufeff",
    "Robert'); DROP TABLE students;--",
    "x" * 2001,
    " ",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(NASTY)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
)
texts = st.text(max_size=80) | st.sampled_from(NASTY)
# Field values: mostly strings and scalars of the wrong type, sometimes whole JSON trees.
values = texts | scalars
turns = st.lists(st.fixed_dictionaries({"role": texts, "content": texts}) | scalars, max_size=4)
TOOL_FIELDS: dict[str, Any] = {
    "question": values,
    "context": values,
    "session_id": values,
    "call_id": values,
    "agent_id": values,
    "sessionId": texts,
    "callId": texts,
    "agentId": texts,
    "caller_info": st.dictionaries(st.text(max_size=8), scalars, max_size=3) | json_values,
    "priority": st.integers(min_value=-3, max_value=9) | scalars,
    "urgency": st.sampled_from(["low", "medium", "high", "urgent", ""]) | scalars,
    "conversation_history": turns | json_values,
    "timeout_seconds": st.integers(min_value=-1, max_value=700) | scalars,
}
tool_arguments = st.fixed_dictionaries({}, optional=TOOL_FIELDS)
# Mostly well-formed asks, so the fuzzing also reaches the relay and the store.
plausible_arguments = st.fixed_dictionaries(
    {
        "question": texts,
        "session_id": st.text(min_size=1, max_size=10),
        "call_id": st.text(min_size=1, max_size=10),
        "agent_id": st.text(min_size=1, max_size=10),
    },
    optional={
        k: v
        for k, v in TOOL_FIELDS.items()
        if k not in ("question", "session_id", "call_id", "agent_id")
    },
)
call_objects = st.fixed_dictionaries(
    {},
    optional={
        "call_id": values,
        "agent_id": values,
        "from_number": values,
        "to_number": values,
        "direction": texts,
        "transcript": values,
        "transcript_object": turns | json_values,
        "metadata": json_values,
    },
)
retell_payloads = (
    st.fixed_dictionaries(
        {"args": plausible_arguments | tool_arguments | scalars},
        optional={"name": values, "call": call_objects | scalars},
    )
    | plausible_arguments
    | tool_arguments
    | json_values
)
retell_bodies = retell_payloads.map(lambda p: json.dumps(p).encode()) | st.binary(max_size=200)

KNOWN_FIELDS = set(AskHumanRequest.model_fields) | {"arguments", "body"}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text
    assert 'File "' not in text
    assert "Internal Server Error" not in text


@given(arguments=tool_arguments | plausible_arguments | scalars)
@settings(FUZZ, max_examples=1200)
def test_tool_arguments_either_validate_or_name_the_field_and_rule(arguments: Any) -> None:
    try:
        request = parse_ask_request(arguments)
    except InvalidRequest as e:
        for field, rule in e.problems:
            assert field.split(".")[0].split("[")[0] in KNOWN_FIELDS
            assert rule
            assert "Traceback" not in rule
        return
    assert 1 <= len(request.question) <= 2000
    assert request.question.strip()
    assert 1 <= request.priority <= 5


def test_retell_bodies_never_cause_a_500_or_write_for_invalid_input() -> None:
    signer = RetellSigner()
    config = make_settings(retell_api_key=RETELL_KEY)
    outcomes: dict[str, int] = {}
    with relay_app(config, auto_answer="Yes.", raise_server_exceptions=False) as relay:

        @given(body=retell_bodies)
        @settings(FUZZ, max_examples=700)
        def post(body: bytes) -> None:
            cases_before = len(relay.platform.cases)
            response = relay.client.post(PATH, content=body, headers=signer.headers(body))
            assert response.status_code in (200, 400), response.text
            no_traceback(response.text)
            data = response.json()
            kind = data.get("error") or data["status"]
            outcomes[kind] = outcomes.get(kind, 0) + 1
            if response.status_code == 400 or "error" in data:
                assert len(relay.platform.cases) == cases_before
            else:
                assert data["status"] == "answered"
                assert data["result"] == "Yes."

        post()
    # the fuzzing reached every branch: malformed bodies, invalid asks and answered asks
    assert outcomes.get("invalid_json", 0) > 0
    assert outcomes.get("invalid_request", 0) > 0
    assert outcomes.get("answered", 0) > 0


def test_mcp_tool_calls_never_cause_a_500_or_write_for_invalid_input() -> None:
    headers = {
        **bearer(KEY_A),
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2025-06-18",
    }
    outcomes = {"error": 0, "answered": 0}
    with relay_app(make_settings(), auto_answer="Yes.", raise_server_exceptions=False) as relay:

        @given(arguments=plausible_arguments | tool_arguments)
        @settings(FUZZ, max_examples=300)
        def call(arguments: dict[str, Any]) -> None:
            cases_before = len(relay.platform.cases)
            message = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "ask_human", "arguments": arguments},
            }
            response = relay.client.post("/mcp", content=json.dumps(message), headers=headers)
            assert response.status_code == 200, response.text
            no_traceback(response.text)
            data = json.loads(response.text.partition("data: ")[2])
            result = data["result"]
            if result["isError"]:
                outcomes["error"] += 1
                assert result["structuredContent"]["error"] == "invalid_request"
                assert len(relay.platform.cases) == cases_before
            else:
                outcomes["answered"] += 1
                assert result["structuredContent"]["status"] == "answered"

        call()
    assert outcomes["error"] > 0
    assert outcomes["answered"] > 0
