"""scripts/bench rest: how many requests a second the devstack's REST stand-in serves.

The polling baseline's figures are only fair if its REST server is not the bottleneck, so this
measures that server alone: `--concurrency` clients each send one request after another for
`--seconds`, the same request the polling baseline sends (`GET /rest/v1/messages?case_id=eq...`
with the service-role key, row-level security applying) and an RPC (`hitl_case_reply`, what the
relay's catch-up read calls), each client on its own keep-alive connection. Reported: requests
per second, latency p50/p99, CPU per request (the devstack, Postgres, this client) and the load
average (the machine is shared: read the figures next to it). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.rawhttp import exchange
from bench.run import ROOT, Stack, stack
from bench.stats import summary


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench rest", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per request kind")
    p.add_argument("--concurrency", type=int, default=32, help="clients sending at once")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds these processes have used (from /proc; gone ones count 0).
    CPU per request holds on a busy machine, where requests per second do not."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids(home: Path) -> list[int]:
    """The postmaster of the stack's cluster and its children (the backends)."""
    try:
        postmaster = int((home / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def request_bytes(s: Stack, kind: str, case_id: str) -> bytes:
    """The request, encoded once: the client's own work per request is a write and a read, so
    the figures are the server's (bench/rawhttp.py)."""
    host = s.url.removeprefix("http://")
    auth = f"apikey: {s.service_key}\r\nAuthorization: Bearer {s.service_key}\r\n"
    if kind == "poll":
        query = urlencode(
            {
                "select": "content,created_at",
                "case_id": f"eq.{case_id}",
                "sender_type": "eq.human",
                "order": "created_at.asc",
                "limit": "1",
            }
        )
        return f"GET /rest/v1/messages?{query} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
    body = json.dumps({"p_case_id": case_id}).encode()
    head = (
        f"POST /rest/v1/rpc/hitl_case_reply HTTP/1.1\r\nHost: {host}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def measure(
    s: Stack, home: Path, kind: str, seconds: float, concurrency: int
) -> dict[str, Any]:
    case_id = str(uuid.uuid4())  # no such case: the read is the same work, answered empty
    request = request_bytes(s, kind, case_id)
    host, port = s.url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]
    try:

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while time.monotonic() < end:
                t = time.monotonic()
                try:
                    async with asyncio.timeout(10):
                        status, body = await exchange(reader, writer, request)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                    errors[e.__class__.__name__] = errors.get(e.__class__.__name__, 0) + 1
                    return  # the connection is in an unknown state: this client stops
                if status >= 400:
                    key = f"{status} {body[:120]!r}"
                    errors[key] = errors.get(key, 0) + 1
                latencies.append((time.monotonic() - t) * 1000)

        for reader, writer in conns:  # warm: statements prepared on the pool's connections
            status, body = await exchange(reader, writer, request)
            if status >= 400:
                raise RuntimeError(f"{kind}: {status} {body[:200]!r}")
        load_before = load_average()
        rest_pids = [s.devstack.proc.pid] if s.devstack is not None else []
        pg_pids = postgres_pids(home)
        rest_cpu, pg_cpu, own_cpu = cpu_s(rest_pids), cpu_s(pg_pids), cpu_s([os.getpid()])
        t0 = time.monotonic()
        end = t0 + seconds
        await asyncio.gather(*(client(r, w) for r, w in conns))
        wall = time.monotonic() - t0
        rest_cpu, pg_cpu = cpu_s(rest_pids) - rest_cpu, cpu_s(pg_pids) - pg_cpu
        own_cpu = cpu_s([os.getpid()]) - own_cpu
    finally:
        for _, writer in conns:
            writer.close()
    n = max(1, len(latencies))
    return {
        "kind": kind,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_ms": summary(latencies),
        "errors": errors,
        "concurrency": concurrency,
        # CPU per request: the devstack process (REST, with Realtime idle) and Postgres
        "devstack_cpu_ms_per_request": round(rest_cpu * 1000 / n, 3) if rest_pids else None,
        "postgres_cpu_ms_per_request": round(pg_cpu * 1000 / n, 3) if pg_pids else None,
        "client_cpu_ms_per_request": round(own_cpu * 1000 / n, 3),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


async def main(argv: list[str]) -> int:
    args = parse(argv)
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve()
    results = []
    async with stack(home, log_dir=home / "bench") as s:
        for kind in ("poll", "rpc"):
            r = await measure(s, home, kind, args.seconds, args.concurrency)
            results.append(r)
            lat = r["latency_ms"]
            print(
                f"{kind}: {r['requests_per_s']} requests/s at {r['concurrency']} concurrent "
                f"(p50 {lat['p50']} ms, p99 {lat['p99']} ms; {sum(r['errors'].values())} errors; "
                f"CPU per request: devstack {r['devstack_cpu_ms_per_request']} ms, Postgres "
                f"{r['postgres_cpu_ms_per_request']} ms, this client "
                f"{r['client_cpu_ms_per_request']} ms; "
                f"load average {r['load_average_before']} → {r['load_average_after']})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2))
    return 0


if __name__ == "__main__":
    from bench.__main__ import run_until_signalled

    sys.exit(asyncio.run(run_until_signalled(sys.argv[1:], main)))
