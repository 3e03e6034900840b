"""Memory per waiting call: a relay on the memory twin served over HTTP, N blocking `ask_human`
calls waiting on it, and what the relay process holds for them (tracemalloc's snapshot diff,
grouped by line, and the collector-tracked objects by type, each per waiting call).

The callers are a child process (plain sockets, one POST each, then silence), so nothing the
callers allocate is counted.
Run: `python -m bench.memprobe --calls 1000 [--era handshake] [--top 25]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.waiting import wait_for
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend

KEY = "key-one-0123456789"

# The child: open `calls` connections, send one ask_human POST on each, then hold them until its
# stdin closes. A batch at a time, the next once the parent says the relay has taken the last
# (it answers "go"): the relay closes connections beyond its budget of connections that have
# not sent a whole request (security/http_limits.py). `era` "modern": the 2026 era's headers
# and per-request envelope (what `mcp.Client` sends by default), else the handshake era's.
CALLER = r"""
import json, socket, sys
host, port, calls, key, tag, era = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
held = []
extra = ""
meta = {}
if era == "modern":
    extra = "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: ask_human\r\n"
    meta = {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "memprobe", "version": "1"}}}
for i in range(calls):
    body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": "ask_human", "arguments": {"question": f"Can we deliver order {i}?",
        "session_id": f"s-{tag}{i}", "call_id": f"call-{tag}{i}", "agent_id": "agent-1",
        "timeoutSeconds": 600}, **meta}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection((host, port))
    s.sendall(head + body)
    held.append(s)
    if len(held) % 100 == 0 or i == calls - 1:
        print(len(held), flush=True)
        if sys.stdin.readline().strip() != "go":
            sys.exit("stopped")
print("sent", flush=True)
sys.stdin.read()
"""


def settings() -> Settings:
    # A burst of N callers from one address with one key: the per-address and per-key budgets
    # would refuse most of them.
    os.environ["HITL_RATE_LIMIT_PER_KEY"] = "100000/second"
    os.environ["HITL_RATE_LIMIT_PER_IP"] = "100000/second"
    values: dict[str, Any] = {"backend": "memory", "api_keys": KEY}
    return Settings(_env_file=None, **values)


def types_now() -> Counter[str]:
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def active_calls(relay_state: Any) -> int:
    return 0 if relay_state.relay is None else int(relay_state.relay.active_calls)


async def settle(relay_state: Any, calls: int, within_s: float = 120.0) -> None:
    await wait_for(
        lambda: active_calls(relay_state) >= calls,
        lambda: f"only {active_calls(relay_state)} of {calls} calls waiting",
        within_s,
    )


async def probe(calls: int, top: int, frames: int, era: str) -> dict[str, Any]:
    platform = MemoryPlatform()

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    app = create_app(settings(), backend=backend)
    state = app.state.relay_state
    async with running(app) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        # Warm up: one call through, so first-call imports and caches are not counted.
        await run_callers(host, int(port), 1, state, lambda: None, era)
        await wait_idle(state)
        gc.collect()
        tracemalloc.start(frames)
        idle_types = types_now()
        idle = tracemalloc.take_snapshot()
        report: dict[str, Any] = {}

        def measure() -> None:
            gc.collect()
            waiting = tracemalloc.take_snapshot()
            waiting_types = types_now()
            stats = waiting.compare_to(idle, "traceback" if frames > 1 else "lineno")
            grown = sum(s.size_diff for s in stats)
            report["calls"] = calls
            report["bytes_per_call"] = round(grown / calls, 1)
            report["objects_per_call"] = round(
                (sum(waiting_types.values()) - sum(idle_types.values())) / calls, 1
            )
            by_type = {k: (n - idle_types.get(k, 0)) / calls for k, n in waiting_types.items()}
            report["objects_by_type"] = {
                k: round(v, 2) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])[:top]
            }
            report["bytes_by_site"] = [
                {
                    "per_call": round(s.size_diff / calls, 1),
                    "blocks_per_call": round(s.count_diff / calls, 2),
                    "where": [f"{f.filename}:{f.lineno}" for f in s.traceback],
                }
                for s in stats[:top]
            ]

        await run_callers(host, int(port), calls, state, measure, era)
        tracemalloc.stop()
        await wait_idle(state)
    return report


async def run_callers(host: str, port: int, calls: int, state: Any, measure: Any, era: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CALLER, host, str(port), str(calls), KEY, f"n{calls}-", era,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        taken = 0 if state.relay is None else state.relay.active_calls
        while (line := (await child.stdout.readline()).strip()) != b"sent":
            if not line.isdigit():
                raise RuntimeError("the callers stopped")
            await settle(state, taken + int(line))
            child.stdin.write(b"go\n")
        measure()
    finally:
        child.stdin.close()  # the callers hang up: their calls are cancelled
        await child.wait()


async def wait_idle(state: Any, within_s: float = 60.0) -> None:
    await wait_for(
        lambda: active_calls(state) == 0,
        lambda: "the calls did not end after their callers hung up",
        within_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--era", choices=("modern", "handshake"), default="modern")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth per site")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(probe(args.calls, args.top, args.frames, args.era)), indent=1))


if __name__ == "__main__":
    main()
