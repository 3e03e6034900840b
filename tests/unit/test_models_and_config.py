"""Tool input validation names the field and the rule; settings fail at start, one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl_relay.config import load_settings
from hitl_relay.errors import ConfigError, InvalidRequest
from hitl_relay.models import TIMEOUT_MAX, TIMEOUT_MIN, AskResult, parse_ask_request

VALID: dict[str, Any] = {
    "question": "May we deliver on Saturday?",
    "session_id": "s-1",
    "call_id": "c-1",
    "agent_id": "a-1",
}


def problems_for(**changes: Any) -> list[tuple[str, str]]:
    arguments = {**VALID, **changes}
    arguments = {k: v for k, v in arguments.items() if v is not ...}
    with pytest.raises(InvalidRequest) as e:
        parse_ask_request(arguments)
    return e.value.problems


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"priority": 9}, ("priority", "must be between 1 and 5")),
        ({"priority": 0}, ("priority", "must be between 1 and 5")),
        ({"priority": "high"}, ("priority", "must be between 1 and 5")),
        ({"urgency": "now"}, ("urgency", "must be one of low, medium, high")),
        ({"question": ...}, ("question", "is required")),
        ({"question": ""}, ("question", "must be 1 to 2000 characters")),
        ({"question": "   "}, ("question", "must not be blank")),
        ({"question": "q" * 2001}, ("question", "must be 1 to 2000 characters")),
        ({"context": "c" * 8001}, ("context", "must be at most 8000 characters")),
        ({"call_id": ...}, ("call_id", "is required")),
        ({"call_id": "x" * 129}, ("call_id", "must be 1 to 128 printable characters")),
        ({"session_id": "tab\there"}, ("session_id", "must be 1 to 128 printable characters")),
        ({"agent_id": " "}, ("agent_id", "must be 1 to 128 printable characters")),
        ({"caller_info": ["not", "an", "object"]}, ("caller_info", "must be an object")),
        (
            {"caller_info": {"blob": "x" * 17000}},
            ("caller_info", "must be at most 16 KB as JSON (got 17012 bytes)"),
        ),
        ({"timeout_seconds": 4}, ("timeout_seconds", "must be between 5 and 600")),
        ({"timeoutSeconds": 601}, ("timeout_seconds", "must be between 5 and 600")),
        ({"conversation_history": "hi"}, ("conversation_history", "must be a list")),
        (
            {"conversation_history": [{"role": "caller"}]},
            ("conversation_history[0].content", "is required"),
        ),
        (
            {"conversation_history": [{"role": "x", "content": "y"}] * 201},
            ("conversation_history", "must have at most 200 items"),
        ),
    ],
)
def test_validation_errors_name_the_field_and_the_rule(
    changes: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert problems_for(**changes)[0] == expected


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_for(priority=7, urgency="later", call_id=...)
    assert set(problems) == {
        ("priority", "must be between 1 and 5"),
        ("urgency", "must be one of low, medium, high"),
        ("call_id", "is required"),
    }


def test_arguments_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_ask_request(["question"])
    assert str(e.value) == "arguments: must be an object"


def test_camel_case_and_snake_case_names_mean_the_same() -> None:
    camel = parse_ask_request({
        "question": "q", "sessionId": "s", "callId": "c", "agentId": "a",
        "callerInfo": {"n": 1}, "conversationHistory": [{"role": "r", "content": "c"}],
        "timeoutSeconds": 30,
    })  # fmt: skip
    snake = parse_ask_request({
        "question": "q", "session_id": "s", "call_id": "c", "agent_id": "a",
        "caller_info": {"n": 1}, "conversation_history": [{"role": "r", "content": "c"}],
        "timeout_seconds": 30,
    })  # fmt: skip
    assert camel == snake
    assert (camel.priority, camel.urgency) == (3, "medium")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*VALID, "priority", "urgency", "caller_info",
       "conversation_history", "timeout_seconds", "context", "x"]),
       st.one_of(st.none(), st.integers(), st.text(max_size=30), st.booleans(),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                 st.integers(), max_size=2))))  # fmt: skip
def test_any_input_is_either_a_request_or_an_invalid_request_naming_fields(
    arguments: dict[str, Any],
) -> None:
    try:
        request = parse_ask_request(arguments)
    except InvalidRequest as e:
        for field, rule in e.problems:
            assert field.split(".")[0].split("[")[0] in {*VALID, "priority", "urgency",
                "caller_info", "conversation_history", "timeout_seconds", "context"}  # fmt: skip
            assert rule
            assert "Traceback" not in rule
    else:
        assert request.question.strip()


def test_result_text_names_the_status_and_case_for_a_fallback() -> None:
    timeout = AskResult(status="timeout", case_id="abc", waited_ms=45000, message="Later.")
    answered = AskResult(status="answered", answer="Yes", case_id="abc", message="Yes")
    assert timeout.text() == "Later. [status: timeout; case_id: abc]"
    assert answered.text() == "Yes"


def test_settings_read_the_environment_and_split_api_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_API_KEYS", " one , two,,three ")
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co/")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role")
    monkeypatch.setenv("HITL_FALLBACK_TIMEOUT", "Someone will call you back.")
    loaded = load_settings()
    assert loaded.api_key_values() == ["one", "two", "three"]
    assert loaded.supabase_url == "https://project.supabase.co"
    assert loaded.fallback_timeout == "Someone will call you back."
    assert (loaded.default_timeout_seconds, loaded.channels_per_socket) == (45, 100)


def test_settings_are_read_from_a_dotenv_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("HITL_BACKEND=memory\nHITL_PORT=9999\n")
    loaded = load_settings()
    assert (loaded.backend, loaded.port) == ("memory", 9999)


def test_invalid_settings_fail_with_one_clear_line_per_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_PRESENCE_CACHE_TTL_SECONDS", "5")
    monkeypatch.setenv("HITL_CHANNELS_PER_SOCKET", "0")
    monkeypatch.setenv("HITL_BACKEND", "postgres")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert e.value.problems == [
        "HITL_BACKEND: Input should be 'supabase' or 'memory'",
        "HITL_PRESENCE_CACHE_TTL_SECONDS: Input should be less than or equal to 1",
        "HITL_CHANNELS_PER_SOCKET: Input should be greater than or equal to 1",
    ]


def test_supabase_backend_needs_its_url_and_service_role_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_MAX_TIMEOUT_SECONDS", "300")
    monkeypatch.setenv("HITL_DEFAULT_TIMEOUT_SECONDS", "400")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert e.value.problems == [
        "HITL_DEFAULT_TIMEOUT_SECONDS: must be between HITL_MIN_TIMEOUT_SECONDS (5) and "
        "HITL_MAX_TIMEOUT_SECONDS (300)",
        "SUPABASE_URL: is required (your project's API URL)",
        "SUPABASE_SERVICE_ROLE_KEY: is required (the relay uses the service role; a secret "
        "key sb_secret_… may be given as SUPABASE_SECRET_KEY instead)",
    ]


@pytest.mark.parametrize(
    "variable",
    ["HITL_DEFAULT_TIMEOUT_SECONDS", "HITL_MIN_TIMEOUT_SECONDS", "HITL_MAX_TIMEOUT_SECONDS"],
)
def test_no_setting_allows_a_time_limit_the_model_and_the_sql_refuse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_BACKEND", "memory")
    for value, rule in ((TIMEOUT_MAX + 1, "less"), (TIMEOUT_MIN - 1, "greater")):
        monkeypatch.setenv(variable, str(value))
        with pytest.raises(ConfigError) as e:
            load_settings()
        assert e.value.problems[0].startswith(f"{variable}: Input should be {rule} than")


def test_a_secret_key_may_be_given_under_supabases_own_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the dashboard and `supabase status` call the new server key SUPABASE_SECRET_KEY
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_INSECURE_LOCAL", "true")
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co")
    monkeypatch.setenv("SUPABASE_SECRET_KEY", "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz")
    loaded = load_settings()
    assert loaded.supabase_service_role_key is not None
    assert loaded.supabase_service_role_key.get_secret_value().startswith("sb_secret_")


def test_a_publishable_key_as_the_service_key_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_INSECURE_LOCAL", "true")
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co")
    monkeypatch.setenv(
        "SUPABASE_SERVICE_ROLE_KEY", "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"
    )
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert e.value.problems == [
        "SUPABASE_SERVICE_ROLE_KEY: is a publishable key (sb_publishable_…), which acts as anon; "
        "the relay needs a secret key (sb_secret_…) or the service_role key"
    ]


def test_the_catch_up_interval_is_off_at_zero_and_refused_below_half_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HITL_BACKEND", "memory")
    assert load_settings().relay_options().catch_up_interval_s == 5.0
    monkeypatch.setenv("HITL_CATCH_UP_INTERVAL_SECONDS", "0")
    assert load_settings().relay_options().catch_up_interval_s == 0.0
    monkeypatch.setenv("HITL_CATCH_UP_INTERVAL_SECONDS", "0.1")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert e.value.problems == ["HITL_CATCH_UP_INTERVAL_SECONDS: must be 0 (off) or at least 0.5"]
    monkeypatch.setenv("HITL_CATCH_UP_INTERVAL_SECONDS", "61")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert e.value.problems == [
        "HITL_CATCH_UP_INTERVAL_SECONDS: Input should be less than or equal to 60"
    ]
