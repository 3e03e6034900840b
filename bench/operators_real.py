"""The operator simulation on the real stack: what claiming, routing, escalation and one-tap
answers change in the plan's four figures, measured from what Postgres recorded.

`bench/operators.py` is a model; this drives the product. One devstack (Postgres, PostgREST,
Realtime) and one relay process (`bench.run.stack`); per scenario:

- **Callers**: MCP clients call `ask_human` on the relay at `rate` calls per second (Poisson
  arrivals) for `duration` seconds, with a priority (shares as the model's), a skill need
  (`billing`, 25 %), one-tap `options` (60 %, when the scenario has options) and the caller's
  deadline (`timeout_seconds`). A `needs_info` result is answered by the caller after an
  exponential `caller_reply` and sent back with `case_id`, as an agent does.
- **Operators**: N console-like operators, each with its own operator JWT (7 of 20 hold
  `app_metadata.hitl_skills = ["billing"]`), through supabase-py as the console uses
  supabase-js: presence on the private `operators` channel, `hitl_operator_heartbeat` every 30 s,
  `case_opened` and `escalated` broadcasts wake an idle operator; the queue is
  `hitl_operator_queue` (routing) or the open cases read under RLS (no routing); a claim is one
  row update of `cases.claimed_by` under RLS; answers, questions back and "cannot answer" are
  message inserts, one-tap answers an insert naming `option_index`. Think times are lognormal
  per priority (the model's), a one-tap answer takes 45 % of one, 10 % of cases get a question
  back, 3 % cannot be answered (`--question-back`, `--cannot-answer`); after each case an
  operator is distracted with probability 0.3 (exponential 20 s) unless an escalation alert
  calls them back; 4 operators leave for a shift change from 30 % to 60 % of the arrival window
  (heartbeat `away`, claims released).
- **Scenarios**: `baseline` (every operator sees every open case and picks among the top three,
  so two may work one case: Postgres keeps the first answer, the audit marks the other `late`;
  without routing a case's skill is only in its text, and an operator without it spends 5 s
  reading it before leaving it), then claims, routing, escalation (the relay's round every
  second; off: `hil_settings` thresholds emptied) and options added one by one.

The figures come from the database only: `hitl_success_metrics(from, to)` over the scenario's
window (the product's definition), and SQL over the scenario's cases (tagged by agent id) for
time to claim (`hil_audit` claim rows), time to the first operator action, wasted answers
(`hil_audit` answer rows with outcome `late`), escalations, one-tap answers and questions back.
The simulator's own counts (calls sent, statuses returned) are kept apart, as a cross-check.

Time is real (seconds of thinking are seconds), only the run is shorter than the issue's
10 minutes; `--think-scale` shrinks every human time (think, notice, distraction, caller
reply) for a quick run, and the deadline is `--deadline`.

Run: `scripts/bench operators --real` (defaults: 20 operators, 1.67 calls/s for 180 s, deadline
45 s, every scenario); `--json` and `--plot` write the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from postgrest.exceptions import APIError

from bench import operators as model
from bench.run import ROOT, Stack, machine, stack
from hitl_devstack.envfile import read_env_file
from hitl_devstack.keys import make_keys
from hitl_devstack.operator_sim import SimulatedOperator
from hitl_relay.mcp_client import ready_to_call

SKILL = "billing"
OPTIONS = ["approve", "deny", "approve up to 50 euros"]
CANNOT_ANSWER = 0.03
HEARTBEAT_S = 30.0  # the console's cadence
LOOK_AGAIN_S = 2.0  # an idle operator glances at the queue at least this often
ESCALATION_ROUND_S = "1"  # the relay's hitl_escalate round in this run
QUESTION_BACK_TEXT = "Which order number, please?"
CALLER_REPLY_TEXT = "It is order 4411."
# hil_settings that turn escalation off: no unclaimed threshold, nothing "near" a deadline
ESCALATION_OFF = {"escalate_unclaimed_seconds": "{}", "escalate_before_deadline_seconds": "0"}


@dataclass(frozen=True)
class Scenario:
    name: str
    claims: bool = False
    routing: bool = False
    escalation: bool = False
    options: bool = False


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("baseline"),
        Scenario("claims", claims=True),
        Scenario("claims+routing", claims=True, routing=True),
        Scenario("claims+routing+escalation", claims=True, routing=True, escalation=True),
        Scenario("all", claims=True, routing=True, escalation=True, options=True),
    )
}


@dataclass(frozen=True)
class Knobs:
    operators: int = model.OPERATORS
    skilled: int = model.SKILLED
    rate: float = model.CALLS / model.DURATION_S
    duration_s: float = 180.0
    deadline_s: int = int(model.DEADLINE_S)
    think_scale: float = 1.0
    shift_away: int = len(model.SHIFT_AWAY)
    question_back: float = model.QUESTION_BACK
    cannot_answer: float = CANNOT_ANSWER
    seed: int = 1

    def validate(self) -> None:
        rules = [
            ("operators", self.operators >= 1, "must be at least 1"),
            ("skilled", 0 <= self.skilled <= self.operators, "must be between 0 and operators"),
            ("rate", self.rate > 0, "must be positive"),
            ("duration", self.duration_s > 0, "must be positive"),
            ("deadline", 5 <= self.deadline_s <= 600, "must be 5 to 600 s (ask_human's range)"),
            ("think-scale", self.think_scale > 0, "must be positive"),
            ("shift-away", 0 <= self.shift_away <= self.operators, "must be 0 to operators"),
            ("question-back", 0 <= self.question_back <= 1, "must be a share from 0 to 1"),
            ("cannot-answer", 0 <= self.cannot_answer <= 1, "must be a share from 0 to 1"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise SystemExit(f"--{name}: {rule}")


@dataclass
class Run:
    """One scenario in progress: the shared clock and what the simulator did (not the figures)."""

    scenario: Scenario
    knobs: Knobs
    tag: str
    t0: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    follow_ups: int = 0
    wrong_skill_reads: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def human(self, seconds: float) -> float:
        return seconds * self.knobs.think_scale

    def shift(self) -> tuple[float, float]:
        lo, hi = model.SHIFT_WINDOW
        scale = self.knobs.duration_s / model.DURATION_S
        return (lo * scale, hi * scale)

    def count_transport_error(self, e: httpx.HTTPError) -> None:
        del e  # the console retries; the operator carries on (counted, not hidden)
        self.transport_errors += 1

    def count_refusal(self, e: APIError) -> None:
        key = str(e.message or e.code)[:80]
        self.refused[key] = self.refused.get(key, 0) + 1


async def _until(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, timeout_s))
    return event.is_set()


@dataclass
class ConsoleOperator(SimulatedOperator):
    """An operator at the console: the simulated operator's presence, case_opened and REST
    calls, plus what the console reacts to (`escalated`) and the person's behaviour."""

    index: int = 0
    skilled: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    alert: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[str] = field(default_factory=set)
    left: bool = False  # away for the shift change
    distracted_until: float = 0.0  # run time until which the person is away from the screen

    async def start(self) -> None:
        await super().start()
        assert self._channel is not None
        self._channel.on_broadcast("escalated", self._on_escalated)

    def _on_case_opened(self, message: Any) -> None:
        super()._on_case_opened(message)
        self.wake.set()

    def _on_escalated(self, message: Any) -> None:
        del message  # the console beeps: whoever is idle looks again
        self.wake.set()
        self.alert.set()

    @property
    def client(self) -> Any:
        assert self._client is not None, "start() first"
        return self._client

    async def beat(self, status: str) -> None:
        await self.client.rpc("hitl_operator_heartbeat", {"p_status": status}).execute()

    async def queue(self, run: Run) -> list[dict[str, Any]]:
        """The cases this operator would pick from, best first (what their console lists)."""
        if run.scenario.routing:
            rows = (await self.client.rpc("hitl_operator_queue").execute()).data or []
            waiting = [r for r in rows if not _past(r.get("deadline_at"))]
            ids = [str(r["case_id"]) for r in waiting if str(r["case_id"]) not in self.seen]
            if not ids:
                return []
            got = (
                await self.client.table("cases")
                .select("id,description,options,skills,claimed_by,priority")
                .in_("id", ids)
                .execute()
            ).data or []
            by_id = {str(r["id"]): r for r in got}
            return [by_id[i] for i in ids if i in by_id]
        now = datetime.now(UTC).isoformat()
        rows = (
            await self.client.table("cases")
            .select("id,description,options,skills,claimed_by,claim_expires_at,metadata,priority")
            .eq("source", "mcp_voice")
            .eq("status", "open")
            .gt("expires_at", now)
            .order("priority", desc=True)
            .order("created_at")
            .limit(100)
            .execute()
        ).data or []
        out = []
        for r in rows:
            if str(r["id"]) in self.seen or _past((r.get("metadata") or {}).get("deadline_at")):
                continue  # done with it, or a grey card: the caller is gone
            held = r.get("claimed_by") and not _past(r.get("claim_expires_at"))
            if run.scenario.claims and held and r["claimed_by"] != self.operator_id:
                continue  # claimed by someone else: listed after, never taken
            out.append(r)
        return out

    async def work(self, run: Run, rng: random.Random) -> None:
        """The operator's shift until the run stops: look, pick, work, repeat. A request that
        fails in transport (the devstack busy) is counted and the operator carries on."""
        while not run.stop.is_set():
            try:
                await self._step(run, rng)
            except httpx.HTTPError as e:
                run.count_transport_error(e)
                await _until(run.stop, 0.5)  # the console's retry delay

    async def _step(self, run: Run, rng: random.Random) -> None:
        """One look at the queue, and the case taken from it if any."""
        lo, hi = run.shift()
        if self.index < run.knobs.shift_away and lo <= run.elapsed() < hi:
            if not self.left:
                self.left = True
                await self.beat("away")
                await self.client.rpc("hitl_release_claims").execute()
            await _until(run.stop, hi - run.elapsed())
            return
        if self.left:
            self.left = False
            await self.beat("available")
        if self.distracted_until > run.elapsed():
            self.alert.clear()
            await _until(self.alert, self.distracted_until - run.elapsed())
            self.distracted_until = 0.0
        self.wake.clear()
        cases = await self.queue(run)
        if not cases:
            await _until(self.wake, LOOK_AGAIN_S)
            # noticing the new card takes the person a moment (human time, not a sync)
            await asyncio.sleep(rng.expovariate(1 / run.human(model.NOTICE_MEAN_S)))
            return
        case = cases[0] if run.scenario.claims else rng.choice(cases[:3])
        if await self.handle(run, rng, case) and rng.random() < model.DISTRACTED_P:
            self.distracted_until = run.elapsed() + rng.expovariate(
                1 / run.human(model.DISTRACTED_MEAN_S)
            )

    async def handle(self, run: Run, rng: random.Random, case: dict[str, Any]) -> bool:
        """Work one case; False if it was not ours to work (claim lost)."""
        case_id = str(case["id"])
        if run.scenario.claims and not await self.claim_or_refused(run, case_id):
            return False
        self.seen.add(case_id)
        needs_skill = f"[{SKILL}]" in str(case.get("description", ""))
        if needs_skill and not self.skilled:
            # Without routing the case reached someone who cannot answer it: read, leave it.
            run.wrong_skill_reads += 1
            await asyncio.sleep(run.human(model.WRONG_SKILL_READ_S))  # reading it
            if run.scenario.claims:
                await (
                    self.client.table("cases")
                    .update({"claimed_by": None})
                    .eq("id", case_id)
                    .execute()
                )
            return True
        priority = int(case.get("priority") or 3)
        think = rng.lognormvariate(
            math.log(run.human(model.THINK_MEDIAN_S.get(priority, 11.0))), model.THINK_SIGMA
        )
        try:
            if rng.random() < run.knobs.question_back:
                await asyncio.sleep(think / 2)  # reading and typing the question
                asked = await self.answer(case_id, QUESTION_BACK_TEXT, kind="clarification")
                if not await self._caller_replied(run, case_id, asked.message_id):
                    return True
                await asyncio.sleep(think / 2)  # answering with the fact in hand
                await self.answer(case_id, f"Answer to: {case.get('description')}")
            elif rng.random() < run.knobs.cannot_answer:
                await asyncio.sleep(think)
                await self.answer(case_id, "Not something I can decide.", kind="cannot_answer")
            elif (
                run.scenario.options and case.get("options") and rng.random() < model.OPTION_TAPPED
            ):
                await asyncio.sleep(think * model.OPTION_FACTOR)  # reading, then one tap
                await self.answer(case_id, "", option_index=rng.randrange(len(case["options"])))
            else:
                await asyncio.sleep(think)  # reading and typing
                await self.answer(case_id, f"Answer to: {case.get('description')}")
        except APIError as e:
            run.count_refusal(e)  # the database refused it (recorded, not hidden)
        return True

    async def claim_or_refused(self, run: Run, case_id: str) -> bool:
        try:
            await self.beat("available")  # as the console: a claim needs a recent heartbeat
            return await self.claim(case_id)
        except APIError as e:
            run.count_refusal(e)
            return False

    async def _caller_replied(self, run: Run, case_id: str, after_message: str) -> bool:
        """Wait for the caller's reply (the relay's `ai` message) as the open case shows it."""
        messages = self.client.table("messages")
        got = await messages.select("created_at").eq("id", after_message).execute()
        asked = got.data[0]["created_at"]
        end = run.elapsed() + run.knobs.deadline_s + run.human(30.0)
        while run.elapsed() < end and not run.stop.is_set():
            rows = (
                await self.client.table("messages")
                .select("id")
                .eq("case_id", case_id)
                .eq("sender_type", "ai")
                .gt("created_at", asked)
                .limit(1)
                .execute()
            ).data
            if rows:
                return True
            await _until(run.stop, 0.5)  # the console's case view refreshing
        return False


def _past(at: str | None) -> bool:
    return at is not None and datetime.fromisoformat(str(at)) <= datetime.now(UTC)


async def callers(s: Stack, run: Run, rng: random.Random) -> None:
    """Calls arriving at `rate` per second for `duration` seconds, each asking over MCP."""
    knobs, sc = run.knobs, run.scenario
    arrivals: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(knobs.rate)
        if t >= knobs.duration_s:
            break
        arrivals.append(t)
    priorities, weights = zip(*model.PRIORITY_SHARE.items(), strict=True)
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)

    async def one(client: Client, i: int, at: float) -> None:
        crng = random.Random(rng.random())
        priority = crng.choices(priorities, weights)[0]
        needs_skill = crng.random() < model.SKILL_SHARE
        offers = sc.options and crng.random() < model.OPTIONS_SHARE
        await asyncio.sleep(max(0.0, run.t0 + at - time.monotonic()))  # the arrival schedule
        call = f"{run.tag}-{i}"
        args: dict[str, Any] = {
            "question": f"[{run.tag}/{i}]{f' [{SKILL}]' if needs_skill else ''} "
            f"Can the caller get a refund for order {i}?",
            "context": "operator simulation",
            "session_id": call,
            "call_id": call,
            "agent_id": run.tag,
            "priority": priority,
            "timeout_seconds": knobs.deadline_s,
        }
        if offers:
            args["options"] = OPTIONS
        if needs_skill and sc.routing:
            args["skills"] = [SKILL]
        run.calls += 1
        result = await client.call_tool("ask_human", args)
        out = dict(result.structured_content or {})
        replies = 0
        while out.get("status") == "needs_info" and out.get("case_id"):
            await asyncio.sleep(crng.expovariate(1 / run.human(model.CALLER_REPLY_S)))  # caller
            run.follow_ups += 1
            replies += 1
            follow = {k: v for k, v in args.items() if k not in ("options", "skills")}
            # Each reply in its own words: the platform takes the same words again in the same
            # call and case for a retry of the earlier reply (its idempotency key), and two
            # operators may both ask back on one case when nothing stops them (the baseline).
            reply = CALLER_REPLY_TEXT if replies == 1 else f"{CALLER_REPLY_TEXT} ({replies})"
            follow |= {"case_id": out["case_id"], "question": reply}
            out = dict((await client.call_tool("ask_human", follow)).structured_content or {})
        status = str(out.get("status", "error"))
        run.statuses[status] = run.statuses.get(status, 0) + 1

    async def client_worker(part: list[tuple[int, float]]) -> None:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {s.api_key}"},
            limits=limits,
            timeout=httpx2.Timeout(knobs.deadline_s * 3 + 60.0),
        )
        async with http, Client(streamable_http_client(s.mcp_url, http_client=http)) as client:
            await ready_to_call(client)  # what an agent does when it connects
            await asyncio.gather(*(one(client, i, at) for i, at in part))

    indexed = list(enumerate(arrivals))
    n = max(1, min(8, len(indexed) // 25 or 1))
    await asyncio.gather(*(client_worker(indexed[k::n]) for k in range(n)))


async def _settings(db_url: str) -> dict[str, str]:
    """`hil_settings` as the database holds them before the run (the migrations' defaults, or
    the operator's own): the product defaults this run measured."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("select key, value::text from hil_settings order by key")
    finally:
        await conn.close()
    return {r["key"]: r["value"] for r in rows}


async def _set_escalation(db_url: str, settings: dict[str, str]) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        for key, value in settings.items():
            await conn.execute(
                "update hil_settings set value = $2::jsonb where key = $1", key, value
            )
    finally:
        await conn.close()


async def run_scenario(
    s: Stack, scenario: Scenario, knobs: Knobs, secret: str, escalation_on: dict[str, str]
) -> dict[str, Any]:
    rng = random.Random(f"{knobs.seed}-{scenario.name}")
    tag = f"opsim-{scenario.name.replace('+', '-')}-{uuid.uuid4().hex[:6]}"
    await _set_escalation(s.db_url, escalation_on if scenario.escalation else ESCALATION_OFF)
    ops: list[ConsoleOperator] = []
    for i in range(knobs.operators):
        operator_id = str(uuid.uuid4())
        skilled = i >= knobs.operators - knobs.skilled
        ops.append(
            ConsoleOperator(
                s.url,
                s.anon_key,
                make_keys(secret).user_token(operator_id, skills=[SKILL] if skilled else []),
                operator_id,
                auto_answer=False,
                index=i,
                skilled=skilled,
            )
        )
    conn = await asyncpg.connect(s.db_url)
    started_at: datetime = await conn.fetchval("select now()")
    await conn.close()
    run = Run(scenario, knobs, tag, t0=time.monotonic())
    for op in ops:
        await op.start()
        await op.beat("available")

    async def beating(op: ConsoleOperator) -> None:
        while not await _until(run.stop, HEARTBEAT_S):
            lo, hi = run.shift()
            if not (op.index < knobs.shift_away and lo <= run.elapsed() < hi):
                try:
                    await op.beat("available")
                except httpx.HTTPError as e:
                    run.count_transport_error(e)  # the next beat is within the 90 s

    run.t0 = time.monotonic()
    workers = [asyncio.create_task(op.work(run, random.Random(rng.random()))) for op in ops] + [
        asyncio.create_task(beating(op)) for op in ops
    ]
    try:
        await callers(s, run, rng)
    finally:
        run.stop.set()
        results = await asyncio.gather(*workers, return_exceptions=True)
        for op in ops:
            with contextlib.suppress(APIError, OSError, httpx.HTTPError):
                await op.beat("available")  # ends each availability interval now
            await op.stop()
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    report = await figures_from_db(s.db_url, tag, started_at)
    report.update(
        scenario=asdict(scenario),
        simulator={
            "calls_sent": run.calls,
            "statuses_returned": run.statuses,
            "follow_ups_sent": run.follow_ups,
            "wrong_skill_reads": run.wrong_skill_reads,
            "refused_by_database": run.refused,
            "transport_errors_retried": run.transport_errors,
            "operator_errors": errors,
        },
    )
    return report


async def figures_from_db(db_url: str, tag: str, started_at: datetime) -> dict[str, Any]:
    """The scenario's figures, read from Postgres: the product's success metrics over the window
    and the claim/answer/escalation record of the scenario's cases."""
    conn = await asyncpg.connect(db_url)
    try:
        ids = [
            r["id"]
            for r in await conn.fetch(
                "select id from cases where metadata ->> 'retell_agent_id' = $1", tag
            )
        ]
        end = time.monotonic() + 30
        while time.monotonic() < end:
            waiting = await conn.fetchval(
                "select count(*) from hil_sessions where case_id = any($1) and status = 'waiting'",
                ids,
            )
            if not waiting:
                break
            await asyncio.sleep(0.1)  # polling the database for the relay's last closes
        # nothing of this scenario stays answerable into the next one
        await conn.execute(
            "update cases set expires_at = now() where id = any($1) and status = 'open'", ids
        )
        ended_at: datetime = await conn.fetchval("select now()")
        metrics = json.loads(
            await conn.fetchval("select hitl_success_metrics($1, $2)", started_at, ended_at)
        )
        rows = await conn.fetch(
            """
            select c.id, c.created_at, c.answered_at, c.answer_message_id is not null as decided,
                   c.options is not null as offered, cardinality(c.skills) > 0 as routed,
                   c.escalation_level,
                   (select s.status from hil_sessions s where s.case_id = c.id
                     order by s.created_at desc, s.id desc limit 1) as last_status,
                   (select count(*) from hil_sessions s where s.case_id = c.id) as sessions,
                   (select min(a.at) from hil_audit a
                     where a.case_id = c.id and a.action = 'claim') as first_claim,
                   (select min(m.created_at) from messages m
                     where m.case_id = c.id and m.sender_type = 'human') as first_message,
                   (select count(*) from hil_audit a where a.case_id = c.id
                     and a.action = 'answer' and a.outcome = 'late') as late_answers,
                   (select count(*) from hil_audit a
                     where a.case_id = c.id and a.action = 'escalate') as escalations,
                   (select count(*) from hil_audit a
                     where a.case_id = c.id and a.action = 'claim') as claims,
                   (select count(*) from messages m where m.case_id = c.id
                     and m.kind = 'clarification') as questions_back,
                   (select m.option_index is not null from messages m
                     where m.id = c.answer_message_id) as one_tap,
                   (select m.kind from messages m where m.id = c.answer_message_id) as answer_kind
              from cases c where c.id = any($1)
            """,
            ids,
        )
    finally:
        await conn.close()
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[str(r["last_status"])] = by_status.get(str(r["last_status"]), 0) + 1

    def seconds(a: datetime | None, b: datetime) -> float | None:
        return None if a is None else (a - b).total_seconds()

    to_claim = sorted(
        v for r in rows if (v := seconds(r["first_claim"], r["created_at"])) is not None
    )
    to_action = sorted(
        v
        for r in rows
        if (
            v := seconds(
                min((t for t in (r["first_claim"], r["first_message"]) if t), default=None),
                r["created_at"],
            )
        )
        is not None
    )
    return {
        "tag": tag,
        "window": {"from": started_at.isoformat(), "to": ended_at.isoformat()},
        "success": metrics,
        "db": {
            "cases": len(rows),
            "sessions": sum(int(r["sessions"]) for r in rows),
            "last_session_status": by_status,
            "answered_cases": sum(1 for r in rows if r["decided"]),
            "cannot_answer": sum(1 for r in rows if r["answer_kind"] == "cannot_answer"),
            # cases whose last session a "cannot answer" closed: hitl_success_metrics'
            # cannot_answer, not a success
            "closed_by_cannot_answer": sum(
                1
                for r in rows
                if r["last_status"] == "answered" and r["answer_kind"] == "cannot_answer"
            ),
            "one_tap_answers": sum(1 for r in rows if r["one_tap"]),
            "cases_with_options": sum(1 for r in rows if r["offered"]),
            "cases_with_skills": sum(1 for r in rows if r["routed"]),
            "questions_back": sum(int(r["questions_back"]) for r in rows),
            "claims": sum(int(r["claims"]) for r in rows),
            "wasted_late_answers": sum(int(r["late_answers"]) for r in rows),
            "escalations": sum(int(r["escalations"]) for r in rows),
            "time_to_claim_s": _quantiles(to_claim),
            "time_to_first_action_s": _quantiles(to_action),
            "time_to_first_action_all_s": [round(v, 3) for v in to_action],
        },
    }


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "mean": None}

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)

    return {
        "n": len(values),
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "mean": round(statistics.fmean(values), 3),
    }


def as_model_result(r: dict[str, Any]) -> model.Result:
    """The report in the model's shape, for its table and plot."""
    s, d = r["success"], r["db"]

    def value(key: str) -> float:
        v = s[key]["value"]
        return math.nan if v is None else float(v)

    ttc = d["time_to_first_action_s"]
    return model.Result(
        features=r["scenario"]["name"],
        avg_response_s=value("avg_response_s"),
        success_rate=value("success_rate"),
        timeout_rate=value("timeout_rate"),
        utilisation=value("operator_utilisation"),
        claim_p50_s=ttc["p50"] if ttc["p50"] is not None else math.nan,
        claim_p90_s=ttc["p90"] if ttc["p90"] is not None else math.nan,
        claim_p99_s=ttc["p99"] if ttc["p99"] is not None else math.nan,
        duplicate_work=d["wasted_late_answers"],
        escalations=d["escalations"],
        time_to_claim=list(d["time_to_first_action_all_s"]),
    )


# Without claims nothing is recorded when an operator starts on a case: the first action is
# their first message, after their think time.
PLOT_YLABEL = "asked → first claim, or first message without claims (s, log)"


def parse(argv: list[str]) -> tuple[argparse.Namespace, Knobs, list[Scenario]]:
    p = argparse.ArgumentParser(
        prog="scripts/bench operators --real", description=__doc__.splitlines()[0]
    )
    d = Knobs()
    p.add_argument("--operators", type=int, default=d.operators)
    p.add_argument("--skilled", type=int, default=None, help="operators with the skill (7/20)")
    p.add_argument("--rate", type=float, default=d.rate, help="calls per second (1,000 / 600 s)")
    p.add_argument("--duration", type=float, default=d.duration_s, help="arrival window (s)")
    p.add_argument("--deadline", type=int, default=d.deadline_s, help="each call's timeout (s)")
    p.add_argument("--think-scale", type=float, default=1.0, help="multiplies every human time")
    p.add_argument("--shift-away", type=int, default=None, help="operators away mid-run (4/20)")
    p.add_argument("--question-back", type=float, default=d.question_back, help="share asked back")
    p.add_argument("--cannot-answer", type=float, default=d.cannot_answer, help="share refused")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    p.add_argument(
        "--replot",
        nargs="+",
        metavar="[LABEL=]JSON",
        help="run nothing: the table and --plot of these --json reports together (each "
        "scenario named with its seed, after LABEL if given)",
    )
    a = p.parse_args(argv)
    scale = a.operators / d.operators
    knobs = Knobs(
        operators=a.operators,
        skilled=a.skilled if a.skilled is not None else max(1, round(d.skilled * scale)),
        rate=a.rate,
        duration_s=a.duration,
        deadline_s=a.deadline,
        think_scale=a.think_scale,
        shift_away=a.shift_away if a.shift_away is not None else round(d.shift_away * scale),
        question_back=a.question_back,
        cannot_answer=a.cannot_answer,
        seed=a.seed,
    )
    knobs.validate()
    names = [n.strip() for n in a.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        p.error(f"--scenarios: unknown {unknown or names}; choose from {', '.join(SCENARIOS)}")
    return a, knobs, [SCENARIOS[n] for n in names]


def markdown(reports: list[dict[str, Any]]) -> str:
    lines = [
        model.table([as_model_result(r) for r in reports])
        .replace("time to claim", "time to first action")
        .replace("wasted duplicate answers", "wasted (late) answers"),
        "",
        "| scenario | cases | finished | answered | cannot answer | timed out | other | claims "
        "| one-tap | questions back | time to claim p50 / p90 (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        s, d = r["success"], r["db"]
        ttc = d["time_to_claim_s"]
        lines.append(
            f"| {r['scenario']['name']} | {d['cases']} | {s['finished']} | {s['answered']} | "
            f"{s['cannot_answer']} | {s['timed_out']} | {s['other']} | "
            f"{d['claims']} | {d['one_tap_answers']} | {d['questions_back']} | "
            f"{ttc['p50'] if ttc['n'] else '-'} / {ttc['p90'] if ttc['n'] else '-'} |"
        )
    return "\n".join(lines)


def replot(runs: list[str], plot: Path | None) -> int:
    """Earlier runs side by side: their scenarios, each named with its run's seed (and label)."""
    reports = []
    knobs: list[dict[str, Any]] = []
    for run in runs:
        label, _, path = run.rpartition("=")
        report = json.loads(Path(path).read_text())
        knobs.append(report["knobs"])
        for r in report["scenarios"]:
            name = f"{label + ': ' if label else ''}{r['scenario']['name']}"
            r["scenario"] = {**r["scenario"], "name": f"{name} (seed {knobs[-1]['seed']})"}
            reports.append(r)
    print(markdown(reports))
    if plot:
        first = knobs[0]
        model.plot(
            [as_model_result(r) for r in reports],
            plot,
            title=f"Time to first action, {first['operators']} operators, real stack "
            f"({first['rate']:.2f} calls/s for {first['duration_s']:.0f} s)",
            ylabel=PLOT_YLABEL,
        )
        print(f"wrote {plot}")
    return 0


async def main(argv: list[str]) -> int:
    args, knobs, scenarios = parse(argv)
    if args.replot:
        return replot(args.replot, args.plot)
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve()
    log_dir = home / "bench"
    reports: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    overrides = {
        "HITL_ESCALATION_INTERVAL_SECONDS": ESCALATION_ROUND_S,
        # the scenario's leftovers are expired by the harness; a case lives a while after its
        # caller's deadline, as on a real console, but not into the next scenario
        "HITL_CASE_TTL_SECONDS": str(max(60, knobs.deadline_s * 3)),
    }
    async with stack(home, log_dir=log_dir, relay_env=overrides) as s:
        secret = read_env_file(home / "devstack.env")["SUPABASE_JWT_SECRET"]
        print(f"stack: {s.url} (devstack), relay {s.mcp_url}; logs in {log_dir}", flush=True)
        settings = await _settings(s.db_url)
        escalation_on = {k: v for k, v in settings.items() if k in ESCALATION_OFF}
        try:
            for scenario in scenarios:
                t = time.monotonic()
                print(f"scenario {scenario.name} ...", flush=True)
                reports.append(await run_scenario(s, scenario, knobs, secret, escalation_on))
                print(f"  done in {time.monotonic() - t:.0f} s", flush=True)
        finally:
            await _set_escalation(s.db_url, escalation_on)
    table = markdown(reports)
    print(table)
    report = {
        "started_at": started.isoformat(),
        "machine": machine(),
        "knobs": asdict(knobs),
        "hil_settings": settings,
        "time": "real seconds (think times as the model's) over a shorter arrival window than "
        "the issue's 10 minutes; think_scale multiplies every human time",
        "source": "success: hitl_success_metrics(from, to) over each scenario's window; db: SQL "
        "over the scenario's cases (cases, hil_sessions, messages, hil_audit); simulator: the "
        "harness's own counts, a cross-check only",
        "scenarios": reports,
        "table": table,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        model.plot(
            [as_model_result(r) for r in reports],
            args.plot,
            title=f"Time to first action, {knobs.operators} operators, real stack "
            f"({knobs.rate:.2f} calls/s for {knobs.duration_s:.0f} s)",
            ylabel=PLOT_YLABEL,
        )
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
