"""The relay under a hosted Free project's Realtime limits: 300 calls arriving at 50 a second
(`HITL_DEVSTACK_LIMITS=free`: 100 joins and 100 messages a second per project, Supabase's 5 s
channel-error and 2 s connect-error backoffs), each answered by an operator as soon as its
session is waiting. Every call must get its own answer: none lost, none a fallback.

The figures (answered, fallbacks by reason, the devstack's join refusals, latency from the
call to its answer) are printed and recorded in the README's Reliability table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fault_stack import API_KEY, e2e, relay_child

from hitl_devstack.cluster import Cluster, free_port
from hitl_devstack.dev import python, spawn
from hitl_relay.mcp_client import connect

CALLS = 300
RATE = 50.0  # calls arriving per second
AGENTS = 30  # MCP sessions the calls arrive on
CALL_TIMEOUT_S = 60


class FreeDevstack(e2e.DevstackProcess):  # type: ignore[misc, name-defined]
    """The e2e devstack process, with the Free plan's limits and hosted backoffs."""

    async def start(self) -> None:
        env = {
            **os.environ,
            "HITL_HOME": str(self.home),
            "HITL_DEVSTACK_PORT": str(self.port),
            "HITL_PG_PORT": str(self.pg_port),
            "HITL_DEVSTACK_LIMITS": "free",
        }
        for name in list(env):
            if name.startswith("HITL_REALTIME_"):
                del env[name]  # the profile's numbers and Supabase's backoffs, nothing else
        self.child = await spawn(
            "devstack", [python(), "-m", "hitl_devstack"], env, self.home / "devstack.out"
        )
        await self.child.wait_for_line("devstack ready", timeout_s=60)


@pytest.fixture
async def free_devstack() -> AsyncIterator[Any]:
    root = Path(os.environ.get("HITL_HOME", Path(__file__).resolve().parents[2] / ".hitl"))
    home = root / f"free-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    home.mkdir(parents=True)
    proc = FreeDevstack(home=home, port=free_port(), pg_port=free_port())
    try:
        await proc.start()
        yield proc
    finally:
        await proc.stop()
        Cluster(home / "pg", port=proc.pg_port).destroy()
        shutil.rmtree(home, ignore_errors=True)


async def operator_answers(
    db_url: str, prefix: str, answered_at: dict[str, float], done: asyncio.Event
) -> None:
    """An operator answering every waiting call of this test as soon as it is waiting."""
    conn = await asyncpg.connect(db_url)
    operator_id = str(uuid.uuid4())
    try:
        while not done.is_set():
            rows = await conn.fetch(
                "select s.retell_call_id, s.case_id from hil_sessions s"
                " where s.retell_call_id like $1 and s.status = 'waiting'"
                " and not exists (select 1 from messages m where m.case_id = s.case_id"
                " and m.sender_type = 'human')",
                prefix + "%",
            )
            if rows:
                await conn.executemany(
                    "insert into messages (case_id, sender_type, sender_id, content)"
                    " values ($1, 'human', $2::uuid, $3)",
                    [
                        (r["case_id"], operator_id, f"Answer for {r['retell_call_id']}")
                        for r in rows
                    ],
                )
                now = time.monotonic()
                for r in rows:
                    answered_at.setdefault(r["retell_call_id"], now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)  # the operator's polling cadence
    finally:
        await conn.close()


async def ask(agent: Any, call_id: str, results: dict[str, dict[str, Any]]) -> None:
    arguments = {
        "question": f"Free-plan question {call_id}?",
        "session_id": call_id,
        "call_id": call_id,
        "agent_id": "free-load",
        "timeout_seconds": CALL_TIMEOUT_S,
    }
    started = time.monotonic()
    got = await agent.call_tool("ask_human", arguments)
    results[call_id] = {
        **(got.structured_content or {"status": "no result", "answer": None}),
        "_took_s": time.monotonic() - started,
    }


LIMIT_SIGNS = (
    r"ClientJoinRateLimitReached|MessagePerSecondRateLimitReached|UnableToBroadcastChanges"
    r"|realtime join refused|realtime channel lost"
)


def limit_signs(home: Path) -> Counter[str]:
    """What the devstack (refusals, dropped broadcasts) and the relay (refused joins, lost
    channels) logged about limits."""
    found: Counter[str] = Counter()
    for log in [home / "devstack.out", *home.glob("relay-*.out")]:
        text = log.read_text(errors="replace") if log.exists() else ""
        found.update(f"{log.stem}: {m}" for m in re.findall(LIMIT_SIGNS, text))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_300_calls_at_50_a_second_on_the_free_plan_are_all_answered(
    free_devstack: Any,
) -> None:
    db_url = free_devstack.env["DATABASE_URL"]
    prefix = f"free-{uuid.uuid4().hex[:6]}-"
    call_ids = [f"{prefix}{i}" for i in range(CALLS)]
    results: dict[str, dict[str, Any]] = {}
    answered_at: dict[str, float] = {}
    done = asyncio.Event()
    async with (
        relay_child(free_devstack, HITL_NO_OPERATOR_ANSWERS_AT_ONCE="false") as relay,
        contextlib.AsyncExitStack() as clients,
    ):
        mcp_url = f"{relay.url}/mcp"
        agents = [
            await clients.enter_async_context(connect(mcp_url, API_KEY)) for _ in range(AGENTS)
        ]
        operator = asyncio.create_task(operator_answers(db_url, prefix, answered_at, done))
        try:
            t0 = time.monotonic()
            calls = []
            for i, call_id in enumerate(call_ids):
                delay = t0 + i / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the arrival schedule, not synchronisation
                calls.append(asyncio.create_task(ask(agents[i % AGENTS], call_id, results)))
            arrived_s = time.monotonic() - t0
            await asyncio.wait_for(asyncio.gather(*calls), CALL_TIMEOUT_S + 60)
            total_s = time.monotonic() - t0
        finally:
            done.set()
            await operator

    statuses = Counter(str(r.get("status")) for r in results.values())
    took = sorted(r["_took_s"] for r in results.values())
    p50, p99 = took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.99))]
    refused = limit_signs(free_devstack.home)
    print(
        f"\nfree plan: {CALLS} calls at {RATE:g}/s (arrived in {arrived_s:.1f} s, all returned "
        f"after {total_s:.1f} s): {dict(statuses)}; call->answer p50 {p50:.2f} s, "
        f"p99 {p99:.2f} s, max {took[-1]:.2f} s; limits logged: {dict(refused) or 'none'}"
    )
    # the devstack ran with the Free plan's numbers
    started = (free_devstack.home / "devstack.out").read_text(errors="replace")
    assert "realtime limits: 200 connections, 100 joins/s, 100 messages/s" in started
    assert {c: (results[c]["status"], results[c]["answer"]) for c in call_ids} == {
        c: ("answered", f"Answer for {c}") for c in call_ids
    }
