"""The plan's four success figures for one bench run, and what the simulated operator and the
polling baseline must do for them to mean something.

- `OnDuty`: the simulated operator records its availability as the console does, with the
  `hitl_operator_heartbeat` RPC every 30 s while on duty (console.js `heartbeat`), plus one beat
  when it goes off duty so the interval reaches the end of the run. Without it utilisation has
  no denominator.
- `close_session`: the polling baseline closes its session (`answered` / `timed_out`) the way
  the relay does, so its cases are not left `waiting` until the expiry job counts them expired.
- `success_figures`: `hitl_success_metrics` over the run's window, once every session of the
  run is closed (the relay closes a session just after returning the answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from bench.stats import LevelResult

# The console's cadence (hitl_relay/console/static/console.js: every 30 s while available).
HEARTBEAT_S = 30.0
FIGURES = ("avg_response_s", "success_rate", "timeout_rate", "operator_utilisation")
# The finished cases by outcome ("cannot answer" is not success); they add up to `finished`.
COUNTS = ("cases", "finished", "answered", "cannot_answer", "timed_out", "other")


class OnDuty:
    """An operator available from `start()` to `stop()`, beating like the console."""

    def __init__(self, url: str, anon_key: str, operator_token: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={"apikey": anon_key, "Authorization": f"Bearer {operator_token}"},
            timeout=10,
        )
        self._task: asyncio.Task[None] | None = None
        self.started_at: datetime | None = None
        self.beats = 0

    async def _beat(self) -> None:
        r = await self._http.post(
            "/rest/v1/rpc/hitl_operator_heartbeat", json={"p_status": "available"}
        )
        if r.status_code != 200:
            raise RuntimeError(f"hitl_operator_heartbeat answered {r.status_code}: {r.text}")
        self.beats += 1

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)  # the console's cadence
            await self._beat()

    async def start(self) -> None:
        self.started_at = datetime.now(UTC)
        await self._beat()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Off duty: stop beating, after a last beat that ends the interval now. Idempotent."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self._beat()
        finally:
            await self._http.aclose()


async def close_session(http: httpx.AsyncClient, session_id: str, status: str) -> None:
    """`hitl_close_session` as the relay calls it (the client is the service role's)."""
    r = await http.post(
        "/rest/v1/rpc/hitl_close_session",
        json={"p_session_id": session_id, "p_status": status, "p_detail": {"by": "bench"}},
    )
    r.raise_for_status()


async def success_figures(
    db_url: str, started_at: datetime | None, case_ids: list[str], *, settle_s: float = 15.0
) -> dict[str, Any] | None:
    """`hitl_success_metrics` from `started_at` to now, once no session of `case_ids` waits.

    The figures as the SQL returns them ({value, target, met} each, plus the counts); None if
    the run never started.
    """
    if started_at is None:
        return None
    conn = await asyncpg.connect(db_url)
    try:
        end = time.monotonic() + settle_s
        while await conn.fetchval(
            "select count(*) from hil_sessions where case_id = any($1::uuid[])"
            " and status = 'waiting'",
            case_ids,
        ):
            if time.monotonic() > end:
                break  # reported as unfinished cases, not hidden
            await asyncio.sleep(0.05)  # polling the database for the relay's closes
        raw = await conn.fetchval("select hitl_success_metrics($1, now())", started_at)
    finally:
        await conn.close()
    figures: dict[str, Any] = json.loads(raw)
    return {
        "window": figures["window"],
        **{key: figures[key] for key in COUNTS},
        **{key: figures[key] for key in FIGURES},
        "cannot_answer_rate": figures["cannot_answer_rate"],
    }


def _cell(figure: dict[str, Any] | None, unit: str) -> str:
    value = (figure or {}).get("value")
    if value is None:
        return "-"
    shown = f"{float(value) * 100:.1f} %" if unit == "%" else f"{float(value):.2f} s"
    mark = "[green]met[/]" if (figure or {}).get("met") else "[red]missed[/]"
    return f"{shown} {mark}"


def _share(figure: dict[str, Any] | None) -> str:
    """A rate without a target ("cannot answer")."""
    value = (figure or {}).get("value")
    return "-" if value is None else f"{float(value) * 100:.1f} %"


def render_success(results: Sequence[LevelResult], console: Console) -> None:
    """The four figures of each run against the plan's targets (the realtime rows are the
    product's)."""
    table = Table(
        title="success figures per run (hitl_success_metrics over the run's window); targets: "
        "response < 30 s, success > 95 %, timeout < 5 %, utilisation > 70 %"
    )
    columns = ("mode", "level", "cases", "avg response", "success", "cannot answer", "timeout")
    for column in (*columns, "utilisation"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in results:
        f = r.success or {}
        table.add_row(
            r.mode,
            str(r.level),
            f"{f.get('finished', '-')}/{f.get('cases', '-')}",
            _cell(f.get("avg_response_s"), "s"),
            _cell(f.get("success_rate"), "%"),
            _share(f.get("cannot_answer_rate")),
            _cell(f.get("timeout_rate"), "%"),
            _cell(f.get("operator_utilisation"), "%"),
        )
    console.print(table)
