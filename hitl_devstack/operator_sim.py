"""A simulated operator: what a person at the operators' console does, through the real clients.

It signs in with an operator access token, joins the private `operators` channel (presence, so
the relay sees somebody there), waits for `case_opened` broadcasts and answers each case after a
think time by inserting a human message through PostgREST (row-level security applies). Used by
the `scripts/dev` demo and the benchmark.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime import AsyncRealtimeChannel, RealtimeChannelOptions, RealtimeSubscribeStates
from supabase import AsyncClient, AsyncClientOptions, acreate_client

AnswerText = Callable[[dict[str, Any]], str]


@dataclass
class SentAnswer:
    case_id: str
    message_id: str
    content: str
    opened_seen_at: float  # monotonic: case_opened broadcast received
    sent_at: float  # monotonic: insert request sent
    committed_at: float  # monotonic: insert response received (the row is committed)


@dataclass
class SimulatedOperator:
    url: str
    anon_key: str
    access_token: str
    operator_id: str
    think_time_s: tuple[float, float] = (0.0, 0.0)
    answer_text: AnswerText = field(default=lambda case: f"Answer to: {case.get('question', '')}")
    auto_answer: bool = True
    answered: dict[str, SentAnswer] = field(default_factory=dict)
    opened: dict[str, float] = field(default_factory=dict)
    _client: AsyncClient | None = None
    _channel: AsyncRealtimeChannel | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _case_events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def start(self) -> None:
        options = AsyncClientOptions(headers={"Authorization": f"Bearer {self.access_token}"})
        self._client = await acreate_client(self.url, self.anon_key, options=options)
        await self._client.realtime.set_auth(self.access_token)
        channel_options: RealtimeChannelOptions = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": self.operator_id, "enabled": True},
                "private": True,
            }
        }
        channel = self._client.channel("operators", channel_options)
        channel.on_broadcast("case_opened", self._on_case_opened)
        joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
            if joined.done():
                return
            if state == RealtimeSubscribeStates.SUBSCRIBED:
                joined.set_result(None)
            else:
                joined.set_exception(RuntimeError(f"operators channel: {state} {error}"))

        await channel.subscribe(on_state)
        await asyncio.wait_for(joined, 10)
        await channel.track({"operator_id": self.operator_id, "status": "available"})
        self._channel = channel

    def _on_case_opened(self, message: Any) -> None:
        case = dict(message.get("payload") or {})
        case_id = str(case.get("case_id"))
        self.opened[case_id] = time.monotonic()
        self._case_events.put_nowait(case)
        if self.auto_answer:
            task = asyncio.get_running_loop().create_task(self._answer_later(case))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def next_case(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next `case_opened` payload this operator saw."""
        return await asyncio.wait_for(self._case_events.get(), timeout_s)

    async def _answer_later(self, case: dict[str, Any]) -> None:
        lo, hi = self.think_time_s
        if hi > 0:
            await asyncio.sleep(random.uniform(lo, hi))  # the operator thinking, not sync
        await self.answer(str(case["case_id"]), self.answer_text(case))

    async def answer(
        self, case_id: str, content: str, kind: str = "answer", option_index: int | None = None
    ) -> SentAnswer:
        assert self._client is not None, "start() first"
        sent = time.monotonic()
        row_in: dict[str, Any] = {
            "case_id": case_id,
            "sender_type": "human",
            "sender_id": self.operator_id,
            "content": content,
            "kind": kind,
        }
        if option_index is not None:
            row_in["option_index"] = option_index  # a one-tap answer; the text comes from SQL
        response = await self._client.table("messages").insert(row_in).execute()
        rows = response.data
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
            raise RuntimeError(f"insert into messages returned {rows!r}")
        row = rows[0]
        record = SentAnswer(
            case_id=case_id,
            message_id=str(row["id"]),
            content=content,
            opened_seen_at=self.opened.get(case_id, sent),
            sent_at=sent,
            committed_at=time.monotonic(),
        )
        self.answered[case_id] = record
        return record

    async def heartbeat(self) -> None:
        """Record availability as the console does (a claim needs a recent heartbeat)."""
        assert self._client is not None, "start() first"
        await self._client.rpc("hitl_operator_heartbeat", {"p_status": "available"}).execute()

    async def claim(self, case_id: str) -> bool:
        """Claim a case as the console does: one row update under RLS; False if someone else
        holds it (RLS filters the row out, nothing is updated)."""
        assert self._client is not None, "start() first"
        response = (
            await self._client.table("cases")
            .update({"claimed_by": self.operator_id})
            .eq("id", case_id)
            .execute()
        )
        return bool(response.data)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.realtime.close()
            self._client = None
