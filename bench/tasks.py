"""MCP tasks under load: N concurrent `ask_human` tasks (2025-11-25 wire), each polled with
`tasks/get` at the server's `pollInterval`, against N blocking calls on the same stack.

    .venv/bin/python -m bench.tasks --level 1000 --json docs/benchmark-tasks.json

Phases, each measured alone (the blocking path first, with `bench.run.run_realtime`):
  1. create: N tasks arrive at `rate` per second; handle creation = the `tools/call` round trip
             that returns the `CreateTaskResult` (client clock).
  2. wait:   nobody answers for `wait_s` while every task is polled at its pollInterval;
             database statements per second (pg_stat_statements) and polls per second. The
             blocking path's figure for the same N comes from its own wait phase, so the
             difference is what polling costs: statements per poll.
  3. answer: the operator answers every case; delivery = the answer's commit timestamp
             (`pg_xact_commit_timestamp`) → the first poll that reported `completed`.
The plan of the poll's read (EXPLAIN of `hitl_task_get`'s query) is printed: index scans only.
CPU per poll by process over the wait window (`cpu_ms_per_poll`: the relay, the devstack,
Postgres, this client; from /proc, so it holds on a shared machine) and the load average. A
handle refused with -32603 ("try again") is asked again after a pause, and a task whose case never
opened is tolerated; both counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.run import ROOT, DbLoad, run_realtime, stack
from bench.stats import percentile
from hitl_devstack.cluster import free_port
from hitl_devstack.operator_sim import SimulatedOperator
from hitl_relay.config import Settings

VERSION = "2025-11-25"
CREATE_ATTEMPTS = 5
SEND_ATTEMPTS = 3


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.tasks", description=__doc__)
    p.add_argument("--level", type=int, default=1000, help="concurrent tasks (and blocking calls)")
    p.add_argument("--rate", type=float, default=25.0, help="calls arriving per second")
    p.add_argument("--wait", type=float, default=20.0, help="seconds of pure waiting measured")
    p.add_argument("--spread", type=float, default=10.0, help="operator answers spread (s)")
    p.add_argument("--poll-ms", type=int, default=1000, help="HITL_TASK_POLL_INTERVAL_MS")
    p.add_argument(
        "--polls-per-second",
        type=float,
        help="HITL_TASK_POLLS_PER_SECOND (the relay's default when absent)",
    )
    p.add_argument("--skip-blocking", action="store_true", help="tasks only")
    p.add_argument("--json", type=Path, help="write the report here")
    return p.parse_args(argv)


class Rpc:
    """JSON-RPC over the relay's stateless streamable HTTP, 2025-11-25 wire (what the TS SDK
    sends after its handshake; the stateless relay needs no session)."""

    def __init__(self, http: httpx.AsyncClient, url: str, key: str) -> None:
        self.http, self.url = http, url
        self.headers = {
            "Authorization": f"Bearer {key}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": VERSION,
        }
        self.resent = 0

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": method, "params": params}
        for attempt in range(SEND_ATTEMPTS):
            try:
                r = await self.http.post(self.url, json=body, headers=self.headers)
                break
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A kept-alive connection the server had just closed: the request never ran.
                # Sent again, as clients do; counted in the report.
                self.resent += 1
                if attempt == SEND_ATTEMPTS - 1:
                    raise
        r.raise_for_status()
        text = r.text
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
            text = data[-1]
        reply: dict[str, Any] = json.loads(text)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result


class CpuMeter:
    """CPU seconds (user + system, from /proc) of the stack's processes, to attribute a phase's
    cost per poll: the relay, the devstack (the REST stand-in and Realtime), Postgres (the
    postmaster, its live backends and the ones it reaped) and this client. Robust to a shared
    machine: it counts CPU spent, not time waited for a core."""

    def __init__(self, pids: dict[str, int | None], postmaster: int | None) -> None:
        self.pids = {k: v for k, v in pids.items() if v is not None}
        self.postmaster = postmaster
        self.tick = os.sysconf("SC_CLK_TCK")

    def _stat(self, pid: int) -> list[str]:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return raw[raw.rindex(")") + 2 :].split()  # fields from `state` on

    def _cpu(self, pid: int, reaped: bool = False) -> float:
        try:
            f = self._stat(pid)
        except OSError:
            return 0.0
        # utime, stime (fields 14, 15); cutime, cstime (16, 17): 0-based 11.. after `state`
        ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if reaped else 0)
        return ticks / self.tick

    def sample(self) -> dict[str, float]:
        out = {name: self._cpu(pid) for name, pid in self.pids.items()}
        if self.postmaster is not None:
            total = self._cpu(self.postmaster, reaped=True)
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if int(self._stat(int(entry.name))[1]) == self.postmaster:
                            total += self._cpu(int(entry.name))
                    except OSError:
                        continue
            out["postgres"] = total
        return out


async def _postmaster(db_url: str) -> int | None:
    conn = await asyncpg.connect(db_url)
    try:
        data_dir = await conn.fetchval("show data_directory")
    finally:
        await conn.close()
    try:
        return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def run_tasks(
    mcp_url: str,
    api_key: str,
    db_url: str,
    operator: SimulatedOperator,
    args: argparse.Namespace,
    cpu: CpuMeter | None = None,
) -> dict[str, Any]:
    level, run = args.level, uuid.uuid4().hex[:8]
    load = DbLoad(db_url)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    create_ms: list[float] = []
    tasks: dict[str, str] = {}  # task id → question
    polls = refused = creations_refused = 0
    first_completed: dict[str, datetime] = {}
    told_ms: dict[str, int] = {}  # task id → the pollInterval its latest response suggested
    stop, all_seen = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        rpc = Rpc(http, mcp_url, api_key)
        t0 = time.monotonic()

        async def poll(task_id: str, interval_s: float) -> None:
            nonlocal polls, refused
            while not stop.is_set():
                await asyncio.sleep(interval_s)  # the server's pollInterval, as a client would
                try:
                    task = await rpc.call("tasks/get", {"taskId": task_id})
                except RuntimeError:
                    # The relay answered -32603 (its RPC to the platform timed out): a client
                    # polls again at its interval; counted.
                    refused += 1
                    continue
                polls += 1
                if task["status"] == "completed":
                    first_completed[task_id] = datetime.now(UTC)
                    if len(first_completed) == level:
                        all_seen.set()
                    return
                told_ms[task_id] = task["pollInterval"]
                interval_s = task["pollInterval"] / 1000

        async def create(i: int, tg: asyncio.TaskGroup) -> None:
            delay = t0 + i / args.rate - time.monotonic() if args.rate > 0 else 0
            if delay > 0:
                await asyncio.sleep(delay)  # arrival pacing, not synchronisation
            nonlocal creations_refused
            question = f"tasks bench {run} #{i}?"
            params = {
                "name": "ask_human",
                "arguments": {
                    "question": question,
                    "call_id": f"tb-{run}-{i}",
                    "session_id": f"tb-{run}-{i}",
                    "agent_id": "bench-agent",
                    "timeout_seconds": 600,
                },
                "task": {"ttl": 3_600_000},
            }
            started = time.monotonic()
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    created = await rpc.call("tools/call", params)
                    break
                except RuntimeError:
                    # -32603 "try again": the relay's RPC to the platform timed out, nothing was
                    # accepted. A client retries after a pause; counted, and the handle's time
                    # runs from the first attempt.
                    creations_refused += 1
                    if attempt == CREATE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(1.0)  # the client's back-off, not synchronisation
            create_ms.append((time.monotonic() - started) * 1000)
            task = created["task"]
            tasks[task["taskId"]] = question
            told_ms[task["taskId"]] = task["pollInterval"]
            tg.create_task(poll(task["taskId"], task["pollInterval"] / 1000))

        async with asyncio.TaskGroup() as tg:
            cpu_create = cpu.sample() if cpu is not None else {}
            load_create, t_create = os.getloadavg()[0], time.monotonic()
            creators = [tg.create_task(create(i, tg)) for i in range(level)]
            await asyncio.gather(*creators)
            create_window = time.monotonic() - t_create
            cpu_created = cpu.sample() if cpu is not None else {}
            polls_while_creating = polls
            # every case open (operators see them) before the quiet phase
            questions = {q: i for i, q in enumerate(tasks.values())}
            cases = await _cases_opened(operator, questions, deadline_s=60 + level / 4)
            stmts_before = await _statements(db_url)
            cpu_before = cpu.sample() if cpu is not None else {}
            load_before = os.getloadavg()[0]
            polls_before, before, t_wait = polls, await load.sample(), time.monotonic()
            told_at_wait = list(told_ms.values())
            await asyncio.sleep(args.wait)  # the measurement window itself
            after, polls_after = await load.sample(), polls
            cpu_after = cpu.sample() if cpu is not None else {}
            load_after = os.getloadavg()[0]
            stmts_after = await _statements(db_url)
            window = time.monotonic() - t_wait
            # answer every case, spread over `spread` seconds
            sent: dict[str, str] = {}

            async def answer(case_id: str) -> None:
                await asyncio.sleep(random.uniform(0, args.spread))  # operator think time
                got = await operator.answer(case_id, f"answer {case_id[:8]}")
                sent[case_id] = got.message_id

            await asyncio.gather(*(answer(c) for c in cases))
            await all_seen.wait()
            stop.set()

    commits = await _commits(db_url, list(sent.values()))
    task_case = await _task_cases(db_url, list(tasks))
    delivery_ms = []
    for task_id, seen in first_completed.items():
        case_id = task_case.get(task_id)
        message_id = sent.get(case_id or "")
        if message_id and message_id in commits:
            delivery_ms.append((seen - commits[message_id]).total_seconds() * 1000)
    polls_per_s = (polls_after - polls_before) / window
    window_polls = max(1, polls_after - polls_before)
    return {
        "level": level,
        "poll_interval_ms": args.poll_ms,
        "polls_per_second_budget": (
            args.polls_per_second
            if args.polls_per_second is not None
            else Settings.model_fields["task_polls_per_second"].default
        ),
        "poll_interval_told_at_wait_ms": _summary([float(v) for v in told_at_wait]),
        "create_ms": _summary(create_ms),
        "wait_window_s": round(window, 1),
        "polls_per_s": round(polls_per_s, 1),
        "db_statements_per_s": round(max(0.0, after - before - 2) / window, 1),
        "delivery_commit_to_first_poll_ms": _summary(delivery_ms),
        "completed": len(first_completed),
        "cases_opened": len(cases),
        "requests_resent_after_a_closed_connection": rpc.resent,
        "polls_refused_platform_timeout": refused,
        "creations_refused_platform_timeout": creations_refused,
        "cpu_ms_per_poll": {
            k: round((cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / window_polls, 2)
            for k in cpu_after
        },
        "create_phase": {
            # what the relay (and the rest) spent while the handles were created: the handles,
            # the case openings they start and the polls of the tasks already created
            "window_s": round(create_window, 1),
            "polls": polls_while_creating,
            "load_average_1m": round(load_create, 2),
            "cpu_share_of_a_core": {
                k: round((cpu_created[k] - cpu_create.get(k, 0.0)) / create_window, 2)
                for k in cpu_created
            },
            "cpu_ms_per_task": {
                k: round((cpu_created[k] - cpu_create.get(k, 0.0)) * 1000 / level, 2)
                for k in cpu_created
            },
        },
        "cpu_share_of_a_core": {
            k: round((cpu_after[k] - cpu_before.get(k, 0.0)) / window, 2) for k in cpu_after
        },
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "statements_in_window": _top(stmts_before, stmts_after, polls_after - polls_before),
        "plan": await _plan(db_url, next(iter(tasks))),
    }


async def _cases_opened(
    operator: SimulatedOperator, questions: dict[str, int], deadline_s: float
) -> dict[str, str]:
    """case_id → question for the cases operators saw open by the deadline. A task whose case
    could not be opened (the relay's RPC timed out) has ended with the blocking call's
    `platform_unreachable` result instead: its poll reports it completed; counted."""
    seen: dict[str, str] = {}
    end = time.monotonic() + deadline_s
    while len(seen) < len(questions) and time.monotonic() < end:
        try:
            case = await operator.next_case(timeout_s=max(0.1, end - time.monotonic()))
        except TimeoutError:
            break
        if case.get("question") in questions:
            seen[str(case["case_id"])] = str(case["question"])
    return seen


def _summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": _round(percentile(values, 50)),
        "p90": _round(percentile(values, 90)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values) if values else None),
    }


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


async def _statements(db_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("create extension if not exists pg_stat_statements")
        rows = await conn.fetch(
            "select query, calls from pg_stat_statements"
            " where dbid = (select oid from pg_database where datname = current_database())"
        )
        return {r["query"]: int(r["calls"]) for r in rows}
    finally:
        await conn.close()


def _top(before: dict[str, int], after: dict[str, int], polls: int) -> list[dict[str, Any]]:
    """The statements run during the window, most frequent first, with calls per poll."""
    delta = {q: n - before.get(q, 0) for q, n in after.items() if n - before.get(q, 0) > 0}
    top = sorted(delta.items(), key=lambda kv: -kv[1])[:8]
    return [
        {"query": " ".join(q.split())[:160], "calls": n, "per_poll": round(n / max(polls, 1), 2)}
        for q, n in top
    ]


async def _commits(db_url: str, message_ids: list[str]) -> dict[str, datetime]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "select id::text, pg_xact_commit_timestamp(xmin) as at from public.messages"
            " where id = any($1::uuid[])",
            message_ids,
        )
        return {r["id"]: r["at"] for r in rows if r["at"] is not None}
    finally:
        await conn.close()


async def _task_cases(db_url: str, task_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "select id, case_id::text from public.hil_tasks where id = any($1::text[])", task_ids
        )
        return {r["id"]: r["case_id"] for r in rows}
    finally:
        await conn.close()


async def _plan(db_url: str, task_id: str) -> list[str]:
    """The poll's reads, as the planner runs them (inlined SQL of hitl_task_get/_json)."""
    conn = await asyncpg.connect(db_url)
    try:
        owner = await conn.fetchval("select owner from public.hil_tasks where id = $1", task_id)
        rows = await conn.fetch(
            "explain (costs off) select t.id, public.hitl_case_reply(t.case_id)"
            " from public.hil_tasks t where t.id = $1 and t.owner = $2 and t.expires_at > now()",
            task_id,
            owner,
        )
        plan = [r[0] for r in rows]
        case_id = await conn.fetchval("select case_id from public.hil_tasks where id = $1", task_id)
        for sql in (
            "explain (costs off) select public.hitl_answer($1)",
            "explain (costs off) select c.answer_message_id from public.cases c where c.id = $1",
            "explain (costs off) select m.id from public.messages m where m.case_id = $1"
            " order by m.created_at desc limit 1",
        ):
            plan += [r[0] for r in await conn.fetch(sql, case_id)]
        return plan
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # A home of its own: a fresh devstack on free ports, never one a stale env file points at.
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")) / "bench-tasks"
    home.mkdir(parents=True, exist_ok=True)
    (home / "devstack.env").unlink(missing_ok=True)
    os.environ["HITL_HOME"] = str(home)
    log_dir = home / f"run-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    # Never the fixed local ports (another scripts/dev may hold them).
    os.environ.setdefault("HITL_PG_PORT", str(free_port()))
    os.environ.setdefault("HITL_DEVSTACK_PORT", str(free_port()))
    # One key polls for all N tasks: lift the per-key and per-IP limits for the measurement.
    os.environ["HITL_TASK_POLL_INTERVAL_MS"] = str(args.poll_ms)
    if args.polls_per_second is not None:
        os.environ["HITL_TASK_POLLS_PER_SECOND"] = str(args.polls_per_second)
    os.environ["HITL_RATE_LIMIT_PER_KEY"] = "100000/second"
    os.environ["HITL_RATE_LIMIT_PER_IP"] = "100000/second"
    report: dict[str, Any] = {
        "machine": os.uname().nodename,
        "started": datetime.now(UTC).isoformat(),
    }
    async with stack(home, log_dir=log_dir) as s:
        if not args.skip_blocking:
            blocking = await run_realtime(
                s, args.level, wait_s=args.wait, spread_s=args.spread, rate=args.rate
            )
            report["blocking"] = blocking_report = {
                "level": args.level,
                "db_statements_per_s": blocking.db_statements_per_s,
                "create_ms_p50": _round(percentile(blocking.create_ms, 50)),
                "create_ms_p99": _round(percentile(blocking.create_ms, 99)),
            }
            print(json.dumps({"blocking": blocking_report}), flush=True)
        operator = SimulatedOperator(
            s.url, s.anon_key, s.operator_token, s.operator_id, auto_answer=False
        )
        await operator.start()
        try:
            cpu = CpuMeter(
                {
                    "relay": s.relay.proc.pid,
                    "devstack": s.devstack.proc.pid if s.devstack is not None else None,
                    "bench_client": os.getpid(),
                },
                await _postmaster(s.db_url),
            )
            report["tasks"] = await run_tasks(s.mcp_url, s.api_key, s.db_url, operator, args, cpu)
        finally:
            await operator.stop()
    if "blocking" in report:
        extra = report["tasks"]["db_statements_per_s"] - report["blocking"]["db_statements_per_s"]
        report["statements_per_poll"] = round(extra / max(report["tasks"]["polls_per_s"], 1e-9), 2)
    return report


if __name__ == "__main__":
    ns = parse()
    out = asyncio.run(main(ns))
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if ns.json:
        ns.json.write_text(text + "\n")
