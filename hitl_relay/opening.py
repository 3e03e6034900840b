"""Opening one call's case: what the platform is asked (`OpenCase`, or `ContinueCase` for a
follow-up), and the bounded, retried open itself."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from functools import partial
from uuid import UUID

import anyio

from hitl_relay.calls import CallRecord
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.models import AskHumanRequest
from hitl_relay.observer import Observer
from hitl_relay.options import RelayOptions
from hitl_relay.ports import Clock, ContinueCase, OpenCase, OpenedCase
from hitl_relay.resilience import retry_until

# How long opening a case may be retried before the call falls back: a voice call cannot wait
# for an outage: it hears platform_unreachable within about a second.
OPEN_RETRY_BUDGET_S = 1.0


def owned_idempotency_key(owner: str | None, request: AskHumanRequest) -> str | None:
    """The idempotency key of a case opened for `owner`: the platform's default (call id +
    sha256 of the question) behind the owner, so a retry with the same API key joins its case
    and `CaseStore.owned` can tell whose it is. None without an owner (the platform's
    default)."""
    if owner is None:
        return None
    digest = hashlib.sha256(request.question.encode()).hexdigest()
    return f"{owner}:{request.call_id}:{digest}"


def open_request(
    request: AskHumanRequest,
    case_id: UUID,
    timeout_s: int,
    options: RelayOptions,
    owner: str | None,
) -> OpenCase:
    """A new case for `request`, under the id the relay made for it."""
    return OpenCase(
        case_id=case_id,
        question=request.question,
        context=request.context,
        mcp_session_id=request.session_id,
        retell_call_id=request.call_id,
        retell_agent_id=request.agent_id,
        caller_info=request.caller_info,
        priority=request.priority,
        urgency=request.urgency,
        conversation_history=[t.model_dump() for t in request.conversation_history],
        timeout_seconds=timeout_s,
        case_ttl_seconds=options.case_ttl_s,
        # The answer (or timeout) is also POSTed there, signed (hitl_relay.callbacks).
        callback_url=options.callback_url,
        webhook_secret=options.webhook_secret,
        idempotency_key=owned_idempotency_key(owner, request),
        options=request.options,
        skills=request.skills or (),
    )


def continue_request(request: AskHumanRequest, case_id: UUID, timeout_s: int) -> ContinueCase:
    """The caller's reply (`request.question`) into the case that asked back."""
    return ContinueCase(
        case_id=case_id,
        question=request.question,
        mcp_session_id=request.session_id,
        retell_call_id=request.call_id,
        retell_agent_id=request.agent_id,
        timeout_seconds=timeout_s,
    )


class Opener:
    """Opens cases: retried within `OPEN_RETRY_BUDGET_S` (and the call's deadline) while the
    platform is unavailable; records when the case was committed."""

    def __init__(self, clock: Clock, observer: Observer, options: RelayOptions) -> None:
        self.clock = clock
        self.observer = observer
        self.options = options

    async def open(
        self,
        open_fn: Callable[[], Awaitable[OpenedCase]],
        call: CallRecord,
        deadline: float,
        *,
        shielded: bool = True,
    ) -> OpenedCase:
        """`open_fn` (open, open for nobody on duty, or continue) with bounded retries.

        Shielded (and bounded) unless told otherwise: a client that goes away while the case is
        being committed must still learn its session, or no one closes it `cancelled`."""
        retried = partial(
            retry_until,
            open_fn,
            deadline=min(deadline, self.clock.monotonic() + OPEN_RETRY_BUDGET_S),
            retry_on=(PlatformUnavailable,),
            clock=self.clock.monotonic,
        )
        opened: OpenedCase | None = None
        if not shielded:
            opened = await retried()
        else:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + (
                    OPEN_RETRY_BUDGET_S + self.options.platform_timeout_s
                )
                opened = await retried()
        if opened is None:  # the shield's own bound ran out
            raise PlatformUnavailable("opening the case took too long")
        call.case_id = opened.case_id
        created = self.clock.monotonic() - call.started
        self.observer.case_created(created)
        call.create_ms = round(created * 1000)
        return opened
