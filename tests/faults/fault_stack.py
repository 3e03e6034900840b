"""Shared by the fault tests: the end-to-end stack of `tests/e2e/conftest.py` (a devstack
process, `hitl-relay serve` processes, simulated operators), loaded under its own module name so
these tests reuse it without duplicating it, plus database probes keyed by call id.

Calls are tracked through the database (`hil_sessions.retell_call_id`), never through Realtime
`case_opened` broadcasts: a broadcast in flight is lost when the devstack process dies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from waiting import wait_until

_E2E = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"


def _load_e2e() -> Any:
    if "e2e_stack" in sys.modules:
        return sys.modules["e2e_stack"]
    spec = importlib.util.spec_from_file_location("e2e_stack", _E2E)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["e2e_stack"] = module
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e()
API_KEY: str = e2e.API_KEY
DevstackProcess = e2e.DevstackProcess
Stack = e2e.Stack
devstack_proc = e2e.devstack_proc  # the module-scoped fixture: import it into a test module
relay_child = e2e.relay_child


@pytest.fixture
async def devstack_up(devstack_proc: Any) -> Any:
    """The module's devstack process (import `devstack_proc` too), started again if a test
    killed it."""
    if devstack_proc.child is None:
        await devstack_proc.start()
    return devstack_proc


async def sessions_by_call(db_url: str, call_ids: list[str]) -> dict[str, asyncpg.Record]:
    """The newest session of each call that has one: {call id: row}."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "select distinct on (s.retell_call_id) s.retell_call_id, s.id, s.case_id, s.status,"
            " s.instance_id, s.metadata -> 'close' ->> 'reason' as reason, c.status as case_status"
            " from hil_sessions s join cases c on c.id = s.case_id"
            " where s.retell_call_id = any($1::text[])"
            " order by s.retell_call_id, s.created_at desc",
            call_ids,
        )
    finally:
        await conn.close()
    return {r["retell_call_id"]: r for r in rows}


async def wait_all_waiting(db_url: str, call_ids: list[str], timeout_s: float = 60) -> None:
    """Until every call has a `waiting` session (each call's relay is listening on its case)."""

    async def all_waiting() -> bool:
        rows = await sessions_by_call(db_url, call_ids)
        return len(rows) == len(call_ids) and all(r["status"] == "waiting" for r in rows.values())

    await wait_until(all_waiting, f"{len(call_ids)} waiting sessions", timeout_s)


async def answer_in_db(db_url: str, answers: dict[str, str], operator_id: str) -> None:
    """Human answers committed straight into the database (the REST server may be down)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            "insert into messages (case_id, sender_type, sender_id, content)"
            " values ($1::uuid, 'human', $2::uuid, $3)",
            [(case_id, operator_id, text) for case_id, text in answers.items()],
        )
    finally:
        await conn.close()


async def answers_per_case(db_url: str, case_ids: list[str]) -> dict[str, int]:
    """How many answers each case has (`cases.answer_message_id` is decided once)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "select c.id::text as id, count(m.id) filter (where m.sender_type = 'human') as n"
            " from cases c left join messages m on m.case_id = c.id"
            " where c.id = any($1::uuid[]) group by c.id",
            case_ids,
        )
    finally:
        await conn.close()
    return {r["id"]: r["n"] for r in rows}
