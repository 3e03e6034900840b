"""Session recovery after a relay restart.

A relay process that dies takes its waiting MCP calls with it, but their sessions stay `waiting`
in `hil_sessions` until the cron job expires them. When the process starts again (same
`HITL_INSTANCE_ID`), `recover_sessions` closes the sessions it was waiting on: past their
deadline as `expired`, the rest as `cancelled` with {"reason": "relay restarted"}. The cases stay
open: operators still answer them, `get_human_answer(case_id)` returns the answer, and the
agent's retried `ask_human` (same call and question) re-opens its session on the same case.

The app's lifespan runs `recover_on_start` before it serves requests, so a retried call never
races the recovery. A platform that is down at start does not keep the relay from starting: the
recovery then keeps trying in the background (`retry_in_background`), but only until this
process takes its first call: after that, a recovery would close that call's live session
too (it waits under the same instance id), so the old sessions are left to the expiry job.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import stamina
from loguru import logger

from hitl_relay import metrics
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import CaseStore, RecoveredSessions, SessionRecovery

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


async def recover_sessions(store: SessionRecovery, instance_id: str) -> RecoveredSessions:
    """Close this instance's sessions left `waiting` by its previous process; log and count."""
    recovered = await store.recover_sessions(instance_id)
    metrics.recovered_sessions.labels(status="expired").inc(recovered.expired)
    metrics.recovered_sessions.labels(status="cancelled").inc(recovered.cancelled)
    logger.bind(instance_id=instance_id).info(
        "session recovery: {} expired, {} cancelled (relay restarted)",
        recovered.expired,
        recovered.cancelled,
    )
    return recovered


async def recover_on_start(
    store: CaseStore, instance_id: str, timeout_s: float
) -> RecoveredSessions | None:
    """One bounded attempt at start. None: the store has no recovery, or the platform did not
    answer in time (then call `retry_in_background`)."""
    if not isinstance(store, SessionRecovery):
        logger.debug("session recovery: the store does not support it")
        return None
    try:
        with anyio.fail_after(timeout_s):
            return await recover_sessions(store, instance_id)
    except (PlatformUnavailable, TimeoutError) as e:
        logger.bind(instance_id=instance_id).warning(
            "session recovery postponed, the platform is unavailable: {}", e
        )
        return None


async def retry_in_background(
    store: SessionRecovery,
    instance_id: str,
    *,
    calls_taken: Callable[[], int] = lambda: 0,
    first_backoff_s: float = RETRY_FIRST_S,
    max_backoff_s: float = RETRY_MAX_S,
) -> RecoveredSessions | None:
    """Try again with exponential backoff until the platform answers (run in the app's task
    group; cancelled with it). Gives up (None) once `calls_taken()` is not 0: this process's own
    sessions would be closed with the old ones."""
    log = logger.bind(instance_id=instance_id)
    await anyio.sleep(first_backoff_s)  # the try at start has just failed
    async for attempt in stamina.retry_context(
        on=PlatformUnavailable,
        attempts=None,
        timeout=None,
        wait_initial=min(max_backoff_s, first_backoff_s * 2),
        wait_max=max_backoff_s,
        wait_jitter=0.0,
    ):
        with attempt:
            if calls_taken():
                log.warning(
                    "session recovery abandoned: this relay is serving calls now; the sessions "
                    "its previous process left waiting expire by the expiry job"
                )
                return None
            try:
                return await recover_sessions(store, instance_id)
            except PlatformUnavailable as e:
                log.warning(
                    "session recovery failed again, retrying in {} s: {}", attempt.next_wait, e
                )
                raise
    raise AssertionError("unreachable: the retries are unbounded")  # pragma: no cover
