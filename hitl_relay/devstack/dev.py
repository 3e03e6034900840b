"""`hitl-relay dev`: the local stack, the relay and the console, with one demo escalation.

Starts (or reuses) the devstack and a relay as child processes, writes `.hitl/relay.env`
(`HITL_MCP_URL`, `HITL_API_KEY`) for local clients, runs one escalation the way production
runs it (an MCP client asks like a Retell agent; a simulated operator answers over Realtime and
REST) and prints the measured delivery time. Then it keeps serving until Ctrl-C, or exits
with `--once`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_TIMEOUT_S = 90.0


class DevError(RuntimeError):
    """Something the demo needs did not come up; the message says what and where the log is."""


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in values.items())


@dataclass
class Child:
    """A child process whose output goes to a log file; `ready` when a marker line appears."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path

    async def wait_for_line(self, marker: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        assert self.proc.stdout is not None
        with self.log_path.open("a") as log:
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        raw = await self.proc.stdout.readline()
                        if not raw:
                            raise DevError(
                                f"{self.name} exited (code {await self.proc.wait()}) before it "
                                f"was ready; see {self.log_path}"
                            )
                        line = raw.decode(errors="replace")
                        log.write(line)
                        log.flush()
                        if marker in line:
                            break
            except TimeoutError:
                raise DevError(
                    f"{self.name} was not ready after {timeout_s:.0f} s; see {self.log_path}"
                ) from None
        asyncio.get_running_loop().create_task(self._drain())
        return line

    async def _drain(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("a") as log:
            async for raw in self.proc.stdout:
                log.write(raw.decode(errors="replace"))
                log.flush()

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
    )
    return Child(name=name, proc=proc, log_path=log_path)


async def wait_http_ok(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll a readiness URL; a start-up probe, not test synchronisation."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise DevError(f"{url} did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


def python() -> str:
    return sys.executable
