"""1,000 calls waiting at once on one relay process, answered in random order: each gets its
own answer; the relay's Realtime sockets and channels stay within the pool's bounds (at most
`HITL_CHANNELS_PER_SOCKET` channels per socket), its TCP connections to the platform stay
bounded, and its memory per waiting call is reported (RSS, from /proc)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_stack import (
    API_KEY,
    DevstackProcess,
    answer_in_db,
    devstack_proc,  # noqa: F401 - the module-scoped fixture
    devstack_up,  # noqa: F401 - the fixture
    relay_child,
    sessions_by_call,
    wait_all_waiting,
)
from waiting import wait_until

from hitl_relay.adapters.supabase_store import MAX_IN_FLIGHT
from hitl_relay.mcp_client import connect

CALLS = 1000
AGENTS = 50  # MCP sessions, 20 calls each at once
CHANNELS_PER_SOCKET = 100
SEED = 7


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1)) * 1024


def tcp_links_to(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` to 127.0.0.1:`port` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


def gauge(exposition: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", exposition, re.M)
    assert match is not None, name
    return float(match.group(1))


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_thousand_waiting_calls_stay_within_the_pools_bounds(
    devstack_up: DevstackProcess,  # noqa: F811
) -> None:
    db_url = devstack_up.env["DATABASE_URL"]
    prefix = f"load-{uuid.uuid4().hex[:6]}-"
    call_ids = [f"{prefix}{i}" for i in range(CALLS)]
    results: dict[str, dict[str, Any]] = {}
    async with (
        relay_child(
            devstack_up,
            HITL_NO_OPERATOR_ANSWERS_AT_ONCE="false",
            HITL_CHANNELS_PER_SOCKET=str(CHANNELS_PER_SOCKET),
        ) as relay,
        contextlib.AsyncExitStack() as clients,
        httpx.AsyncClient() as http,
    ):
        pid = relay.child.proc.pid
        mcp_url = f"{relay.url}/mcp"
        agents = [
            await clients.enter_async_context(connect(mcp_url, API_KEY)) for _ in range(AGENTS)
        ]
        # A warm-up call (imports, pools), answered, before the baseline is taken.
        warm = f"{prefix}warm"
        warm_call = asyncio.create_task(ask(agents[0], warm, results))
        await wait_all_waiting(db_url, [warm])
        warm_case = str((await sessions_by_call(db_url, [warm]))[warm]["case_id"])
        await answer_in_db(db_url, {warm_case: f"Answer for {warm}"}, str(uuid.uuid4()))
        await warm_call
        rss_idle = rss_bytes(pid)

        t0 = time.monotonic()
        calls = [
            asyncio.create_task(ask(agents[i % AGENTS], c, results)) for i, c in enumerate(call_ids)
        ]
        await wait_all_waiting(db_url, call_ids, timeout_s=300)

        # A session waits in the database as soon as its case is open; its channel join runs
        # beside the open and is paced (HITL_REALTIME_JOINS_PER_SECOND), so it can finish later.
        async def all_joined() -> bool:
            exposed = (await http.get(f"{relay.url}/metrics")).text
            return gauge(exposed, "hitl_realtime_channels") >= CALLS

        await wait_until(all_joined, f"{CALLS} case channels joined", timeout_s=120)
        all_waiting_s = time.monotonic() - t0
        rss_waiting = rss_bytes(pid)
        links = tcp_links_to(pid, devstack_up.port)
        exposed = (await http.get(f"{relay.url}/metrics")).text
        sockets = gauge(exposed, "hitl_realtime_sockets")
        channels = gauge(exposed, "hitl_realtime_channels")
        waiting_calls = gauge(exposed, "hitl_waiting_calls")

        case_of = {
            c: str(r["case_id"]) for c, r in (await sessions_by_call(db_url, call_ids)).items()
        }
        order = list(call_ids)
        random.Random(SEED).shuffle(order)
        t_answer = time.monotonic()
        await answer_in_db(
            db_url, {case_of[c]: f"Answer for {c}" for c in order}, str(uuid.uuid4())
        )
        await asyncio.wait_for(asyncio.gather(*calls), 300)
        answered_s = time.monotonic() - t_answer

    per_call = (rss_waiting - rss_idle) / CALLS
    print(
        f"\n{CALLS} calls waiting after {all_waiting_s:.1f} s: relay RSS {rss_idle / 2**20:.0f} MiB"
        f" idle -> {rss_waiting / 2**20:.0f} MiB ({per_call / 1024:.1f} KiB per waiting call); "
        f"{sockets:.0f} realtime sockets, {channels:.0f} channels, {links} TCP connections to the "
        f"platform; all answered (random order) within {answered_s:.1f} s"
    )
    assert {c: (results[c]["status"], results[c]["answer"]) for c in call_ids} == {
        c: ("answered", f"Answer for {c}") for c in call_ids
    }
    assert waiting_calls == CALLS
    assert channels >= CALLS
    assert sockets <= math.ceil((channels + 1) / CHANNELS_PER_SOCKET) + 1
    assert links <= sockets + MAX_IN_FLIGHT  # the adapter's HTTP pool is that large


async def ask(agent: Any, call_id: str, results: dict[str, dict[str, Any]]) -> None:
    arguments = {
        "question": f"Load question {call_id}?",
        "session_id": call_id,
        "call_id": call_id,
        "agent_id": "load-test",
        "timeout_seconds": 600,
    }
    got = await agent.call_tool("ask_human", arguments)
    results[call_id] = got.structured_content or {"status": "no result", "answer": None}
