"""The periodic catch-up read on the devstack: Realtime drops an answer's broadcast and tells no
client (here its payload is over the project's broadcast size limit, `UnableToBroadcastChanges:
:payload_size_exceeded`; on the Free plan the usual cause is its 100 messages/s), the answer is
committed all the same, and the relay finds it with its next batched read
(`hitl_case_replies`), about one `HITL_CATCH_UP_INTERVAL_SECONDS` after the call started
waiting, not at the call's deadline."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
from devstack_clients import Operator
from integration_support import FAST, ask_request, settings_for, wait_presence
from waiting import wait_until

from hitl_devstack.server import Devstack
from hitl_relay.adapters.supabase import build_platform
from hitl_relay.relay import Relay

INTERVAL_S = 1.0
DEADLINE_S = 60
# Over this, Realtime drops a broadcast; the case's other events stay well under it.
PAYLOAD_LIMIT_BYTES = 3000


async def waits(relay: Relay) -> bool:
    return len(relay.calls) == 1


async def test_an_answer_whose_broadcast_realtime_dropped_arrives_with_the_next_catch_up(
    devstack: Devstack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        devstack.url, devstack.keys.service_role_key, catch_up_interval_seconds=INTERVAL_S
    )
    platform = await build_platform(settings.platform_options(), tuning=FAST)
    answer = "Yes, Saturday works. " * 200  # about 4,200 bytes: its broadcast is dropped
    try:
        async with Operator(devstack) as operator:
            await operator.go_online()
            await wait_presence(platform.presence, lambda n: n == 1)
            relay = Relay(platform.backend(), settings.relay_options())
            request = ask_request(timeout_seconds=DEADLINE_S)
            async with relay.running():
                ask = asyncio.create_task(relay.ask(request))
                case_id = uuid.UUID(str((await operator.next_case_opened())["case_id"]))
                # Answered only once the call waits: an answer committed before the call's own
                # first read (right after its join) would be found by that read, not the
                # periodic one this test is about.
                await wait_until(lambda: waits(relay), "the call to wait on its channel")
                devstack.limits.max_payload_bytes = PAYLOAD_LIMIT_BYTES
                with caplog.at_level(logging.WARNING, logger="hitl_devstack.realtime"):
                    await operator.answer(case_id, answer)
                    committed = time.monotonic()
                    # Far sooner than the deadline, which is when it would come without the read.
                    result = await asyncio.wait_for(ask, DEADLINE_S / 4)
                delivered_s = time.monotonic() - committed
    finally:
        await platform.aclose()
    assert (result.status, result.answer, result.case_id) == (
        "answered",
        answer.strip(),
        str(case_id),
    )
    assert any("payload_size_exceeded" in r.getMessage() for r in caplog.records)
    assert relay.calls.caught_up == 1  # found by the catch-up read, not told by Realtime
    print(f"\ndelivered {delivered_s:.2f} s after the commit (catch-up every {INTERVAL_S} s)")
