"""The tools that read without waiting: `get_human_answer` (an earlier case's answer, if there is
one now) and `get_call_history` (the call's thread)."""

from __future__ import annotations

from uuid import UUID

from loguru import logger

from hitl_relay.calls import CallRecord, Results
from hitl_relay.errors import InvalidRequest, PlatformUnavailable
from hitl_relay.history import history_of, history_unavailable
from hitl_relay.models import AskResult, CallHistory
from hitl_relay.ports import CaseStore, Clarification, Clock
from hitl_relay.sweep import WaitingCalls


class Lookups:
    def __init__(
        self, store: CaseStore, clock: Clock, calls: WaitingCalls, results: Results
    ) -> None:
        self.store = store
        self.clock = clock
        self.calls = calls
        self.results = results

    async def get_answer(self, case_id: str, *, owner: str | None = None) -> AskResult:
        """The answer of an earlier case if there is one now (`pending` if not); never waits.

        Raises `InvalidRequest("case_id", ...)` for a malformed id or a case that does not
        exist (a `pending` there would have the agent ask again and again for nothing). With
        `owner` (an API key's fingerprint) only a case that key opened: any other case id is
        refused as `case_id: no such case`, exactly like an unknown one."""
        started = self.clock.monotonic()
        try:
            case_uuid = UUID(str(case_id))
        except ValueError:
            raise InvalidRequest("case_id", "must be a case id (a UUID)") from None
        call = CallRecord(started=started, call_id="", case_id=case_uuid)
        if self.calls.refusing:
            return self.results.fallback("platform_unreachable", call, case_id=case_uuid)
        try:
            await self.check_owner(case_uuid, owner, call)
            found = await self.store.reply(case_uuid)
            known = found is not None or await self.store.case_status(case_uuid) is not None
        except PlatformUnavailable as e:
            self.calls.record(call, failure=str(e))
            return self.results.fallback("platform_unreachable", call, case_id=case_uuid)
        if isinstance(found, Clarification):
            return self.results.needs_info(found, call)
        if found is None:
            if not known:
                raise InvalidRequest("case_id", "no such case")
            return self.results.pending(case_uuid, call)
        return self.results.from_answer(found, call)

    async def check_owner(self, case_id: UUID, owner: str | None, call: CallRecord) -> None:
        """Refuse a case another API key opened as if it did not exist (`owner` None: no keys,
        nothing to scope). Raises PlatformUnavailable when the platform cannot say."""
        if owner is None:
            return
        if not await self.store.owned(case_id, owner):
            self.calls.record(call, failure=None)  # the platform answered: it is reachable
            raise InvalidRequest("case_id", "no such case")

    async def call_history(self, call_id: str) -> CallHistory:
        """The call's thread: every question asked in this call, its exchanges and answer."""
        if self.calls.refusing:
            return history_unavailable(call_id)
        try:
            entries = await self.store.call_history(call_id)
        except PlatformUnavailable as e:
            call = CallRecord(started=self.clock.monotonic(), call_id=call_id)
            self.calls.record(call, failure=str(e))
            logger.bind(call_id=call_id).warning("reading the call history failed: {}", e.detail)
            return history_unavailable(call_id)
        return history_of(call_id, entries)
