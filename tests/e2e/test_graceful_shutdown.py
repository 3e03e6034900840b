"""SIGTERM to a relay with calls waiting: every call gets its fallback at once, naming its case;
the process exits cleanly; the cases stay open and their answers reach `get_human_answer`."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
from conftest import API_KEY, DevstackProcess, Stack, relay_child, relay_process

from hitl_devstack.operator_sim import SimulatedOperator
from hitl_relay.mcp_client import ask_human, connect

CALLS = 20


async def test_sigterm_answers_every_waiting_call_with_the_fallback_and_exits(
    devstack_proc: DevstackProcess,
) -> None:
    if devstack_proc.child is None:
        await devstack_proc.start()
    questions = [f"Shutdown question {i} {uuid.uuid4().hex[:6]}" for i in range(CALLS)]
    operator_present = _operator(devstack_proc)
    await operator_present.start()
    try:
        # INFO: the shutdown line checked below (HITL_LOG_LEVEL is applied since hitl_relay.logs)
        async with relay_child(devstack_proc, HITL_LOG_LEVEL="INFO") as relay:
            mcp_url = f"{relay.url}/mcp"
            calls = [
                asyncio.create_task(ask_human(mcp_url, API_KEY, q, timeout_seconds=120))
                for q in questions
            ]
            cases = {}
            while len(cases) < CALLS:  # every case open: every call is waiting
                case = await operator_present.next_case(timeout_s=30)
                cases[str(case["case_id"])] = case["question"]
            t_signal = time.monotonic()
            relay.child.proc.send_signal(signal.SIGTERM)
            results = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)
            returned_s = time.monotonic() - t_signal
            code = await asyncio.wait_for(relay.child.proc.wait(), timeout=30)
            exited_s = time.monotonic() - t_signal
    finally:
        await operator_present.stop()
    print(
        f"\nSIGTERM with {CALLS} waiting calls: all returned in {returned_s * 1000:.0f} ms, "
        f"process exited (code {code}) in {exited_s * 1000:.0f} ms"
    )
    # uvicorn re-raises the signal once shut down (exit status 143 in a shell), as it should.
    assert code in (0, -signal.SIGTERM)
    log = relay.child.log_path.read_text()
    assert f"shutting down: {CALLS} waiting call(s) answered with the fallback" in log
    assert "Traceback" not in log
    assert [r["status"] for r in results] == ["timeout"] * CALLS
    assert {r["case_id"] for r in results} == set(cases)
    assert returned_s < 10  # drain timeout 5 s; without the drain they would wait 120 s

    conn = await asyncpg.connect(devstack_proc.env["DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "select c.status as case_status, s.status, s.metadata->'close'->>'reason' as reason"
            " from cases c join hil_sessions s on s.case_id = c.id where c.id = any($1::uuid[])",
            list(cases),
        )
    finally:
        await conn.close()
    assert len(rows) == CALLS
    assert {(r["case_status"], r["status"], r["reason"]) for r in rows} == {
        ("open", "cancelled", "relay shutting down")
    }

    # The cases stay answerable: an operator answers one, another relay returns it.
    case_id = next(iter(cases))
    operator = _operator(devstack_proc)
    await operator.start()
    try:
        await operator.answer(case_id, "Answered after the restart.")
    finally:
        await operator.stop()
    async with relay_process(devstack_proc) as url, connect(f"{url}/mcp", API_KEY) as client:
        got = await client.call_tool("get_human_answer", {"case_id": case_id})
    assert got.structured_content is not None
    assert got.structured_content["status"] == "answered"
    assert got.structured_content["answer"] == "Answered after the restart."


def _operator(devstack_proc: DevstackProcess) -> SimulatedOperator:
    return Stack(devstack_proc, relay_url="").operator(auto_answer=False)
