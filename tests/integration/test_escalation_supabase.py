"""Escalation through the Supabase store on the devstack: the relay's Escalator runs
`hitl_escalate` by RPC, takes the outbox and marks each notification sent or failed."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from integration_support import open_request, platform_on

from hitl_devstack.server import Devstack
from hitl_relay.clock import SystemClock
from hitl_relay.errors import DeliveryFailed
from hitl_relay.escalation import Escalator
from hitl_relay.ports import Notification


@dataclass
class Recorder:
    """A notification channel that records what it was given (fails while `down`)."""

    name: str = "recorder"
    down: bool = False
    sent: list[Notification] = field(default_factory=list)

    async def send(self, notification: Notification) -> None:
        if self.down:
            raise DeliveryFailed("receiver down", retryable=False)
        self.sent.append(notification)


async def test_the_escalator_escalates_by_rpc_and_marks_the_outbox(devstack: Devstack) -> None:
    async with platform_on(
        devstack.url, devstack.keys.service_role_key, presence=False
    ) as platform:
        request = open_request(priority=2, options=["yes", "no"])
        await platform.store.open_case(request)
        conn = await asyncpg.connect(devstack.db_url)
        try:
            await conn.execute(
                "update cases set created_at = now() - interval '1 minute' where id = $1",
                request.case_id,
            )
            channel = Recorder(down=True)
            escalator = Escalator(
                platform.store, [channel], SystemClock(), interval_s=5, timeout_s=5
            )
            assert await escalator.run_once() >= 1
            row = await conn.fetchrow(
                "select n.sent_at, n.last_error, n.attempts, c.priority, c.escalation_level"
                " from hil_notifications n join cases c on c.id = n.case_id where c.id = $1",
                request.case_id,
            )
            assert (row["sent_at"], row["attempts"], row["priority"], row["escalation_level"]) == (
                None,
                1,
                3,
                1,
            )
            assert row["last_error"] == "recorder: receiver down"
            channel.down = False
            await escalator.run_once()
            assert [n.case_id for n in channel.sent if n.case_id == request.case_id] == [
                request.case_id
            ]
            mine = next(n for n in channel.sent if n.case_id == request.case_id)
            assert (mine.reason, mine.payload["priority"], mine.attempts) == ("unclaimed", 3, 2)
            sent_at = await conn.fetchval(
                "select sent_at from hil_notifications where case_id = $1", request.case_id
            )
            assert sent_at is not None
        finally:
            await conn.close()
