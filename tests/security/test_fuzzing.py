"""Hypothesis fuzzing of everything a stranger controls: the Retell webhook body (signed, so it
reaches the parser), the `ask_human` arguments (the model, and the MCP endpoint over HTTP).

Inputs include what JSON decoders let through although Postgres cannot store it: NaN, Infinity
and 1e400, U+0000 at any depth, nesting deeper than any check, duplicate keys. Properties: never
a 500, never a JSON-RPC error (the SDK's code 0 is an unhandled exception), never a traceback in
a response or the logs, never a row for an invalid request, and the circuit breaker never moved
by what a caller sends (the memory twin fails like Postgres on what it cannot store). 500
examples per endpoint in the default run, 10,000 under `-m slow`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger
from security_support import (
    KEY_A,
    RETELL_KEY,
    RelayApp,
    RetellSigner,
    bearer,
    make_settings,
    relay_app,
    relay_breaker,
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
# Written as the number 1e400 into the JSON text (a decoder reads it as infinity).
HUGE = "__1e400__"
DEFAULT_EXAMPLES = 500
SLOW_EXAMPLES = 10_000


def deep(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if depth % 2 else [leaf]
    return leaf


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=30)
    | st.sampled_from([*NASTY, HUGE])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
) | st.builds(deep, st.integers(min_value=1, max_value=90), st.sampled_from(["a\x00b", HUGE, 1.5]))
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
# Well-formed asks whose caller_info holds what Postgres cannot store, so these reach the tool's
# validation and, if it let one through, the store (where the twin fails like Postgres).
hostile_values = (
    st.sampled_from([float("nan"), float("inf"), float("-inf"), HUGE, "a\x00b"])
    | st.builds(deep, st.integers(min_value=1, max_value=90), st.sampled_from(["a\x00b", HUGE]))
    | json_values
)
hostile_asks = st.fixed_dictionaries(
    {
        "question": st.sampled_from(["May I refund?", "Is Saturday free?"]),
        "session_id": st.just("session-1"),
        "call_id": st.text(alphabet="abcdef0123456789", min_size=1, max_size=12),
        "agent_id": st.just("agent-1"),
        "caller_info": st.dictionaries(st.text(max_size=5), hostile_values, min_size=1, max_size=3),
    }
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
    # An "args only" call (call_id and agent_id as constant parameters) that is well formed but
    # for what Postgres cannot store, so it reaches validation and, past it, the store.
    st.fixed_dictionaries({"name": st.just("ask_human"), "args": hostile_asks})
    | st.fixed_dictionaries(
        {"args": hostile_asks | plausible_arguments | tool_arguments | scalars},
        optional={"name": values, "call": call_objects | scalars},
    )
    | plausible_arguments
    | tool_arguments
    | json_values
)


def json_text(value: Any) -> str:
    """JSON as a hostile client writes it: NaN/Infinity literals allowed, 1e400 where HUGE is."""
    return json.dumps(value).replace(f'"{HUGE}"', "1e400")


def with_duplicate(value: Any, key: str) -> str:
    """`value`'s JSON with `key` written twice at the top (for an object)."""
    text = json_text(value)
    if isinstance(value, dict) and value:
        return "{" + json.dumps(key) + ": " + json.dumps("first") + ", " + text[1:]
    return text


retell_bodies = (
    retell_payloads.map(lambda p: json_text(p).encode())
    | st.builds(with_duplicate, retell_payloads, st.sampled_from(["args", "call", "name"])).map(
        str.encode
    )
    | st.binary(max_size=200)
)

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


@contextmanager
def watched_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every loguru record (with its exception, if any) while the block runs; std logging is
    in `caplog`."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{level} {message}\n{exception}")
    caplog.set_level(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.remove(sink)


def no_traceback_logged(lines: list[str], caplog: pytest.LogCaptureFixture) -> None:
    for line in lines:
        no_traceback(line)
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        no_traceback(record.getMessage())


def breaker_unmoved(relay: RelayApp) -> None:
    breaker = relay_breaker(relay)
    assert breaker.last_error is None, breaker.last_error
    assert breaker.state.name == "CLOSED"


def consistent_rows(relay: RelayApp) -> None:
    """No partial row: every case has its session, every session its case."""
    platform = relay.platform
    cases = set(platform.cases)
    assert {s.case_id for s in platform.sessions.values()} == cases


def fuzz_retell(examples: int, caplog: pytest.LogCaptureFixture) -> None:
    signer = RetellSigner()
    config = make_settings(retell_api_key=RETELL_KEY)
    outcomes: dict[str, int] = {}
    with (
        watched_logs(caplog) as lines,
        relay_app(config, auto_answer="Yes.", raise_server_exceptions=False) as relay,
    ):

        @given(body=retell_bodies)
        @settings(FUZZ, max_examples=examples)
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
            consistent_rows(relay)
            breaker_unmoved(relay)

        post()
        no_traceback_logged(lines, caplog)
    # the fuzzing reached every branch: malformed bodies, invalid asks and answered asks
    assert outcomes.get("invalid_json", 0) > 0
    assert outcomes.get("invalid_request", 0) > 0
    assert outcomes.get("answered", 0) > 0


def fuzz_mcp(examples: int, caplog: pytest.LogCaptureFixture) -> None:
    headers = {
        **bearer(KEY_A),
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2025-06-18",
    }
    outcomes = {"error": 0, "answered": 0, "refused": 0}
    with (
        watched_logs(caplog) as lines,
        relay_app(make_settings(), auto_answer="Yes.", raise_server_exceptions=False) as relay,
    ):

        @given(
            arguments=hostile_asks | plausible_arguments | tool_arguments,
            # Half the bodies name a key twice, half reach the tool (and, if it let one
            # through, the store).
            duplicate=st.none() | st.sampled_from(["call_id", "question", "caller_info"]),
        )
        @settings(FUZZ, max_examples=examples)
        def call(arguments: dict[str, Any], duplicate: str | None) -> None:
            cases_before = len(relay.platform.cases)
            message = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "ask_human", "arguments": arguments},
            }
            body = json_text(message)
            if duplicate is not None and arguments:
                body = body.replace('"arguments": {', f'"arguments": {{"{duplicate}": "x", ', 1)
            response = relay.client.post("/mcp", content=body, headers=headers)
            no_traceback(response.text)
            if response.status_code == 400:  # a key written twice: nobody reads the body
                outcomes["refused"] += 1
                assert "duplicate key" in response.text
                assert len(relay.platform.cases) == cases_before
                return
            assert response.status_code == 200, response.text
            data = json.loads(response.text.partition("data: ")[2])
            assert "error" not in data, data  # a JSON-RPC error: an exception escaped the tool
            result = data["result"]
            if result["isError"]:
                outcomes["error"] += 1
                assert result["structuredContent"]["error"] == "invalid_request"
                assert len(relay.platform.cases) == cases_before
            else:
                outcomes["answered"] += 1
                assert result["structuredContent"]["status"] == "answered"
            consistent_rows(relay)
            breaker_unmoved(relay)

        call()
        no_traceback_logged(lines, caplog)
    assert outcomes["error"] > 0
    assert outcomes["answered"] > 0
    assert outcomes["refused"] > 0


def test_retell_bodies_never_cause_a_500_a_traceback_a_partial_row_or_a_breaker_move(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fuzz_retell(DEFAULT_EXAMPLES, caplog)


def test_mcp_tool_calls_never_cause_a_500_a_traceback_a_partial_row_or_a_breaker_move(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fuzz_mcp(DEFAULT_EXAMPLES, caplog)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_retell_bodies_fuzzed_ten_thousand_times(caplog: pytest.LogCaptureFixture) -> None:
    fuzz_retell(SLOW_EXAMPLES, caplog)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_mcp_tool_calls_fuzzed_ten_thousand_times(caplog: pytest.LogCaptureFixture) -> None:
    fuzz_mcp(SLOW_EXAMPLES, caplog)
