"""scripts/bench rest: how many requests a second the devstack's REST stand-in serves.

The polling baseline's figures are only fair if its REST server is not the bottleneck, so this
measures that server alone: `--concurrency` clients each send one request after another for
`--seconds`, the same request the polling baseline sends (`GET /rest/v1/messages?case_id=eq...`
with the service-role key, row-level security applying) and an RPC (`hitl_case_reply`, what the
relay's catch-up read calls). Reported: requests per second, latency p50/p99 and the load
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

import httpx

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


async def measure(s: Stack, kind: str, seconds: float, concurrency: int) -> dict[str, Any]:
    case_id = str(uuid.uuid4())  # no such case: the read is the same work, answered empty
    headers = {"apikey": s.service_key, "Authorization": f"Bearer {s.service_key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(
        base_url=s.url, headers=headers, limits=limits, timeout=10
    ) as http:

        async def one() -> None:
            if kind == "poll":
                r = await http.get(
                    "/rest/v1/messages",
                    params={
                        "select": "content,created_at",
                        "case_id": f"eq.{case_id}",
                        "sender_type": "eq.human",
                        "order": "created_at.asc",
                        "limit": "1",
                    },
                )
            else:
                r = await http.post("/rest/v1/rpc/hitl_case_reply", json={"p_case_id": case_id})
            if r.status_code >= 400:
                key = f"{r.status_code} {r.text[:120]}"
                errors[key] = errors.get(key, 0) + 1

        async def client(end: float) -> None:
            while time.monotonic() < end:
                t = time.monotonic()
                try:
                    await one()
                except httpx.HTTPError as e:
                    key = e.__class__.__name__
                    errors[key] = errors.get(key, 0) + 1
                latencies.append((time.monotonic() - t) * 1000)

        for _ in range(concurrency):  # warm: connections open, statements prepared
            await one()
        load_before = load_average()
        t0 = time.monotonic()
        await asyncio.gather(*(client(t0 + seconds) for _ in range(concurrency)))
        wall = time.monotonic() - t0
    return {
        "kind": kind,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_ms": summary(latencies),
        "errors": errors,
        "concurrency": concurrency,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


async def main(argv: list[str]) -> int:
    args = parse(argv)
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve()
    results = []
    async with stack(home, log_dir=home / "bench") as s:
        for kind in ("poll", "rpc"):
            r = await measure(s, kind, args.seconds, args.concurrency)
            results.append(r)
            lat = r["latency_ms"]
            print(
                f"{kind}: {r['requests_per_s']} requests/s at {r['concurrency']} concurrent "
                f"(p50 {lat['p50']} ms, p99 {lat['p99']} ms; {sum(r['errors'].values())} errors; "
                f"load average {r['load_average_before']} → {r['load_average_after']})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2))
    return 0


if __name__ == "__main__":
    from bench.__main__ import run_until_signalled

    sys.exit(asyncio.run(run_until_signalled(sys.argv[1:], main)))
