"""scripts/bench: realtime relay vs polling, side by side. `--help` for the options."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.plot import plot
from bench.run import ROOT, delivery_clock, machine, run_polling, run_realtime, stack
from bench.scaleout import resume_on_another_replica
from bench.stats import LevelResult, ratio_p50, summary
from bench.success import render_success
from bench.targets import render_targets, verdicts
from hitl_relay import gc_tuning
from hitl_relay.config import Settings

EPILOG = """\
what each run reports (docs/benchmarks.md has the figures):
  per level: answered / failed to open / lost / duplicated with every error counted by kind;
  delivery (answer committed -> caller has it) and case creation p50/p95/p99; DB statements/s
  while waiting; relay RSS; a progress line every 10 s; the load average at start and end.
  per hop: the relay's own (case channel frame read -> tool result bytes written,
  hitl_answer_hop_seconds), the stack's (broadcast row inserted -> frame sent, the devstack's
  /_devstack/hops: every broadcast, and the answers' `message` frames alone), the harness's
  own (the tool result's last bytes received -> its MCP client's call_tool returned: parse,
  validation against the output schema), event-loop lag and garbage-collector pauses.
  the first call of a fresh relay process (the warm-up call), reported on its own.
  targets: what the run measured, judged against the performance targets (1,000: delivery
  p50 <= 2 ms and p99 <= 10 ms, creation p99 <= 30 ms, the relay's hop p50 <= 0.3 ms and p99 <= 2
  ms, ratio_p50 >= 400; 10,000: every call answered once, delivery p99 <= 25 ms, creation p99
  <= 100 ms, no loop lag or collector pause over 50 ms, RSS <= 600 MiB in one process; the first
  call <= 20 ms), printed and in the JSON's "targets"; never asserted.
  every phase is bounded: a level always ends and reports; SIGINT/SIGTERM stop the relay,
  the devstack and Postgres that the run started.

reproduce:
  scripts/bench --quick                                    levels 1 and 20, under a minute
  scripts/bench --json docs/benchmark-perf.json --plot docs/benchmark-perf.png
                                                           1, 100, 1,000, both modes
  scripts/bench --levels 10000 --modes realtime --rate 40 --json out.json
                                                           10,000 waiting in one relay
  scripts/bench --levels 10000 --modes realtime --rate 40 --replicas 3 --json out.json
                                                           the same over three relays, and a
                                                           call resumed on another replica
  scripts/bench --levels 200 --modes realtime --census     collector-tracked objects per
                                                           waiting call, by type
  scripts/bench --levels 200 --modes realtime --census --rate 50 --era legacy
                                                           the same with handshake-era clients
  scripts/bench rest --seconds 10                          the REST stand-in's requests/s
  scripts/bench tasks --level 1000 --poll-ms 5000          MCP tasks polled vs blocking
run HITL_PG_PORT=<free port> HITL_DEVSTACK_PORT=0 HITL_HOME=<dir> on a shared machine, so the
run gets its own stack.
"""


def answer_spread(spread: float | None, level: int, rate: float, *, quick: bool) -> float:
    """Operators' think times are spread over this many seconds. By default as long as the
    calls took to arrive, so answers come at the rate calls do and the level's N calls stay
    waiting at once (a steady state), instead of N operators answering within 3 seconds."""
    if spread is not None:
        return spread
    floor = 0.5 if quick else 3.0
    return max(floor, level / rate) if rate > 0 else floor


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small levels (1, 20); under a minute")
    p.add_argument("--full", action="store_true", help="also 10,000 concurrent calls")
    p.add_argument("--levels", help="comma-separated concurrency levels (overrides the presets)")
    p.add_argument("--modes", default="realtime,polling", help="realtime,polling")
    p.add_argument("--wait", type=float, default=None, help="seconds of pure waiting measured")
    p.add_argument(
        "--spread",
        type=float,
        default=None,
        help="operator think time spread (s); default level / rate, at least 3 s",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=25.0,
        help="calls arriving per second while a level opens (0: all at once); default 25, "
        "what the devstack (one Python process for PostgREST and Realtime) sustains next to "
        "the relay and this harness on 2 cores",
    )
    p.add_argument(
        "--census",
        action="store_true",
        help="count the objects the relay's collector tracks, idle and with each level waiting "
        "(objects per waiting call); each count walks the relay's heap and pauses it, which "
        "shows in that level's loop lag",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="relay processes over the one devstack, each with its own HITL_INSTANCE_ID; the "
        "calls are spread over them (figures per replica and in total), and with 2 or more a "
        "call is resumed on another replica while the one it started on is killed",
    )
    p.add_argument(
        "--era",
        choices=("auto", "legacy"),
        default="auto",
        help="the MCP protocol era of the harness's clients: auto negotiates the newest "
        "(2026-07-28, served by the SDK's per-request entry), legacy the handshake era "
        "(initialize; a blocking ask_human then takes the relay's fast path, mcp_fast)",
    )
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, help="write the latency plot (PNG) here")
    return p.parse_args(argv)


def render(results: list[LevelResult], console: Console) -> None:
    table = Table(title="hitl-relay benchmark: delivery = answer committed → caller has it")
    for col in (
        "mode",
        "level",
        "answered",
        "failed open",
        "lost",
        "dup",
        "delivery p50",
        "p95",
        "p99",
        "max",
        "relay p50",
        "relay p99",
        "create p50",
        "create p99",
        "db stmt/s",
        "RSS MB",
        "KB/wait",
        "load avg (1 min) start → end",
    ):
        table.add_column(col, justify="right")
    for r in results:
        j = r.as_json()
        d, c = j["delivery_ms"], j["create_ms"]
        table.add_row(
            r.mode,
            str(r.level),
            str(r.answered),
            str(r.failed_open),
            str(r.lost),
            str(r.duplicated),
            *(
                f"{v:.2f}" if v is not None else "-"
                for v in (d["p50"], d["p95"], d["p99"], d["max"])
            ),
            *(
                f"{v:.2f}" if v is not None else "-"
                for v in (
                    (r.relay_delivery_ms or {}).get("p50"),
                    (r.relay_delivery_ms or {}).get("p99"),
                )
            ),
            *(f"{v:.1f}" if v is not None else "-" for v in (c["p50"], c["p99"])),
            f"{r.db_statements_per_s}" if r.db_statements_per_s is not None else "-",
            f"{r.rss_mb}" if r.rss_mb is not None else "-",
            f"{r.rss_kb_per_wait}" if r.rss_kb_per_wait is not None else "-",
            " → ".join(x.split()[0] for x in r.load_average.split(" → "))
            if r.load_average
            else "-",
        )
    console.print(table)
    for r in results:
        if r.gc_census:
            c = r.gc_census
            console.print(
                f"{r.mode} at {r.level}: collector-tracked objects {c['idle_objects']:,} idle, "
                f"{c['waiting_objects']:,} waiting: {c['objects_per_waiting_call']} per waiting "
                f"call ({c['frozen_objects']:,} frozen; the count took {c['census_ms']} ms); "
                f"modules imported meanwhile: {len(c['modules_imported'])}"
            )
        j = r.as_json()
        if j["delivery_wire_ms"] and j["client_ms"]:
            wire, client = j["delivery_wire_ms"], j["client_ms"]
            console.print(
                f"{r.mode} at {r.level}: delivery to the caller's socket (the result's bytes "
                f"received) p50/p99 {_ms(wire['p50'])}/{_ms(wire['p99'])} ms; the harness's "
                f"own share (→ call_tool returned) {_ms(client['p50'])}/{_ms(client['p99'])} ms"
            )
        for kind, n in r.error_counts.most_common(10):
            console.print(f"{r.mode} at {r.level}: {n} × {kind}")
    for r in results:
        split = r.as_json()["create_split"]
        if split is None:
            continue
        relay, to_commit, to_op = (
            split["relay_ms"] or {},
            split["call_to_commit_ms"],
            split["commit_to_operator_ms"],
        )
        console.print(
            f"case creation at {r.level}, p50/p99 ms: call started → case committed "
            f"{_ms(to_commit.get('p50'))}/{_ms(to_commit.get('p99'))} (the relay's own view "
            f"{_ms(relay.get('p50'))}/{_ms(relay.get('p99'))}); committed → operator has it "
            f"{_ms(to_op.get('p50'))}/{_ms(to_op.get('p99'))}"
        )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, so every figure carries it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def render_first(r: LevelResult, console: Console) -> None:
    """The warm-up call: the first of a fresh relay process (and of this harness's clients)."""
    j = r.as_json()
    hops = r.hops or {}
    stack = (hops.get("stack_answer_hop_ms") or {}).get("p50")
    console.print(
        f"first call in a fresh relay process: delivery {_ms(j['delivery_ms']['p50'])} ms "
        f"(relay hop {_ms((hops.get('relay_hop_ms') or {}).get('p50'))} ms, "
        f"the stack's hop of its answer {_ms(stack)} ms), creation "
        f"{_ms(j['create_ms']['p50'])} ms; answered {r.answered}, {r.error_total()} errors"
    )


def render_hops(results: list[LevelResult], console: Console) -> None:
    """Where the time went per level: the relay's own hop, the stack's, pauses and loop lag."""
    table = Table(
        title="per hop (ms): relay = frame read → result written; "
        "stack = broadcast row inserted (commit included) → frame sent, every broadcast "
        "and answers' (`message`) only; harness = result's bytes received → call_tool returned"
    )
    for col in (
        "mode",
        "level",
        "relay p50",
        "relay p99",
        "stack p50",
        "stack p99",
        "answers' stack p50",
        "answers' stack p99",
        "harness p50",
        "harness p99",
        "loop lag p99",
        "lag max ≤",
        "lag > 50 ms",
        "full GCs",
        "full GC total",
        "GC max ≤",
        "GC > 50 ms",
    ):
        table.add_column(col, justify="right")
    for r in results:
        h = r.hops
        if not h:
            continue
        relay, stack, lag = h["relay_hop_ms"], h["stack_hop_ms"] or {}, h["loop_lag_ms"]
        answers = h.get("stack_answer_hop_ms") or {}
        client = summary(r.client_ms) if r.client_ms else {}
        gcs = h["gc_pauses"]
        full = gcs["2"]
        gc_max = [g["max_le_ms"] for g in gcs.values() if g["max_le_ms"] is not None]
        table.add_row(
            r.mode,
            str(r.level),
            _ms(relay["p50"]),
            _ms(relay["p99"]),
            _ms(stack.get("p50")),
            _ms(stack.get("p99")),
            _ms(answers.get("p50")),
            _ms(answers.get("p99")),
            _ms(client.get("p50")),
            _ms(client.get("p99")),
            _ms(lag["p99"]),
            str(lag["max_le_ms"]),
            str(lag["over_50ms"]),
            str(full["count"]),
            f"{full['total_ms']}",
            str(max(gc_max, key=lambda v: float(v)) if gc_max else "-"),
            str(sum(g["over_50ms"] for g in gcs.values())),
        )
    console.print(table)


def render_replicas(results: list[LevelResult], console: Console) -> None:
    for r in results:
        for per in r.replicas:
            d, h = per.get("delivery_ms") or {}, per["hops"]
            console.print(
                f"{r.mode} at {r.level}, replica {per['instance_id']}: {per['calls']} calls, "
                f"{per.get('answered')} answered, delivery p50/p99 {_ms(d.get('p50'))}/"
                f"{_ms(d.get('p99'))} ms, relay hop p50/p99 {_ms(h['relay_hop_ms']['p50'])}/"
                f"{_ms(h['relay_hop_ms']['p99'])} ms, full GCs {h['gc_pauses']['2']['count']} "
                f"({h['gc_pauses']['2']['total_ms']} ms), loop lag > 50 ms "
                f"{h['loop_lag_ms']['over_50ms']}, RSS {per['rss_mb']} MiB"
            )


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


async def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.levels:
        levels = [int(x) for x in args.levels.split(",")]
    elif args.quick:
        levels = [1, 20]
    else:
        levels = [1, 100, 1000] + ([10000] if args.full else [])
    wait_s = args.wait if args.wait is not None else (1.0 if args.quick else 2.0)
    spread_arg: float | None = args.spread
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    console = Console(width=None if sys.stdout.isatty() else 180)
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve()
    log_dir = home / "bench"
    results: list[LevelResult] = []
    started = datetime.now(UTC)
    load_start = load_average()
    first: LevelResult | None = None
    resume: dict[str, Any] | None = None
    # The harness keeps as many calls waiting as the relay does, and its own collections would
    # show up as latency: it runs the relay's collector policy without its full passes
    # (hitl_relay.gc_tuning.freezing; the cap's pass, reached by its MCP clients once per
    # 10,000-call run, paused it 0.6-0.7 s, counted into the deliveries then).
    full_every = Settings.model_fields["gc_full_collection_every"].default
    async with (
        stack(home, log_dir=log_dir, census=args.census, replicas=args.replicas) as s,
        gc_tuning.freezing(full_every),
    ):
        s.mcp_mode = args.era
        console.print(
            f"stack: {s.url} (devstack), relays {', '.join(s.mcp_urls)}; logs in {log_dir}"
        )
        clock = await delivery_clock(s.db_url)
        # One answered call first, not reported: a running relay is warm (connections open,
        # code paths loaded); the first call of a fresh process is not what callers meet.
        first = await run_realtime(s, 1, wait_s=0.0, spread_s=0.1, rate=0.0)
        first.mode = "first call"
        render_first(first, console)
        if first.gc_census:
            console.print(
                f"first call: the relay imported {len(first.gc_census['modules_imported'])} "
                f"modules while it opened: {', '.join(first.gc_census['modules_imported'][:30])}"
            )
        for level in levels:
            for mode in modes:
                load_before = load_average()
                console.print(
                    f"[bold]{mode}[/] at {level} concurrent calls ... (load average {load_before})"
                )
                runner = run_realtime if mode == "realtime" else run_polling
                spread_s = answer_spread(spread_arg, level, args.rate, quick=args.quick)
                try:
                    result = await runner(
                        s, level, wait_s=wait_s, spread_s=spread_s, rate=args.rate
                    )
                    result.load_average = f"{load_before} → {load_average()}"
                    results.append(result)
                except (TimeoutError, OSError, RuntimeError) as e:
                    # A level that could not finish is reported as such, not dropped silently.
                    incomplete = LevelResult(mode=mode, level=level, lost=level)
                    incomplete.note_error("level did not complete", e)
                    results.append(incomplete)
                    console.print(f"[red]{mode} at {level}: {incomplete.errors[0]}[/]")
        if args.replicas > 1:
            console.print("scale-out: a call resumed on another replica while its first dies ...")
            resume = await resume_on_another_replica(s)
    render(results, console)
    render_hops(results, console)
    render_replicas(results, console)
    if resume is not None:
        console.print(f"call resumed on another replica while its first was killed: {resume}")
    render_success(results, console)
    ratio = ratio_p50(results)
    if ratio:
        console.print(
            f"ratio_p50 (polling p50 / realtime p50) at {ratio['level']}: {ratio['ratio']}x"
        )
    report = {
        "started_at": started.isoformat(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "first_call": first.as_json() if first is not None else None,
        "replicas": args.replicas,
        "resume_on_another_replica": resume,
        "machine": machine(),
        "delivery_clock": f"{clock} (database clock) to the caller's wall clock on return; "
        "same machine. relay_delivery_ms: messages.created_at to the relay having the answer "
        "(the relay's hitl_delivery_seconds histogram, interpolated within its buckets). "
        "client_ms: the tool result's last bytes received by the harness to its MCP client's "
        "call_tool returning (bench/arrivals.py); delivery_wire_ms: the delivery less that",
        "create_split": "realtime case creation in parts. relay_ms: tool call received to "
        "hitl_open_case done (the relay's hitl_case_creation_seconds histogram, interpolated "
        "within its buckets); call_to_commit_ms: call started to the case's insert committed "
        "(pg_xact_commit_timestamp); commit_to_operator_ms: committed to an operator "
        "subscriber having case_opened",
        "arrival_rate_per_s": args.rate,
        "db_statements_source": "pg_stat_statements calls in the stack's database during the "
        "pure waiting window, minus the two sampling statements",
        "wait_s": wait_s,
        "spread_s": spread_arg
        if spread_arg is not None
        else "level / rate (answers arrive as fast as calls do), at least 3 s (0.5 s --quick)",
        "results": [r.as_json() for r in results],
        "ratio_p50": ratio["ratio"] if ratio else None,
        "ratio_level": ratio["level"] if ratio else None,
    }
    report["targets"] = verdicts(
        report["results"], report["first_call"], ratio, replicas=args.replicas
    )
    render_targets(report["targets"], console)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot, machine())
        console.print(f"wrote {args.plot}")
    failed = sum(r.lost + r.duplicated + r.failed_open for r in results)
    if resume is not None and not resume.get("answer_matches"):
        failed += 1  # the resumed call did not get its answer
    return 1 if failed else 0


async def run_until_signalled(
    argv: list[str], entry: Callable[[list[str]], Awaitable[int]] | None = None
) -> int:
    """`entry` (default main()), cancelled by SIGINT or SIGTERM: the cancellation unwinds
    through `stack()`, which stops the relay and the devstack it started (and so Postgres)
    before the process exits.
    The children run in their own sessions, so a signal to this process never reaches them
    directly: stopping them is this process's job."""
    task = asyncio.ensure_future((entry or main)(argv))
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        if not received:  # a second signal does not interrupt the clean-up of the first
            print(f"scripts/bench: {sig.name}: stopping what it started", flush=True)
            task.cancel()
        received.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


if __name__ == "__main__":
    sys.exit(asyncio.run(run_until_signalled(sys.argv[1:])))
