"""Escalation: cases that wait too long are escalated and announced.

The rules live in SQL (`hitl_escalate`, supabase/migrations/20261206500000_...): a case left
unclaimed past its priority's threshold, or claimed and unanswered close to its caller's
deadline, gets priority + 1, a console alert and a notification in the outbox. pg_cron runs it
every minute, its finest schedule (Debian's pg_cron 1.4 has no second-level schedules); the
relay's `Escalator` calls it every `interval_s` (5 s by default), so a voice call's 45 s
deadline is not outlived by a minute-long cron tick. Every replica may run it: locked rows are
skipped.

The `Escalator` then sends the outbox through the configured `Notifier`s (ports: a
Slack-compatible webhook and e-mail, in `hitl_relay.adapters.notify`), each retried with
backoff and jitter within `retry_budget_s`, and marks the notification sent or failed (a failed
one is taken again at the next round, at most 10 times). It runs in its own task: an ask never
waits for it, and a notification receiver that is down only delays notifications.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import stamina
from loguru import logger

from hitl_relay.errors import DeliveryFailed, InvalidRequest, PlatformUnavailable
from hitl_relay.ports import Clock, EscalationStore, Notification, Notifier


class Escalator:
    """Runs `hitl_escalate` every `interval_s` and delivers its notifications."""

    def __init__(
        self,
        store: EscalationStore,
        notifiers: Sequence[Notifier],
        clock: Clock,
        *,
        interval_s: float,
        timeout_s: float,
        retry_budget_s: float = 10.0,
        retry_attempts: int = 4,
        batch: int = 20,
    ) -> None:
        self._store = store
        self._notifiers = list(notifiers)
        self._clock = clock
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._retry_budget_s = retry_budget_s
        self._retry_attempts = retry_attempts
        self._batch = batch
        self._failing = False
        self.escalated = 0  # cases escalated by this relay, for tests and the log
        self.delivered = 0  # notifications delivered on every channel
        self.failed = 0  # notifications left failed for a later round

    async def run(self) -> None:
        """Until cancelled: one round every `interval_s`."""
        while True:
            await self.run_once()
            await self._clock.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Escalate once and deliver what is pending; the number of cases escalated."""
        try:
            with anyio.fail_after(self._timeout_s):
                escalated = await self._store.escalate()
                pending = await self._store.pending_notifications(self._batch)
        except (PlatformUnavailable, InvalidRequest, TimeoutError) as e:
            if not self._failing:
                self._failing = True
                logger.warning("escalation round failed: {}", str(e) or "no reply in time")
            return 0
        self._failing = False
        if escalated:
            self.escalated += escalated
            logger.bind(escalated=escalated).info("escalated {} waiting case(s)", escalated)
        async with anyio.create_task_group() as tg:
            for notification in pending:
                tg.start_soon(self._deliver, notification)
        return escalated

    async def _deliver(self, notification: Notification) -> None:
        errors = []
        for notifier in self._notifiers:
            try:
                await self._send_with_retries(notifier, notification)
            except DeliveryFailed as e:
                errors.append(f"{notifier.name}: {e.detail}")
        error = "; ".join(errors) or None
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            logger.bind(case_id=str(notification.case_id), attempt=notification.attempts).warning(
                "escalation notification not delivered: {}", error
            )
        try:
            with anyio.fail_after(self._timeout_s):
                await self._store.notification_done(notification.id, error)
        except (PlatformUnavailable, TimeoutError) as e:
            logger.warning("marking a notification failed: {}", str(e) or "no reply in time")

    async def _send_with_retries(self, notifier: Notifier, notification: Notification) -> None:
        def retryable(e: Exception) -> bool:
            return isinstance(e, DeliveryFailed) and e.retryable

        async for attempt in stamina.retry_context(
            on=retryable,
            attempts=self._retry_attempts,
            timeout=self._retry_budget_s,
            wait_initial=0.1,
            wait_max=2.0,
        ):
            with attempt:
                await notifier.send(notification)
