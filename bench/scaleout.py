"""Scale-out: a call resumed on another replica while the replica it started on is killed.

An agent asks on one replica and the case opens; that replica's process is killed (SIGKILL, no
drain: the call's connection just breaks, as when a machine dies); the agent then picks the case
up on another replica with `get_human_answer`: `pending` before the operator answers, the
operator's answer after. Nothing about the case lives in a relay process, so any replica serves
it. Reported, with the time from the answer's commit to the pick-up; nothing asserted here (the
bench's smoke test checks the outcome).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.run import Stack
from bench.success import OnDuty
from hitl_devstack.operator_sim import SimulatedOperator

STEP_TIMEOUT_S = 30.0
PICK_UP_EVERY_S = 0.2  # how often the agent asks again ("check again a little later")


async def _tool(url: str, api_key: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {api_key}"}, timeout=httpx2.Timeout(STEP_TIMEOUT_S)
    )
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        res = await client.call_tool(name, args)
    out = dict(res.structured_content or {})
    if res.is_error:
        out.setdefault("status", "error")
        out.setdefault("error", " ".join(getattr(c, "text", "") for c in res.content))
    return out


async def resume_on_another_replica(s: Stack) -> dict[str, Any]:
    """Ask on the last replica, kill it, pick the answer up on the first."""
    if len(s.relays) < 2:
        return {"skipped": "needs at least two replicas"}
    victim, survivor = len(s.relays) - 1, 0
    run = uuid.uuid4().hex[:8]
    question = f"[resume/{run}] Can the caller keep the loan car until Friday?"
    answer = f"Answer to: {question}"
    report: dict[str, Any] = {
        "asked_on": s.instance_ids[victim],
        "killed": s.instance_ids[victim],
        "picked_up_on": s.instance_ids[survivor],
    }
    operator = SimulatedOperator(
        s.url, s.anon_key, s.operator_token, s.operator_id, auto_answer=False
    )
    await operator.start()
    duty = OnDuty(s.url, s.anon_key, s.operator_token)
    await duty.start()
    ask = asyncio.create_task(
        _tool(
            s.mcp_urls[victim],
            s.api_key,
            "ask_human",
            {
                "question": question,
                "call_id": f"resume-{run}",
                "session_id": f"resume-{run}",
                "agent_id": "bench-agent",
                "timeout_seconds": 120,
            },
        )
    )
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                case = await operator.next_case(timeout_s=STEP_TIMEOUT_S)
                if case.get("question") == question:
                    break
        case_id = str(case["case_id"])
        report["case_id"] = case_id
        s.relays[victim].proc.kill()  # SIGKILL: no drain, no goodbye
        await s.relays[victim].proc.wait()
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                first = await ask
            report["first_call"] = f"returned {first.get('status')}"
        except Exception as e:  # the call's connection broke with its process
            report["first_call"] = f"{e.__class__.__name__}: {e}"[:200]
        args = {"case_id": case_id}
        before = await _tool(s.mcp_urls[survivor], s.api_key, "get_human_answer", args)
        report["before_answer"] = before.get("status")
        sent = await operator.answer(case_id, answer)
        committed = time.monotonic()
        after: dict[str, Any] = {}
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while after.get("status") != "answered":
                after = await _tool(s.mcp_urls[survivor], s.api_key, "get_human_answer", args)
                if after.get("status") != "answered":
                    await asyncio.sleep(PICK_UP_EVERY_S)  # the agent asks again later
        report["after_answer"] = after.get("status")
        report["answer_matches"] = after.get("answer") == answer == sent.content
        report["picked_up_ms"] = round((time.monotonic() - committed) * 1000, 1)
    except Exception as e:  # a scenario that fails is reported, never waited on
        report["error"] = f"{e.__class__.__name__}: {e}"[:300]
    finally:
        if not ask.done():
            ask.cancel()
        await asyncio.gather(ask, return_exceptions=True)
        await operator.stop()
        await duty.stop()
    return report
