"""The devstack (Supabase's stand-in: REST + Realtime) killed outright with 50 calls waiting on
the relay, then started again on the same port and database. Operators answer every case: some
while it is down, some while it is starting (both committed straight into Postgres, whose
broadcasts nobody hears), the rest through REST once it is back. Every waiting call gets its own
answer, and no answer reaches two calls or one call twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

from fault_stack import (
    API_KEY,
    DevstackProcess,
    Stack,
    answer_in_db,
    answers_per_case,
    devstack_proc,  # noqa: F401 - the module-scoped fixture
    devstack_up,  # noqa: F401 - the fixture
    relay_child,
    sessions_by_call,
    wait_all_waiting,
)

from hitl_relay.mcp_client import ask_human

CALLS = 50


async def test_every_waiting_call_gets_its_answer_once_across_a_devstack_kill(
    devstack_up: DevstackProcess,  # noqa: F811
) -> None:
    db_url = devstack_up.env["DATABASE_URL"]
    calls = {f"kill-{i}-{uuid.uuid4().hex[:6]}": f"Kill question {i}?" for i in range(CALLS)}
    call_ids = list(calls)
    down, starting, back = call_ids[:20], call_ids[20:35], call_ids[35:]
    operator_id = str(uuid.uuid4())

    async with relay_child(devstack_up, HITL_NO_OPERATOR_ANSWERS_AT_ONCE="false") as relay:
        mcp_url = f"{relay.url}/mcp"
        waiting = {
            c: asyncio.create_task(ask_human(mcp_url, API_KEY, q, timeout_seconds=120, call_id=c))
            for c, q in calls.items()
        }
        await wait_all_waiting(db_url, call_ids)
        case_of = {
            c: str(r["case_id"]) for c, r in (await sessions_by_call(db_url, call_ids)).items()
        }

        t_kill = time.monotonic()
        await devstack_up.kill()
        await answer_in_db(db_url, {case_of[c]: f"Answer for {c}" for c in down}, operator_id)
        restart = asyncio.create_task(devstack_up.start())
        await answer_in_db(db_url, {case_of[c]: f"Answer for {c}" for c in starting}, operator_id)
        await restart
        restarted_s = time.monotonic() - t_kill
        operator = Stack(devstack_up, relay_url="").operator(auto_answer=False)
        await operator.start()
        try:
            for c in back:
                await operator.answer(case_of[c], f"Answer for {c}")
            results = await asyncio.wait_for(asyncio.gather(*waiting.values()), 90)
        finally:
            await operator.stop()
        all_returned_s = time.monotonic() - t_kill

    by_call = dict(zip(waiting, results, strict=True))
    assert {c: (r["status"], r["answer"], r["case_id"]) for c, r in by_call.items()} == {
        c: ("answered", f"Answer for {c}", case_of[c]) for c in call_ids
    }
    delivered = Counter(r["answer"] for r in results)
    assert max(delivered.values()) == 1
    assert set((await answers_per_case(db_url, list(case_of.values()))).values()) == {1}
    final = await sessions_by_call(db_url, call_ids)
    assert {r["status"] for r in final.values()} == {"answered"}
    print(
        f"\ndevstack killed with {CALLS} calls waiting: back in {restarted_s:.1f} s; "
        f"{len(down)} answered while down, {len(starting)} while starting, {len(back)} after; "
        f"all {CALLS} calls answered once, the last {all_returned_s:.1f} s after the kill"
    )
