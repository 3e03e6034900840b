"""Operator simulation: what claiming, routing, escalation and one-tap answers do to the plan's
four figures (average response < 30 s, success > 95 %, timeouts < 5 %, utilisation > 70 %).

A discrete-event model of the human side, not a load run: the platform's own share of a
response is milliseconds (docs/benchmarks.md, "Latest run"), while an operator's is seconds, so
the model takes delivery as instant and simulates what operators do. The rules are the SQL's
(supabase/migrations/20261206500000_hitl_claim_route_options.sql): one claim holder, routing by
skills ordered by priority then deadline, escalation thresholds from `hil_settings`' defaults
(unclaimed 5/8/12/20/30 s for priority 5..1, priority + 1, every idle console alerted). The
mechanics themselves are tested elsewhere (supabase/tests/80_claim_route_escalate.sql,
tests/browser/test_console_claims.py); this script puts numbers on the assumptions below.

Assumptions (the knobs at the top, one place):
- 1,000 calls over 10 minutes, Poisson arrivals; deadline 45 s (the relay's default).
- Priorities 1..5 with shares 10/20/40/20/10 %; 25 % need the `billing` skill, which 7 of the
  20 operators hold; 60 % offer options, which the operator taps in 80 % of those cases.
- 20 operators; a shift change takes 4 of them away from minute 3 to minute 6.
- Think time (pick → answer) lognormal, median 9 s (priority 5) to 13 s (priority 1), sigma
  0.45; a one-tap answer takes 45 % of that; 10 % of cases need a question back (half the think
  time to ask, 6 s for the caller's reply via the agent, half the think time to answer).
- An idle operator notices the queue after an exponential 2 s; each idle spell is distracted
  (away from the screen) with probability 0.3 for an exponential 20 s, unless an escalation
  alert interrupts it.
- Without claims every console shows the same queue, so idle operators pick among the top
  three open cases and may work a case someone else already works (the second answer is
  wasted; Postgres keeps the first). With claims they pick only unclaimed cases.
- Without routing an operator may pick a case needing a skill they lack: 5 s to read it, then
  they leave it. With routing it is never offered to them.

Run: `.venv/bin/python -m bench.operators` (writes docs/operators.json and
docs/operators.png); `--seed` and `--calls` change the run.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CALLS = 1000
DURATION_S = 600.0
DEADLINE_S = 45.0
OPERATORS = 20
SKILLED = 7
SHIFT_AWAY = (0, 1, 2, 3)
SHIFT_WINDOW = (180.0, 360.0)
PRIORITY_SHARE = {1: 0.10, 2: 0.20, 3: 0.40, 4: 0.20, 5: 0.10}
SKILL_SHARE = 0.25
OPTIONS_SHARE = 0.60
OPTION_TAPPED = 0.80
OPTION_FACTOR = 0.45
QUESTION_BACK = 0.10
CALLER_REPLY_S = 6.0
THINK_MEDIAN_S = {5: 9.0, 4: 10.0, 3: 11.0, 2: 12.0, 1: 13.0}
THINK_SIGMA = 0.45
NOTICE_MEAN_S = 2.0
DISTRACTED_P = 0.3
DISTRACTED_MEAN_S = 20.0
WRONG_SKILL_READ_S = 5.0
# hil_settings defaults: unclaimed seconds before escalation, per priority
ESCALATE_UNCLAIMED_S = {5: 5, 4: 8, 3: 12, 2: 20, 1: 30}
TARGETS = {"avg_response_s": 30.0, "success_rate": 0.95, "timeout_rate": 0.05, "utilisation": 0.70}


@dataclass(frozen=True)
class Features:
    claims: bool = False
    routing: bool = False
    escalation: bool = False
    options: bool = False

    @property
    def label(self) -> str:
        on = [n for n in ("claims", "routing", "escalation", "options") if getattr(self, n)]
        return "+".join(on) if on else "none"


@dataclass
class Case:
    id: int
    asked: float
    priority: int
    skill: bool
    options: bool
    question_back: bool
    claimed_by: int | None = None
    first_pick: float | None = None
    answered: float | None = None
    escalated: bool = False
    workers: set[int] = field(default_factory=set)
    refused_by: set[int] = field(default_factory=set)


@dataclass
class Operator:
    id: int
    skilled: bool
    busy_until: float = 0.0
    busy_s: float = 0.0
    idle: bool = True
    distracted_until: float = 0.0


@dataclass
class Result:
    features: str
    avg_response_s: float
    success_rate: float
    timeout_rate: float
    utilisation: float
    claim_p50_s: float
    claim_p90_s: float
    claim_p99_s: float
    duplicate_work: int
    escalations: int
    time_to_claim: list[float]


def on_duty(op: int, t: float) -> bool:
    return not (op in SHIFT_AWAY and SHIFT_WINDOW[0] <= t < SHIFT_WINDOW[1])


def duty_seconds(op: int) -> float:
    return DURATION_S - (SHIFT_WINDOW[1] - SHIFT_WINDOW[0] if op in SHIFT_AWAY else 0.0)


def simulate(features: Features, seed: int, calls: int = CALLS) -> Result:
    rng = random.Random(seed)
    events: list[tuple[float, int, str, int]] = []
    counter = 0

    def push(t: float, kind: str, ref: int) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, ref))

    t = 0.0
    cases: list[Case] = []
    priorities, weights = zip(*PRIORITY_SHARE.items(), strict=True)
    for i in range(calls):
        t += rng.expovariate(calls / DURATION_S)
        case = Case(
            id=i,
            asked=t,
            priority=rng.choices(priorities, weights)[0],
            skill=rng.random() < SKILL_SHARE,
            options=rng.random() < OPTIONS_SHARE,
            question_back=rng.random() < QUESTION_BACK,
        )
        cases.append(case)
        push(t, "ask", i)
        if features.escalation:
            push(t + ESCALATE_UNCLAIMED_S[case.priority], "escalate", i)
    ops = [Operator(i, skilled=i >= OPERATORS - SKILLED) for i in range(OPERATORS)]
    for op in ops:
        push(0.0, "idle", op.id)
    push(SHIFT_WINDOW[1], "shift", 0)
    open_cases: dict[int, Case] = {}
    duplicates = 0
    escalations = 0

    def deadline(c: Case) -> float:
        return c.asked + DEADLINE_S

    def offered(op: Operator, now: float) -> list[Case]:
        mine: list[Case] = []
        for c in open_cases.values():
            if deadline(c) + 600 < now or op.id in c.workers or op.id in c.refused_by:
                continue
            if features.claims and c.claimed_by is not None:
                continue
            if features.routing and c.skill and not op.skilled:
                continue
            mine.append(c)
        if features.routing:
            # hitl_operator_queue: callers still waiting first, then priority, then deadline
            mine.sort(key=lambda c: (deadline(c) <= now, -c.priority, deadline(c)))
        else:
            # the console's order before routing: priority, then oldest (gone callers too)
            mine.sort(key=lambda c: (-c.priority, c.asked))
        return mine

    def think(c: Case) -> float:
        s = rng.lognormvariate(math.log(THINK_MEDIAN_S[c.priority]), THINK_SIGMA)
        if features.options and c.options and rng.random() < OPTION_TAPPED:
            s *= OPTION_FACTOR
        return s

    def try_pick(op: Operator, now: float) -> None:
        if not op.idle or not on_duty(op.id, now):
            return
        if op.distracted_until > now:
            push(op.distracted_until, "look", op.id)
            return
        queue = offered(op, now)
        if not queue:
            return
        top = queue[: 1 if features.claims else 3]
        c = rng.choice(top)
        op.idle = False
        if c.first_pick is None:
            c.first_pick = now
        if features.claims:
            c.claimed_by = op.id
        c.workers.add(op.id)
        if c.skill and not op.skilled:
            c.refused_by.add(op.id)
            c.workers.discard(op.id)
            if features.claims:
                c.claimed_by = None
            push(now + WRONG_SKILL_READ_S, "free", op.id)
            op.busy_s += WRONG_SKILL_READ_S
            return
        work = think(c)
        total = work + (CALLER_REPLY_S if c.question_back else 0.0)
        op.busy_s += work
        push(now + total, "answer", c.id * 100 + op.id)

    def become_idle(op: Operator, now: float) -> None:
        op.idle = True
        if rng.random() < DISTRACTED_P:
            op.distracted_until = now + rng.expovariate(1 / DISTRACTED_MEAN_S)
        push(now + rng.expovariate(1 / NOTICE_MEAN_S), "look", op.id)

    while events:
        now, _, kind, ref = heapq.heappop(events)
        if kind == "ask":
            open_cases[ref] = cases[ref]
            for op in ops:
                if op.idle:
                    push(now + rng.expovariate(1 / NOTICE_MEAN_S), "look", op.id)
        elif kind in ("idle", "free"):
            become_idle(ops[ref], now)
        elif kind == "look":
            try_pick(ops[ref], now)
        elif kind == "shift":
            for op in ops:
                if op.idle:
                    push(now, "look", op.id)
        elif kind == "escalate":
            c = cases[ref]
            if c.answered is None and c.claimed_by is None and ref in open_cases:
                c.priority = min(5, c.priority + 1)
                c.escalated = True
                escalations += 1
                for op in ops:  # the console's alert: idle operators look now
                    if op.idle and on_duty(op.id, now):
                        op.distracted_until = min(op.distracted_until, now)
                        push(now + 0.5, "look", op.id)
        elif kind == "answer":
            case_id, op_id = divmod(ref, 100)
            c = cases[case_id]
            if c.answered is None:
                c.answered = now
                open_cases.pop(case_id, None)
            else:
                duplicates += 1  # Postgres kept the first answer; this work was wasted
            become_idle(ops[op_id], now)
    answered = [c for c in cases if c.answered is not None and c.answered <= deadline(c)]
    responses = [c.answered - c.asked for c in answered if c.answered is not None]
    picks = [c.first_pick - c.asked for c in cases if c.first_pick is not None]
    picks_sorted = sorted(picks) or [math.nan]
    utilisation = sum(op.busy_s for op in ops) / sum(duty_seconds(op.id) for op in ops)

    def pct(p: float) -> float:
        return picks_sorted[min(len(picks_sorted) - 1, int(p * len(picks_sorted)))]

    return Result(
        features=features.label,
        avg_response_s=statistics.fmean(responses) if responses else math.nan,
        success_rate=len(answered) / len(cases),
        timeout_rate=1 - len(answered) / len(cases),
        utilisation=min(1.0, utilisation),
        claim_p50_s=pct(0.5),
        claim_p90_s=pct(0.9),
        claim_p99_s=pct(0.99),
        duplicate_work=duplicates,
        escalations=escalations,
        time_to_claim=picks,
    )


CONFIGS = [
    Features(),
    Features(claims=True),
    Features(routing=True),
    Features(escalation=True),
    Features(options=True),
    Features(claims=True, routing=True),
    Features(claims=True, routing=True, escalation=True),
    Features(claims=True, routing=True, escalation=True, options=True),
]


def run_all(seeds: int, calls: int, pick: Callable[[Result], float] | None = None) -> list[Result]:
    """Each configuration over `seeds` seeds; figures averaged, time-to-claim pooled."""
    out = []
    for features in CONFIGS:
        runs = [simulate(features, seed, calls) for seed in range(seeds)]
        pooled = sorted(v for r in runs for v in r.time_to_claim)

        def mean(name: str, rs: list[Result] = runs) -> float:
            return statistics.fmean(getattr(r, name) for r in rs)

        out.append(
            Result(
                features=features.label,
                avg_response_s=mean("avg_response_s"),
                success_rate=mean("success_rate"),
                timeout_rate=mean("timeout_rate"),
                utilisation=mean("utilisation"),
                claim_p50_s=pooled[len(pooled) // 2],
                claim_p90_s=pooled[int(0.9 * len(pooled))],
                claim_p99_s=pooled[int(0.99 * len(pooled))],
                duplicate_work=round(mean("duplicate_work")),
                escalations=round(mean("escalations")),
                time_to_claim=pooled,
            )
        )
    return out


def plot(
    results: list[Result],
    path: Path,
    title: str = "Time to claim, 20 operators, 1,000 calls in 10 min (simulated)",
    ylabel: str = "time to claim: asked → an operator starts (s, log)",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    data = [[max(v, 0.05) for v in r.time_to_claim] for r in results]
    parts = ax.violinplot(data, showmedians=True, widths=0.85)
    for body in parts["bodies"]:
        body.set_alpha(0.55)
    ax.set_yscale("log")
    ax.set_xticks(range(1, len(results) + 1), [r.features.replace("+", "\n+") for r in results])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax = axes[1]
    x = range(len(results))
    ax.bar([i - 0.2 for i in x], [r.success_rate * 100 for r in results], 0.4, label="success %")
    ax.bar([i + 0.2 for i in x], [r.utilisation * 100 for r in results], 0.4, label="utilisation %")
    ax.axhline(95, color="#2ca02c", linestyle="--", linewidth=1, label="success target 95 %")
    ax.axhline(70, color="#ff7f0e", linestyle=":", linewidth=1, label="utilisation target 70 %")
    ax.set_xticks(list(x), [r.features.replace("+", "\n+") for r in results], fontsize=7)
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Success and utilisation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: list[Result]) -> str:
    lines = [
        "| features | avg response (s) | success | timeouts | utilisation "
        "| time to claim p50 / p90 / p99 (s) | wasted duplicate answers | escalations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.features} | {r.avg_response_s:.1f} | {r.success_rate:.1%} | "
            f"{r.timeout_rate:.1%} | {r.utilisation:.1%} | {r.claim_p50_s:.1f} / "
            f"{r.claim_p90_s:.1f} / {r.claim_p99_s:.1f} | {r.duplicate_work} | {r.escalations} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    results = run_all(args.seeds, args.calls)
    print(table(results))
    summary = [{k: v for k, v in vars(r).items() if k != "time_to_claim"} for r in results]
    (args.out / "operators.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, args.out / "operators.png")


if __name__ == "__main__":
    main()
