"""The relay's logs (hitl_relay.logs): one JSON line per call in production, readable lines in
development, the libraries' stdlib logging in the same sink, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest
from loguru import logger
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from relay_support import Rig, ask_request, asking, make_settings, memory_rig

from hitl_relay.logs import LogOptions, configure_logging, start_line

HITL_RELAY = str(Path(sys.executable).parent / "hitl-relay")
API_KEY = "hitl_log-test-key-that-must-never-be-printed-0001"
SERVICE_KEY = "service-role-jwt-that-must-never-be-printed.abc.def"
PER_CALL_KEYS = {
    "time",
    "level",
    "message",
    "logger",
    "call_id",
    "case_id",
    "outcome",
    "waited_ms",
    "create_ms",
    "delivery_ms",
    "deadline_s",
    "priority",
    "urgency",
    "follow_up",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging rewires loguru and the stdlib root logger: put both back after."""
    root = logging.getLogger()
    own = logging.getLogger("hitl_relay")
    saved = (list(root.handlers), root.level, list(own.handlers), own.level, own.propagate)
    try:
        yield
    finally:
        logger.remove()
        logger.add(sys.stderr)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        own.handlers[:] = saved[2]
        own.setLevel(saved[3])
        own.propagate = saved[4]


def configured(restore_logging: None, **settings: Any) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(make_settings(**settings), stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def per_call_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in json_lines(stream) if line["message"].startswith("ask_human ")]


@pytest.fixture
def rig() -> Rig:
    return memory_rig()


async def test_an_answered_call_writes_exactly_one_json_line_with_its_timings(
    rig: Rig, restore_logging: None
) -> None:
    stream = configured(restore_logging, log_json=True)
    request = ask_request(priority=5, urgency="high", timeout_seconds=40)
    async with asking(rig.relay, request) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        rig.clock.advance(2.0)
        # Committed now, received by the relay 0.25 s later: that is the delivery time.
        rig.platform.post_message(case_id, "Yes, Saturday works.")
        rig.clock.advance(0.25)
        result = await call.wait()

    (line,) = per_call_lines(stream)
    assert set(line) >= PER_CALL_KEYS
    assert line["level"] == "INFO"
    assert line["message"] == "ask_human answered"
    assert line["logger"] == "hitl_relay.observer"  # the core's observer writes it
    assert (line["call_id"], line["case_id"]) == ("call-1", result.case_id)
    assert line["outcome"] == result.status == "answered"
    assert line["waited_ms"] == result.waited_ms == 2250
    assert line["deadline_s"] == result.deadline_s == 40
    assert line["delivery_ms"] == 250
    assert 0 <= line["create_ms"] <= line["waited_ms"]
    assert (line["priority"], line["urgency"], line["follow_up"]) == (5, "high", False)
    assert line["time"].endswith("+00:00")  # ISO 8601, UTC


async def test_a_timeout_and_a_follow_up_each_log_their_own_line(
    rig: Rig, restore_logging: None
) -> None:
    stream = configured(restore_logging, log_json=True)
    async with asking(rig.relay, ask_request(timeout_seconds=30)) as (call,):
        await rig.waiting()
        case_id = await rig.platform.operator.wait_for_case()
        await rig.platform.operator.ask_back(case_id, "Which address?")
        first = await call.wait()
    follow_up = ask_request(case_id=str(case_id), question="12 Main Street", timeout_seconds=30)
    async with asking(rig.relay, follow_up) as (call,):
        await rig.waiting()
        rig.clock.advance(30.1)
        second = await call.wait()

    lines = per_call_lines(stream)
    assert [(x["outcome"], x["follow_up"]) for x in lines] == [
        (first.status, False),
        (second.status, True),
    ]
    assert [first.status, second.status] == ["needs_info", "timeout"]
    assert {x["case_id"] for x in lines} == {str(case_id)}
    assert lines[1]["delivery_ms"] is None  # nothing was delivered
    assert (lines[1]["priority"], lines[1]["urgency"]) == (None, None)  # the case's, not here
    assert lines[1]["waited_ms"] == second.waited_ms


def test_readable_mode_writes_plain_lines_with_the_extras(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(LogOptions(level="INFO", json=False), stream=stream, colour=False)
    logger.bind(call_id="call-7", outcome="answered").info("ask_human answered")
    logger.debug("not at INFO")

    (line,) = stream.getvalue().splitlines()
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "INFO" in line
    assert "ask_human answered" in line
    assert "call_id=call-7 outcome=answered" in line
    assert "\x1b[" not in line  # no colour codes off a terminal


def test_the_level_setting_filters_lines(restore_logging: None) -> None:
    stream = configured(restore_logging, log_json=True, log_level="WARNING")
    logger.info("quiet")
    logger.warning("loud")
    assert [x["message"] for x in json_lines(stream)] == ["loud"]


def test_stdlib_logging_of_the_libraries_lands_in_the_sink(restore_logging: None) -> None:
    stream = configured(restore_logging, log_json=True)
    logging.getLogger("uvicorn.error").warning("port %d is busy", 8080)
    logging.getLogger("httpx").info("HTTP Request: GET /rest/v1/cases 200")  # below WARNING
    logging.getLogger("hitl_devstack").info("devstack ready")  # own: at the setting
    try:
        raise RuntimeError("socket closed")
    except RuntimeError:
        logging.getLogger("mcp.server").exception("handler crashed")

    lines = json_lines(stream)
    assert [(x["level"], x["message"]) for x in lines] == [
        ("WARNING", "port 8080 is busy"),
        ("INFO", "devstack ready"),
        ("ERROR", "handler crashed"),
    ]
    assert "RuntimeError: socket closed" in lines[2]["exception"]
    assert [x["logger"] for x in lines] == ["uvicorn.error", "hitl_devstack", "mcp.server"]


def test_secrets_never_appear_in_a_log_line(restore_logging: None) -> None:
    settings = {
        "log_json": True,
        "api_keys": API_KEY,
        "supabase_service_role_key": SERVICE_KEY,
    }
    for as_json in (True, False):
        stream = io.StringIO()
        configure_logging(
            make_settings(**{**settings, "log_json": as_json}), stream=stream, colour=False
        )
        logger.bind(authorization=f"Bearer {API_KEY}", apikey=SERVICE_KEY, call_id="c").warning(
            "request refused with key {}", API_KEY
        )
        logger.bind(detail=f"postgrest said: bad JWT {SERVICE_KEY}").error("rpc failed")
        logging.getLogger("httpx").warning("retrying with header apikey: %s", SERVICE_KEY)
        text = stream.getvalue()
        assert API_KEY not in text
        assert SERVICE_KEY not in text
        assert text.count("<secret>") >= 3
        assert "call_id" in text  # the rest of the line is kept
        assert "rpc failed" in text


async def test_stdio_mode_logs_json_to_stderr_and_keeps_stdout_for_mcp(tmp_path: Path) -> None:
    errlog = tmp_path / "stderr.log"
    params = StdioServerParameters(
        command=HITL_RELAY,
        args=["stdio"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("HITL_")},
            "HITL_BACKEND": "memory",
            "HITL_LOG_JSON": "true",
            "HITL_MEMORY_AUTO_ANSWER": "Yes, from the demo operator",
            "HITL_MEMORY_AUTO_ANSWER_DELAY_SECONDS": "0",
        },
    )
    with anyio.fail_after(60), errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            result = await client.call_tool(
                "ask_human",
                {"question": "Saturday?", "session_id": "s", "call_id": "c-9", "agent_id": "a"},
            )
    # stdout carried only MCP (else the client could not have parsed the result) ...
    assert result.structured_content is not None
    assert result.structured_content["status"] == "answered"
    # ... and every stderr line is a JSON log line, one of them the call's.
    lines = [json.loads(line) for line in errlog.read_text().splitlines() if line.strip()]
    calls = [x for x in lines if x["message"].startswith("ask_human ")]
    assert [(x["call_id"], x["outcome"]) for x in calls] == [("c-9", "answered")]
    assert UUID(calls[0]["case_id"]) == UUID(result.structured_content["case_id"])


def test_the_start_line_is_a_json_log_line_when_logs_are_json() -> None:
    marker = "hitl-relay: MCP at http://127.0.0.1:8080/mcp"
    assert start_line(LogOptions(json=False), marker) == marker
    line = json.loads(start_line(make_settings(log_json=True), marker))
    assert (line["level"], line["message"], line["logger"]) == ("INFO", marker, "hitl_relay.cli")


def test_a_librarys_repeated_errors_are_logged_once_then_once_a_minute_with_a_count(
    restore_logging: None,
) -> None:
    """realtime-py logs two ERROR lines per failed connection attempt while the platform is
    down; the sink gets each once, then once a minute with how many were held back."""
    from hitl_relay.logs import RepeatFilter

    stream = configured(restore_logging, log_json=True)
    now = [0.0]
    repeat = next(
        f for h in logging.getLogger().handlers for f in h.filters if isinstance(f, RepeatFilter)
    )
    repeat.clock = lambda: now[0]
    realtime = logging.getLogger("realtime._async.client")
    for attempt in range(11):  # 22 lines in 5 s, as with the platform down
        now[0] = attempt * 0.45
        realtime.error("Connection attempt failed: [Errno 111] Connection refused")
        realtime.error(
            "Connection failed permanently after %d attempts. Error: [Errno 111]", attempt + 1
        )
    logging.getLogger("uvicorn.error").warning("another message passes")
    now[0] = 61.0
    realtime.error("Connection attempt failed: [Errno 111] Connection refused")

    assert [x["message"] for x in json_lines(stream)] == [
        "Connection attempt failed: [Errno 111] Connection refused",
        "Connection failed permanently after 1 attempts. Error: [Errno 111]",
        "another message passes",
        "Connection attempt failed: [Errno 111] Connection refused"
        " (and 10 more like it in the last 61 s)",
    ]
