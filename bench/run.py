"""Drive N concurrent escalations through the real stack, in two modes, and measure.

Phases per (mode, level), so each figure is measured when only that thing happens:
  1. open:   N calls start at once; the simulated operator records when each case_opened arrives
             (case creation = call started → case visible to an operator subscriber).
  2. wait:   nothing is answered for `wait_s`; database statements per second (pg_stat_statements,
             this database only) and the relay's RSS are sampled: that load is waiting's alone.
  3. answer: the operator answers every case through PostgREST after a random think time.

Modes:
  realtime  the product: MCP `ask_human` over streamable HTTP to a relay process, which waits on
            Supabase Realtime (the devstack).
  polling   the integration plan's option A, in this file only: `hitl_open_case` over RPC, then
            `GET /rest/v1/messages?case_id=eq.<id>&sender_type=eq.human` with backoff 0.5 → 2 s.

Delivery is measured against the database's clock: the answer's commit timestamp
(`pg_xact_commit_timestamp`, the cluster runs with `track_commit_timestamp = on`; on a cluster
without it, `messages.created_at`, set when the operator's insert transaction began, so delivery
is over-stated by that transaction's duration) to the wall-clock instant the caller had the
answer. Both clocks are this machine's. The relay's own view (answer created → relay has it,
the `hitl_delivery_seconds` histogram) is reported next to it.

Calls arrive at `rate` per second (a burst when 0), so "N concurrent" means N calls waiting at
once, as on a busy line, rather than N requests in the same millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.stats import LevelResult
from bench.success import OnDuty, close_session, success_figures
from hitl_relay.devstack.cluster import free_port
from hitl_relay.devstack.dev import Child, python, read_env_file, spawn, wait_http_ok
from hitl_relay.devstack.operator_sim import SimulatedOperator

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    url: str
    anon_key: str
    service_key: str
    operator_token: str
    operator_id: str
    db_url: str
    mcp_url: str
    api_key: str
    relay: Child
    devstack: Child | None

    async def stop(self) -> None:
        await self.relay.stop()
        if self.devstack is not None:
            await self.devstack.stop()


async def _devstack_alive(env: dict[str, str]) -> bool:
    url = env.get("SUPABASE_URL")
    if not url:
        return False
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(f"{url}/rest/v1/", headers={"apikey": env["SUPABASE_ANON_KEY"]})
            return r.status_code < 500
    except (httpx.HTTPError, KeyError):
        return False


@contextlib.asynccontextmanager
async def stack(
    home: Path, *, log_dir: Path, relay_env: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    """Reuse a running devstack (`.hitl/devstack.env`) or start one; always start a relay
    (its environment plus `relay_env`)."""
    env_file = home / "devstack.env"
    env = read_env_file(env_file)
    devstack: Child | None = None
    base_env = {**os.environ, "HITL_HOME": str(home)}
    if not await _devstack_alive(env):
        devstack = await spawn(
            "devstack", [python(), "-m", "hitl_relay.devstack"], base_env, log_dir / "devstack.log"
        )
        await devstack.wait_for_line("devstack ready")
        env = read_env_file(env_file)
    api_key = "bench_" + secrets.token_urlsafe(24)
    port = free_port()
    env_of_relay = {
        **base_env,
        "HITL_BACKEND": "supabase",
        "SUPABASE_URL": env["SUPABASE_URL"],
        "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
        "SUPABASE_SERVICE_ROLE_KEY": env["SUPABASE_SERVICE_ROLE_KEY"],
        "HITL_API_KEYS": api_key,
        "HITL_HOST": "127.0.0.1",
        "HITL_PORT": str(port),
        "HITL_LOG_LEVEL": "WARNING",
        "HITL_MAX_TIMEOUT_SECONDS": "600",
        **(relay_env or {}),
    }
    relay = await spawn(
        "relay", [python(), "-m", "hitl_relay.cli", "serve"], env_of_relay, log_dir / "relay.log"
    )
    try:
        await relay.wait_for_line("hitl-relay: MCP at")
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        yield Stack(
            url=env["SUPABASE_URL"],
            anon_key=env["SUPABASE_ANON_KEY"],
            service_key=env["SUPABASE_SERVICE_ROLE_KEY"],
            operator_token=env["HITL_OPERATOR_TOKEN"],
            operator_id=env["HITL_OPERATOR_ID"],
            db_url=env["DATABASE_URL"],
            mcp_url=f"http://127.0.0.1:{port}/mcp",
            api_key=api_key,
            relay=relay,
            devstack=devstack,
        )
    finally:
        await relay.stop()
        if devstack is not None:
            await devstack.stop()


class DbLoad:
    """Statements executed in the stack's database (pg_stat_statements; else transactions)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.source = "pg_stat_statements"

    async def sample(self) -> float:
        conn = await asyncpg.connect(self.db_url)
        try:
            try:
                await conn.execute("create extension if not exists pg_stat_statements")
                value = await conn.fetchval(
                    "select coalesce(sum(calls), 0) from pg_stat_statements"
                    " where dbid = (select oid from pg_database where datname = current_database())"
                )
            except asyncpg.PostgresError:
                self.source = "pg_stat_database.xact_commit"
                value = await conn.fetchval(
                    "select xact_commit + xact_rollback from pg_stat_database"
                    " where datname = current_database()"
                )
            return float(value)
        finally:
            await conn.close()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


async def relay_gauges(mcp_url: str) -> dict[str, float]:
    url = mcp_url.removesuffix("/mcp") + "/metrics"
    out: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            text = (await client.get(url)).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        for name in ("hitl_realtime_sockets", "hitl_realtime_channels", "hitl_waiting_calls"):
            if line.startswith(name + " ") or line.startswith(name + "{"):
                with contextlib.suppress(ValueError):
                    out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def relay_histogram(mcp_url: str, name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts from the relay's /metrics (le → count)."""
    url = mcp_url.removesuffix("/mcp") + "/metrics"
    async with httpx.AsyncClient(timeout=3) as client:
        text = (await client.get(url)).text
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    rank = q * buckets[edges[-1]]
    lower_edge, lower_count = 0.0, 0.0
    for le in edges:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower_edge
            if count == lower_count:
                return le
            return lower_edge + (le - lower_edge) * (rank - lower_count) / (count - lower_count)
        lower_edge, lower_count = le, count
    return lower_edge


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _question(run: str, i: int) -> str:
    return f"[{run}/{i}] Can the caller get a refund for order {i}?"


def _expected_answer(question: str) -> str:
    return f"Answer to: {question}"


COMMIT_CLOCK = "answer's commit timestamp (pg_xact_commit_timestamp)"
CREATED_CLOCK = "messages.created_at (start of the operator's insert transaction)"


async def _created_at(db_url: str, case_ids: list[str]) -> dict[str, datetime]:
    """case id → when its answer was committed (else when its insert began: `delivery_clock`)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "select c.id::text as case_id,"
            " case when $2 then pg_xact_commit_timestamp(m.xmin) else m.created_at end as at"
            " from cases c join messages m on m.id = c.answer_message_id"
            " where c.id = any($1::uuid[])",
            case_ids,
            await _commit_timestamps(conn),
        )
    finally:
        await conn.close()
    return {r["case_id"]: r["at"] for r in rows if r["at"] is not None}


async def _case_commits(db_url: str, case_ids: list[str]) -> dict[str, datetime]:
    """case id → when its insert committed; read before any answer updates the row. Empty
    without `track_commit_timestamp`."""
    conn = await asyncpg.connect(db_url)
    try:
        if not await _commit_timestamps(conn):
            return {}
        rows = await conn.fetch(
            "select id::text as case_id, pg_xact_commit_timestamp(xmin) as at"
            " from cases where id = any($1::uuid[])",
            case_ids,
        )
    finally:
        await conn.close()
    return {r["case_id"]: r["at"] for r in rows if r["at"] is not None}


def _split_creation(
    result: LevelResult,
    cases: dict[str, str],
    started: dict[str, float],
    seen: dict[str, float],
    commits: dict[str, datetime],
) -> None:
    """Call started → case committed → operator has case_opened, from monotonic instants (this
    process) and the database's commit clock (same machine) through one wall-clock offset."""
    wall_minus_mono = time.time() - time.monotonic()
    for case_id, question in cases.items():
        committed = commits.get(case_id)
        if committed is None or question not in started or case_id not in seen:
            continue
        at = committed.timestamp()
        result.create_to_commit_ms.append((at - started[question] - wall_minus_mono) * 1000)
        result.create_commit_to_operator_ms.append((seen[case_id] + wall_minus_mono - at) * 1000)


async def _commit_timestamps(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("select current_setting('track_commit_timestamp') = 'on'"))


async def delivery_clock(db_url: str) -> str:
    conn = await asyncpg.connect(db_url)
    try:
        return COMMIT_CLOCK if await _commit_timestamps(conn) else CREATED_CLOCK
    finally:
        await conn.close()


def call_timeout(level: int, rate: float, wait_s: float, spread_s: float) -> int:
    """Each call's deadline: long enough for every call to arrive, the waiting window and the
    answers (plus a minute), within the relay's 600 s maximum."""
    arrivals_s = level / rate if rate > 0 else 0.0
    return min(600, int(arrivals_s + wait_s + spread_s + 60))


async def pace(t0: float, i: int, rate: float) -> None:
    """Call i arrives at t0 + i / rate (the arrival schedule, not a synchronisation)."""
    if rate > 0:
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))


async def _answer_all(operator: SimulatedOperator, cases: dict[str, str], spread_s: float) -> None:
    async def one(case_id: str, question: str) -> None:
        await asyncio.sleep(random.uniform(0, spread_s))  # operator think time, not sync
        await operator.answer(case_id, _expected_answer(question))

    await asyncio.gather(*(one(c, q) for c, q in cases.items()))


async def _wait_for_cases(
    operator: SimulatedOperator, questions: dict[str, int], deadline_s: float
) -> dict[str, str]:
    """case_id → question, for every question of this run, as operators see them open."""
    seen: dict[str, str] = {}
    end = time.monotonic() + deadline_s
    while len(seen) < len(questions):
        case = await operator.next_case(timeout_s=max(0.1, end - time.monotonic()))
        if case.get("question") in questions:
            seen[str(case["case_id"])] = str(case["question"])
    return seen


async def _open_and_wait_phases(
    result: LevelResult,
    operator: SimulatedOperator,
    questions: dict[str, int],
    started: dict[str, float],
    load: DbLoad,
    *,
    wait_s: float,
    pid: int,
    rss_idle: float | None,
) -> dict[str, str]:
    """Phases 1 and 2: every case open (creation latency), then pure waiting (DB load, RSS)."""
    level = result.level
    cases = await _wait_for_cases(
        operator, questions, deadline_s=60 + level / 4 + level / max(result.rate, 1.0)
    )
    for case_id, question in cases.items():
        result.create_ms.append((operator.opened[case_id] - started[question]) * 1000)
    before = await load.sample()
    t_wait = time.monotonic()
    await asyncio.sleep(wait_s)  # the measurement window itself
    after = await load.sample()
    # -2: the two sampling statements themselves
    result.db_statements_per_s = round(
        max(0.0, after - before - 2) / (time.monotonic() - t_wait), 2
    )
    rss_wait = rss_mb(pid)
    if rss_wait is not None:
        result.rss_mb = round(rss_wait, 1)
        if rss_idle is not None:
            result.rss_kb_per_wait = round((rss_wait - rss_idle) * 1024 / level, 1)
    return cases


async def run_realtime(
    s: Stack, level: int, *, wait_s: float, spread_s: float, rate: float = 0.0
) -> LevelResult:
    result = LevelResult(mode="realtime", level=level, rate=rate)
    run = uuid.uuid4().hex[:8]
    operator = SimulatedOperator(
        s.url, s.anon_key, s.operator_token, s.operator_id, auto_answer=False
    )
    await operator.start()
    duty = OnDuty(s.url, s.anon_key, s.operator_token)  # available, as the console says
    await duty.start()
    load = DbLoad(s.db_url)
    rss_idle = rss_mb(s.relay.proc.pid)
    questions = {_question(run, i): i for i in range(level)}
    started: dict[str, float] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    returned_wall: dict[str, datetime] = {}
    n_clients = max(1, min(20, level // 50 or 1))
    limits = httpx2.Limits(max_connections=level + 10, max_keepalive_connections=level + 10)
    timeout_s = call_timeout(level, rate, wait_s, spread_s)

    async def ask(client: Client, question: str) -> None:
        i = questions[question]
        await pace(t0, i, rate)
        started[question] = time.monotonic()
        res = await client.call_tool(
            "ask_human",
            {
                "question": question,
                "context": "benchmark",
                "session_id": f"bench-{run}-{i}",
                "call_id": f"bench-{run}-{i}",
                "agent_id": "bench-agent",
                "priority": 3,
                "urgency": "medium",
                "timeout_seconds": timeout_s,
            },
        )
        returned_wall[question] = datetime.now(UTC)
        outcomes[question] = dict(res.structured_content or {})
        if res.is_error:
            outcomes[question].setdefault("status", "error")

    async def client_worker(qs: list[str]) -> None:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {s.api_key}"},
            limits=limits,
            timeout=httpx2.Timeout(timeout_s + 30.0),
        )
        async with http, Client(streamable_http_client(s.mcp_url, http_client=http)) as client:
            # What an agent does when it connects. Without it the SDK's client lists the tools
            # after its first result (to validate it against the output schema), and that round
            # trip lands inside the first call's delivery: about 6 ms, all of a lone call's gap.
            await client.list_tools()
            await asyncio.gather(*(ask(client, q) for q in qs))

    delivery_before = await relay_histogram(s.mcp_url, "hitl_delivery_seconds")
    creation_before = await relay_histogram(s.mcp_url, "hitl_case_creation_seconds")
    t0 = time.monotonic()
    qlist = list(questions)
    workers = [asyncio.create_task(client_worker(qlist[k::n_clients])) for k in range(n_clients)]
    try:
        cases = await _open_and_wait_phases(
            result,
            operator,
            questions,
            started,
            load,
            wait_s=wait_s,
            pid=s.relay.proc.pid,
            rss_idle=rss_idle,
        )
        created = histogram_delta(
            creation_before, await relay_histogram(s.mcp_url, "hitl_case_creation_seconds")
        )
        result.relay_create_ms = {
            f"p{q}": _ms(histogram_quantile(created, q / 100)) for q in (50, 95, 99)
        }
        commits = await _case_commits(s.db_url, list(cases))
        _split_creation(result, cases, started, operator.opened, commits)
        gauges = await relay_gauges(s.mcp_url)
        result.sockets = (
            int(gauges["hitl_realtime_sockets"]) if "hitl_realtime_sockets" in gauges else None
        )
        result.channels = (
            int(gauges["hitl_realtime_channels"]) if "hitl_realtime_channels" in gauges else None
        )
        # Phase 3: answers.
        await _answer_all(operator, cases, spread_s)
        await asyncio.gather(*workers)
        delivered = histogram_delta(
            delivery_before, await relay_histogram(s.mcp_url, "hitl_delivery_seconds")
        )
        result.relay_delivery_ms = {
            f"p{q}": _ms(histogram_quantile(delivered, q / 100)) for q in (50, 95, 99)
        }
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await operator.stop()
        await duty.stop()
    result.wall_s = time.monotonic() - t0
    _score(
        result, questions, cases, outcomes, returned_wall, await _created_at(s.db_url, list(cases))
    )
    result.success = await success_figures(s.db_url, duty.started_at, list(cases))
    return result


async def run_polling(
    s: Stack, level: int, *, wait_s: float, spread_s: float, rate: float = 0.0
) -> LevelResult:
    """The plan's option A: open the case over RPC, then poll REST with backoff 0.5 → 2 s."""
    result = LevelResult(mode="polling", level=level, rate=rate)
    run = uuid.uuid4().hex[:8]
    operator = SimulatedOperator(
        s.url, s.anon_key, s.operator_token, s.operator_id, auto_answer=False
    )
    await operator.start()
    duty = OnDuty(s.url, s.anon_key, s.operator_token)  # available, as the console says
    await duty.start()
    load = DbLoad(s.db_url)
    questions = {_question(run, i): i for i in range(level)}
    started: dict[str, float] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    returned_wall: dict[str, datetime] = {}
    headers = {"apikey": s.service_key, "Authorization": f"Bearer {s.service_key}"}
    limits = httpx.Limits(max_connections=min(level + 10, 200))
    http = httpx.AsyncClient(base_url=s.url, headers=headers, limits=limits, timeout=30)
    rss_idle = rss_mb(os.getpid())
    timeout_s = call_timeout(level, rate, wait_s, spread_s)

    async def wait_by_polling(question: str) -> None:
        i = questions[question]
        await pace(t0, i, rate)
        started[question] = time.monotonic()
        r = await http.post(
            "/rest/v1/rpc/hitl_open_case",
            json={
                "p": {
                    "question": question,
                    "context": "benchmark",
                    "mcp_session_id": f"poll-{run}-{i}",
                    "retell_call_id": f"poll-{run}-{i}",
                    "retell_agent_id": "bench-agent",
                    "timeout_seconds": timeout_s,
                }
            },
        )
        r.raise_for_status()
        case_id, session_id = r.json()["case_id"], r.json()["session_id"]
        delay = 0.5
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)  # the baseline's polling interval
            got = await http.get(
                "/rest/v1/messages",
                params={
                    "select": "content,created_at",
                    "case_id": f"eq.{case_id}",
                    "sender_type": "eq.human",
                    "order": "created_at.asc",
                    "limit": "1",
                },
            )
            rows = got.json() if got.status_code == 200 else []
            if rows:
                returned_wall[question] = datetime.now(UTC)
                outcomes[question] = {
                    "status": "answered",
                    "answer": rows[0]["content"],
                    "case_id": case_id,
                }
                await close_session(http, session_id, "answered")  # as the relay does
                return
            delay = min(delay * 2, 2.0)
        outcomes[question] = {"status": "timeout", "case_id": case_id}
        await close_session(http, session_id, "timed_out")

    t0 = time.monotonic()
    tasks = [asyncio.create_task(wait_by_polling(q)) for q in questions]
    try:
        cases = await _open_and_wait_phases(
            result,
            operator,
            questions,
            started,
            load,
            wait_s=wait_s,
            pid=os.getpid(),
            rss_idle=rss_idle,
        )
        await _answer_all(operator, cases, spread_s)
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.aclose()
        await operator.stop()
        await duty.stop()
    result.wall_s = time.monotonic() - t0
    _score(
        result, questions, cases, outcomes, returned_wall, await _created_at(s.db_url, list(cases))
    )
    result.success = await success_figures(s.db_url, duty.started_at, list(cases))
    return result


def _score(
    result: LevelResult,
    questions: dict[str, int],
    cases: dict[str, str],
    outcomes: dict[str, dict[str, Any]],
    returned_wall: dict[str, datetime],
    created: dict[str, datetime],
) -> None:
    """answered / lost / duplicated (crossed) and delivery latencies."""
    case_of = {q: c for c, q in cases.items()}
    answer_seen: dict[str, int] = {}
    for question in questions:
        out = outcomes.get(question)
        case_id = case_of.get(question)
        if out is None or case_id is None:
            result.lost += 1
            result.errors.append(f"{question}: no result")
            continue
        status = out.get("status")
        if status != "answered":
            if case_id in created:
                result.lost += 1  # committed answer that never reached its caller
            else:
                result.timed_out += 1
            result.errors.append(f"{question}: status {status}")
            continue
        answer_seen[case_id] = answer_seen.get(case_id, 0) + 1
        if out.get("answer") != _expected_answer(question) or str(out.get("case_id")) != case_id:
            result.duplicated += 1  # crossed: someone else's answer
            result.errors.append(f"{question}: got {out.get('answer')!r}")
            continue
        result.answered += 1
        if case_id in created and question in returned_wall:
            delta = returned_wall[question] - created[case_id]
            result.delivery_ms.append(delta.total_seconds() * 1000)
    result.duplicated += sum(n - 1 for n in answer_seen.values() if n > 1)


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()} cores ({cpu}), {mem}, Python {sys.version.split()[0]}"
