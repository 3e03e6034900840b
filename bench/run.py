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
import json
import os
import random
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.arrivals import ArrivalTransport
from bench.rawhttp import KeepAlivePool
from bench.stats import LevelResult, summary
from bench.success import OnDuty, close_session, success_figures
from hitl_devstack.cluster import Cluster, free_port
from hitl_devstack.dev import (
    Child,
    devstack_alive,
    python,
    relay_environment,
    spawn,
    wait_http_ok,
)
from hitl_devstack.envfile import read_env_file
from hitl_devstack.operator_sim import SimulatedOperator
from hitl_relay.mcp_client import ready_to_call

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    url: str
    anon_key: str
    service_key: str
    operator_token: str
    operator_id: str
    db_url: str
    mcp_url: str  # the first replica's (`mcp_urls` has every replica's)
    api_key: str
    relay: Child  # the first replica (`relays` has every replica)
    devstack: Child | None
    census: bool = False  # the relays serve GET /metrics/census (HITL_GC_CENSUS=1)
    mcp_mode: str = "auto"  # the clients' protocol era (mcp.Client's `mode`)
    relays: list[Child] = field(default_factory=list)
    mcp_urls: list[str] = field(default_factory=list)
    instance_ids: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def stack(
    home: Path,
    *,
    log_dir: Path,
    census: bool = False,
    replicas: int = 1,
    relay_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Reuse a running devstack (`.hitl/devstack.env`) or start one; always start `replicas`
    relay processes over it, each with its own HITL_INSTANCE_ID and port (their environment
    plus `relay_env`). Whatever it started it stops on the way out, however the block ends (an
    error, a cancellation, a signal)."""
    env_file = home / "devstack.env"
    env = read_env_file(env_file)
    devstack: Child | None = None
    relays: list[Child] = []
    base_env = {**os.environ, "HITL_HOME": str(home)}
    try:
        if not await devstack_alive(env):
            devstack = await spawn(
                "devstack",
                [python(), "-m", "hitl_devstack"],
                base_env,
                log_dir / "devstack.log",
            )
            await devstack.wait_for_line("devstack ready")
            env = read_env_file(env_file)
        api_key = "bench_" + secrets.token_urlsafe(24)
        ports = [free_port() for _ in range(replicas)]
        instance_ids = [f"bench-relay-{i}" for i in range(replicas)]
        for i, port in enumerate(ports):
            env_of_relay = {
                **relay_environment(base_env, env, api_key, port),
                "HITL_LOG_LEVEL": "WARNING",
                "HITL_MAX_TIMEOUT_SECONDS": "600",
                "HITL_INSTANCE_ID": instance_ids[i],
                **({"HITL_GC_CENSUS": "1"} if census else {}),
                **(relay_env or {}),
            }
            log = log_dir / ("relay.log" if i == 0 else f"relay-{i}.log")
            relays.append(
                await spawn("relay", [python(), "-m", "hitl_relay.cli", "serve"], env_of_relay, log)
            )
        for relay, port in zip(relays, ports, strict=True):
            await relay.wait_for_line("hitl-relay: MCP at")
            await wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        mcp_urls = [f"http://127.0.0.1:{port}/mcp" for port in ports]
        yield Stack(
            url=env["SUPABASE_URL"],
            anon_key=env["SUPABASE_ANON_KEY"],
            service_key=env["SUPABASE_SERVICE_ROLE_KEY"],
            operator_token=env["HITL_OPERATOR_TOKEN"],
            operator_id=env["HITL_OPERATOR_ID"],
            db_url=env["DATABASE_URL"],
            mcp_url=mcp_urls[0],
            api_key=api_key,
            relay=relays[0],
            devstack=devstack,
            census=census,
            relays=relays,
            mcp_urls=mcp_urls,
            instance_ids=instance_ids,
        )
    finally:
        for relay in relays:
            await relay.stop()
        if devstack is not None:
            await devstack.stop()
            # A devstack killed after its grace period leaves its cluster running: stop it here,
            # so that a bench run never leaves a Postgres behind that it started.
            cluster = Cluster(home / "pg", port=None)
            if cluster.status().running:
                await asyncio.to_thread(cluster.stop)


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


async def gc_census(mcp_url: str) -> dict[str, Any] | None:
    """The relay's collector census (hitl_relay/gc_tuning.census); None if not served."""
    url = mcp_url.removesuffix("/mcp") + "/metrics/census"
    async with httpx.AsyncClient(timeout=120) as client:
        r = await client.get(url)
    return dict(r.json()) if r.status_code == 200 else None


async def relays_histogram(urls: list[str], name: str) -> dict[float, float]:
    """A histogram's buckets summed over every replica."""
    total: dict[float, float] = {}
    for url in urls:
        for le, n in (await relay_histogram(url, name)).items():
            total[le] = total.get(le, 0.0) + n
    return total


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
    """case id → when its insert committed. Empty without `track_commit_timestamp`.

    Read from the `case_opened` broadcast's row in realtime.messages, inserted by the same
    transaction and never updated: the case's own row is updated after it opens (routing,
    claims, escalation), and its xmin is then a later transaction's."""
    conn = await asyncpg.connect(db_url)
    try:
        if not await _commit_timestamps(conn):
            return {}
        rows = await conn.fetch(
            "select payload->>'case_id' as case_id, min(pg_xact_commit_timestamp(xmin)) as at"
            " from realtime.messages where event = 'case_opened'"
            " and payload->>'case_id' = any($1::text[]) group by 1",
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


async def _answer_all(
    operator: SimulatedOperator, cases: dict[str, str], spread_s: float, result: LevelResult
) -> None:
    """Every opened case answered after a think time; an answer that fails (or takes longer
    than ANSWER_TIMEOUT_S) is counted in the result with its error, never waited on forever."""

    async def one(case_id: str, question: str) -> None:
        await asyncio.sleep(random.uniform(0, spread_s))  # operator think time, not sync
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await operator.answer(case_id, _expected_answer(question))
        except Exception as e:  # every failure is a result, reported below
            result.note_error("operator answer failed", e)

    await asyncio.gather(*(one(c, q) for c, q in cases.items()))


# Bounds on each phase, so that a level always ends and reports (issue: a run at 10,000 once
# waited forever on cases that never opened).
ANSWER_TIMEOUT_S = 30.0
OPEN_GRACE_S = 120.0  # after the last arrival, for the stragglers' case_opened
RETURN_GRACE_S = 120.0  # after the last answer, for the calls to return
PROGRESS_EVERY_S = 10.0


def open_deadline_s(level: int, rate: float) -> float:
    """How long the open phase may last: every arrival, plus a grace for the last ones."""
    return (level / rate if rate > 0 else 0.0) + OPEN_GRACE_S


class Progress:
    """Prints `label: line()` every PROGRESS_EVERY_S from start() to stop(): a long level is
    never silent, and a stuck one shows where it stands."""

    def __init__(self, label: str, line: Callable[[], str]) -> None:
        self.label, self.line = label, line
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)  # the reporting cadence itself
            print(f"  [{self.label}] {time.monotonic() - t0:.0f} s: {self.line()}", flush=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def progress_line(
    level: int,
    started: dict[str, float],
    operator: SimulatedOperator,
    outcomes: dict[str, dict[str, Any]],
) -> str:
    """Where the level stands (the errors themselves are counted by kind when it ends)."""
    answered = sum(1 for o in outcomes.values() if o.get("status") == "answered")
    return (
        f"{len(started)}/{level} started, {len(operator.opened)} opened, "
        f"{len(operator.answered)} answered by operators, {len(outcomes)} returned: "
        f"{answered} with the answer, {len(outcomes) - answered} without it"
    )


async def _bounded(tasks: list[asyncio.Task[None]], timeout_s: float, result: LevelResult) -> None:
    """Wait for the tasks at most timeout_s; the calls still out then are counted by `_score`
    (no result), and the tasks are cancelled by the caller."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    if pending:
        result.note_error(
            "calls still out at the end of the level", TimeoutError(f"{timeout_s:.0f} s")
        )
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            result.note_error("client worker failed", t.exception())


async def _wait_for_cases(
    operator: SimulatedOperator,
    questions: dict[str, int],
    deadline_s: float,
    returned: dict[str, Any],
) -> dict[str, str]:
    """case_id → question for this run's cases, as operators see them open. Ends when every
    question has either opened or its call has returned (a call that failed to open is a
    result), or at the deadline, with whatever opened."""
    seen: dict[str, str] = {}
    end = time.monotonic() + deadline_s
    while True:
        opened = set(seen.values())
        if all(q in opened or q in returned for q in questions):
            return seen
        remaining = end - time.monotonic()
        if remaining <= 0:
            return seen
        try:
            case = await operator.next_case(timeout_s=min(1.0, remaining))
        except TimeoutError:
            continue  # re-check which calls have returned meanwhile
        if case.get("question") in questions:
            seen[str(case["case_id"])] = str(case["question"])


async def _open_and_wait_phases(
    result: LevelResult,
    operator: SimulatedOperator,
    questions: dict[str, int],
    started: dict[str, float],
    load: DbLoad,
    returned: dict[str, Any],
    *,
    wait_s: float,
    pids: list[int],
    rss_idle: float | None,
) -> dict[str, str]:
    """Phases 1 and 2: every case open (creation latency), then pure waiting (DB load, RSS)."""
    level = result.level
    cases = await _wait_for_cases(
        operator, questions, open_deadline_s(level, result.rate), returned
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
    each = [rss_mb(pid) for pid in pids]
    rss_wait = None if None in each else sum(v or 0.0 for v in each)
    if rss_wait is not None:
        result.rss_mb = round(rss_wait, 1)
        if rss_idle is not None:
            result.rss_kb_per_wait = round((rss_wait - rss_idle) * 1024 / level, 1)
    return cases


async def _operator_on_duty(s: Stack) -> tuple[SimulatedOperator, OnDuty]:
    """The run's operator (answers when told) and its presence, available as the console says."""
    operator = SimulatedOperator(
        s.url, s.anon_key, s.operator_token, s.operator_id, auto_answer=False
    )
    await operator.start()
    duty = OnDuty(s.url, s.anon_key, s.operator_token)
    await duty.start()
    return operator, duty


async def run_realtime(
    s: Stack, level: int, *, wait_s: float, spread_s: float, rate: float = 0.0
) -> LevelResult:
    result = LevelResult(mode="realtime", level=level, rate=rate)
    run = uuid.uuid4().hex[:8]
    operator, duty = await _operator_on_duty(s)
    load = DbLoad(s.db_url)
    replicas = len(s.mcp_urls)
    rss_idle_each = [rss_mb(r.proc.pid) for r in s.relays]
    rss_idle = None if None in rss_idle_each else sum(v or 0.0 for v in rss_idle_each)
    questions = {_question(run, i): i for i in range(level)}
    started: dict[str, float] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    returned_wall: dict[str, datetime] = {}
    # the harness's own share of each delivery: the result's bytes received → call_tool returned
    arrived: dict[str, float] = {}
    returned_mono: dict[str, float] = {}
    # the clients (MCP sessions) are spread over the replicas, and so the calls
    n_clients = max(replicas, min(20, level // 50 or 1))
    replica_of: dict[str, int] = {}
    limits = httpx2.Limits(max_connections=level + 10, max_keepalive_connections=level + 10)
    timeout_s = call_timeout(level, rate, wait_s, spread_s)

    async def ask(client: Client, question: str) -> None:
        i = questions[question]
        await pace(t0, i, rate)
        started[question] = time.monotonic()
        try:
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
        except Exception as e:  # a failed call is a result, with its error
            outcomes[question] = {
                "status": "error",
                "error": f"{e.__class__.__name__}: {e}",
                "returned_at": datetime.now(UTC),
            }
            return
        returned_mono[question] = time.monotonic()
        returned_wall[question] = datetime.now(UTC)
        outcomes[question] = dict(res.structured_content or {})
        outcomes[question]["returned_at"] = returned_wall[question]
        if res.is_error:
            outcomes[question].setdefault("status", "error")
            text = " ".join(getattr(c, "text", "") for c in res.content).strip()
            outcomes[question].setdefault("error", text or "error result")

    async def client_worker(qs: list[str], url: str) -> None:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {s.api_key}"},
            transport=ArrivalTransport(httpx2.AsyncHTTPTransport(limits=limits), arrived),
            timeout=httpx2.Timeout(timeout_s + 30.0),
        )
        transport = streamable_http_client(url, http_client=http)
        async with http, Client(transport, mode=s.mcp_mode) as client:
            # What an agent does when it connects (see ready_to_call): otherwise the listing
            # and the validator's import land inside the first call's delivery.
            await ready_to_call(client)
            await asyncio.gather(*(ask(client, q) for q in qs))

    from bench import hops  # bench.hops imports this module

    census_idle = await gc_census(s.mcp_url) if s.census and replicas == 1 else None
    hops_before = [await hops.snapshot(url, s.url) for url in s.mcp_urls]
    delivery_before = await relays_histogram(s.mcp_urls, "hitl_delivery_seconds")
    creation_before = await relays_histogram(s.mcp_urls, "hitl_case_creation_seconds")
    t0 = time.monotonic()
    qlist = list(questions)
    for k in range(n_clients):
        for q in qlist[k::n_clients]:
            replica_of[q] = k % replicas
    workers = [
        asyncio.create_task(client_worker(qlist[k::n_clients], s.mcp_urls[k % replicas]))
        for k in range(n_clients)
    ]
    cases: dict[str, str] = {}

    reporter = Progress(
        f"realtime {level}", lambda: progress_line(level, started, operator, outcomes)
    )
    reporter.start()
    try:
        cases = await _open_and_wait_phases(
            result,
            operator,
            questions,
            started,
            load,
            outcomes,
            wait_s=wait_s,
            pids=[r.proc.pid for r in s.relays],
            rss_idle=rss_idle,
        )
        rss_wait_each = [rss_mb(r.proc.pid) for r in s.relays]
        if census_idle is not None:
            # every call waiting now: what each adds to what a full collection walks
            waiting = await gc_census(s.mcp_url)
            if waiting is not None:
                result.gc_census = {
                    "idle_objects": int(census_idle["tracked_objects"]),
                    "waiting_objects": int(waiting["tracked_objects"]),
                    "frozen_objects": int(waiting["frozen_objects"]),
                    "objects_per_waiting_call": round(
                        (waiting["tracked_objects"] - census_idle["tracked_objects"]) / level, 1
                    ),
                    "census_ms": round(waiting["census_seconds"] * 1000, 1),
                    # per waiting call, by type: what a waiting call keeps
                    "per_call_by_type": {
                        name: round((n - census_idle["types"].get(name, 0)) / level, 2)
                        for name, n in sorted(
                            waiting["types"].items(),
                            key=lambda kv: kv[1] - census_idle["types"].get(kv[0], 0),
                            reverse=True,
                        )[:40]
                    },
                    # modules the relay imported while these calls opened (lazy imports)
                    "modules_imported": sorted(
                        set(waiting["modules"]) - set(census_idle["modules"])
                    ),
                }
        created = histogram_delta(
            creation_before, await relays_histogram(s.mcp_urls, "hitl_case_creation_seconds")
        )
        result.relay_create_ms = {
            f"p{q}": _ms(histogram_quantile(created, q / 100)) for q in (50, 95, 99)
        }
        commits = await _case_commits(s.db_url, list(cases))
        _split_creation(result, cases, started, operator.opened, commits)
        gauges: dict[str, float] = {}
        for url in s.mcp_urls:
            for name, v in (await relay_gauges(url)).items():
                gauges[name] = gauges.get(name, 0.0) + v
        result.sockets = (
            int(gauges["hitl_realtime_sockets"]) if "hitl_realtime_sockets" in gauges else None
        )
        result.channels = (
            int(gauges["hitl_realtime_channels"]) if "hitl_realtime_channels" in gauges else None
        )
        # Phase 3: answers, then every call returns (bounded: a call still out is a result).
        await _answer_all(operator, cases, spread_s, result)
        await _bounded(workers, spread_s + ANSWER_TIMEOUT_S + RETURN_GRACE_S, result)
        delivered = histogram_delta(
            delivery_before, await relays_histogram(s.mcp_urls, "hitl_delivery_seconds")
        )
        result.relay_delivery_ms = {
            f"p{q}": _ms(histogram_quantile(delivered, q / 100)) for q in (50, 95, 99)
        }
        hops_after = [await hops.snapshot(url, s.url) for url in s.mcp_urls]
        result.hops = hops.breakdown(hops.merged(hops_before), hops.merged(hops_after))
        if replicas > 1:
            for i, instance in enumerate(s.instance_ids):
                result.replicas.append(
                    {
                        "instance_id": instance,
                        "calls": sum(1 for r in replica_of.values() if r == i),
                        "rss_mb": None
                        if rss_wait_each[i] is None
                        else round(rss_wait_each[i] or 0.0, 1),
                        "hops": hops.breakdown(hops_before[i], hops_after[i]),
                    }
                )
    finally:
        await reporter.stop()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await operator.stop()
        await duty.stop()
    result.wall_s = time.monotonic() - t0
    answers_at = await _created_at(s.db_url, list(cases))
    _score(result, questions, cases, outcomes, returned_wall, answers_at)
    case_of = {q: c for c, q in cases.items()}
    for q, out in outcomes.items():
        if out.get("status") != "answered" or q not in arrived or q not in returned_mono:
            continue
        client_ms = (returned_mono[q] - arrived[q]) * 1000
        result.client_ms.append(client_ms)
        case_id = case_of.get(q)
        if case_id in answers_at and out.get("answer") == _expected_answer(q):
            delivery = (returned_wall[q] - answers_at[case_id]).total_seconds() * 1000
            result.delivery_wire_ms.append(delivery - client_ms)
    if result.replicas:
        for i, per in enumerate(result.replicas):
            mine = [q for q, r in replica_of.items() if r == i]
            per["answered"] = sum(
                1 for q in mine if outcomes.get(q, {}).get("status") == "answered"
            )
            per["delivery_ms"] = summary(
                [
                    (returned_wall[q] - answers_at[case_of[q]]).total_seconds() * 1000
                    for q in mine
                    if q in returned_wall and case_of.get(q) in answers_at
                ]
            )
    result.success = await success_figures(s.db_url, duty.started_at, list(cases))
    return result


async def run_polling(
    s: Stack, level: int, *, wait_s: float, spread_s: float, rate: float = 0.0
) -> LevelResult:
    """The plan's option A: open the case over RPC, then poll REST with backoff 0.5 → 2 s."""
    result = LevelResult(mode="polling", level=level, rate=rate)
    run = uuid.uuid4().hex[:8]
    operator, duty = await _operator_on_duty(s)
    load = DbLoad(s.db_url)
    questions = {_question(run, i): i for i in range(level)}
    started: dict[str, float] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    returned_wall: dict[str, datetime] = {}
    headers = {"apikey": s.service_key, "Authorization": f"Bearer {s.service_key}"}
    limits = httpx.Limits(max_connections=min(level + 10, 200))
    http = httpx.AsyncClient(base_url=s.url, headers=headers, limits=limits, timeout=30)
    # the polls themselves, over a client cheap enough that its CPU is not the measured limit
    polls = KeepAlivePool(s.url, headers, size=min(level + 10, 200))
    rss_idle = rss_mb(os.getpid())
    timeout_s = call_timeout(level, rate, wait_s, spread_s)

    async def wait_by_polling(question: str) -> None:
        i = questions[question]
        await pace(t0, i, rate)
        started[question] = time.monotonic()
        try:
            await poll_one(question, i)
        except Exception as e:  # a failed call is a result, with its error
            outcomes.setdefault(
                question,
                {
                    "status": "error",
                    "error": f"{e.__class__.__name__}: {e}",
                    "returned_at": datetime.now(UTC),
                },
            )

    async def poll_one(question: str, i: int) -> None:
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
            status, body = await polls.get(f"/rest/v1/messages?{poll_query(case_id)}")
            rows = json.loads(body) if status == 200 else []
            if rows:
                returned_wall[question] = datetime.now(UTC)
                outcomes[question] = {
                    "status": "answered",
                    "answer": rows[0]["content"],
                    "case_id": case_id,
                    "returned_at": returned_wall[question],
                }
                await close_session(http, session_id, "answered")  # as the relay does
                return
            delay = min(delay * 2, 2.0)
        outcomes[question] = {
            "status": "timeout",
            "case_id": case_id,
            "returned_at": datetime.now(UTC),
        }
        await close_session(http, session_id, "timed_out")

    t0 = time.monotonic()
    tasks = [asyncio.create_task(wait_by_polling(q)) for q in questions]
    cases: dict[str, str] = {}

    reporter = Progress(
        f"polling {level}", lambda: progress_line(level, started, operator, outcomes)
    )
    reporter.start()
    try:
        cases = await _open_and_wait_phases(
            result,
            operator,
            questions,
            started,
            load,
            outcomes,
            wait_s=wait_s,
            pids=[os.getpid()],
            rss_idle=rss_idle,
        )
        await _answer_all(operator, cases, spread_s, result)
        await _bounded(tasks, spread_s + ANSWER_TIMEOUT_S + RETURN_GRACE_S, result)
    finally:
        await reporter.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.aclose()
        await polls.close()
        await operator.stop()
        await duty.stop()
    result.wall_s = time.monotonic() - t0
    _score(
        result, questions, cases, outcomes, returned_wall, await _created_at(s.db_url, list(cases))
    )
    result.success = await success_figures(s.db_url, duty.started_at, list(cases))
    return result


def poll_query(case_id: str) -> str:
    """The baseline's poll: the case's first human message (PostgREST query syntax)."""
    return urlencode(
        {
            "select": "content,created_at",
            "case_id": f"eq.{case_id}",
            "sender_type": "eq.human",
            "order": "created_at.asc",
            "limit": "1",
        }
    )


def _score(
    result: LevelResult,
    questions: dict[str, int],
    cases: dict[str, str],
    outcomes: dict[str, dict[str, Any]],
    returned_wall: dict[str, datetime],
    created: dict[str, datetime],
) -> None:
    """answered / failed to open / lost / timed out / duplicated (crossed), and delivery
    latencies. Every question lands in exactly one of the first four or in duplicated."""
    case_of = {q: c for c, q in cases.items()}
    answer_seen: dict[str, int] = {}
    for question in questions:
        out = outcomes.get(question)
        case_id = case_of.get(question)
        if case_id is None:
            # no operator ever saw it open: the call failed (its error) or never returned
            result.failed_open += 1
            why = "no result" if out is None else str(out.get("error") or out.get("status"))
            result.note_error("failed to open", why)
            continue
        if out is None:
            if case_id in created:
                result.lost += 1  # answered in the database, the call never returned
            else:
                result.timed_out += 1
            result.note_error("opened, no result in time", question)
            continue
        status = out.get("status")
        if status != "answered":
            returned_at = out.get("returned_at")
            answered_at = created.get(case_id)
            if status in ("error", "platform_unreachable") and (
                answered_at is None or returned_at is None or returned_at < answered_at
            ):
                # the caller got the fallback while the case was being opened (an operator saw
                # it open later): a call that failed to open, not an answer lost
                result.failed_open += 1
            elif answered_at is not None and (returned_at is None or returned_at >= answered_at):
                result.lost += 1  # committed answer that never reached its caller
            else:
                result.timed_out += 1  # returned before any answer was committed
            result.note_error(f"status {status}", str(out.get("error") or question))
            continue
        answer_seen[case_id] = answer_seen.get(case_id, 0) + 1
        if out.get("answer") != _expected_answer(question) or str(out.get("case_id")) != case_id:
            result.duplicated += 1  # crossed: someone else's answer
            result.note_error("crossed answer", f"{question}: got {out.get('answer')!r}")
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
