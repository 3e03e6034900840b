"""With the platform down, the relay's log says so once per change of state, not once per
reconnect attempt: realtime-py's two ERROR lines per failed attempt pass once (then once a
minute with a count, hitl_relay.logs.RepeatFilter)."""

from __future__ import annotations

import re

from conftest import DevstackProcess, relay_child
from waiting import wait_until

ATTEMPTS = 6


async def test_a_realtime_outage_logs_each_library_error_once_not_per_attempt(
    devstack_proc: DevstackProcess,
) -> None:
    async with relay_child(devstack_proc, HITL_LOG_LEVEL="DEBUG") as relay:
        log = relay.child.log_path
        await devstack_proc.kill()  # Realtime and REST gone; the relay keeps reconnecting

        async def retried() -> bool:
            # The adapter's own line for each failed attempt (DEBUG after the first).
            return f"attempt {ATTEMPTS} again" in log.read_text()

        await wait_until(retried, f"{ATTEMPTS - 1} failed reconnect attempts", 60)
        lines = log.read_text().splitlines()
    library = [
        re.sub(r"\d+", "#", line.split("realtime._async.client:", 1)[1])
        for line in lines
        if "realtime._async.client:" in line
    ]
    print("\n".join(line for line in lines if "realtime" in line and "DEBUG" not in line))
    assert library, "realtime-py logged nothing: the outage was not seen"
    assert len(library) == len(set(library)), library
    assert sum("realtime socket disconnected" in line for line in lines) == 1
