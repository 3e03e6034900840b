"""What the relay core is configured with: a small, frozen options object. The edge builds it
from the settings (`config.Settings.relay_options()`); the core never reads the environment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hitl_relay.errors import InvalidRequest
from hitl_relay.models import TIMEOUT_DEFAULT, TIMEOUT_MAX, TIMEOUT_MIN, Status

# The suggested task poll interval moves in these steps (a client sees a stable value while the
# number of live tasks changes by a few) and never beyond the ceiling (a minute: past it, a
# poll's delivery delay would outgrow what a chat agent waits for; more tasks need replicas).
POLL_INTERVAL_STEP_MS = 100
MAX_TASK_POLL_INTERVAL_MS = 60_000

DEFAULT_FALLBACKS = {
    "no_operator": (
        "I'm sorry, none of my colleagues is available right now. I've noted your question, "
        "and a colleague will see it as soon as one is available."
    ),
    "platform_unreachable": (
        "I'm sorry, I can't reach my colleagues at the moment, so I couldn't pass your "
        "question on. Please try again a little later."
    ),
    "timeout": (
        "My colleague hasn't answered yet. I've passed your question on and someone will get "
        "back to you with the answer."
    ),
    "unclear_answer": (
        "I'm sorry, I couldn't get a clear answer to that from my colleague. Someone will get "
        "back to you."
    ),
}


@dataclass(frozen=True, slots=True)
class Fallbacks:
    """The lines the caller hears instead of an answer, by fallback kind."""

    no_operator: str = DEFAULT_FALLBACKS["no_operator"]
    platform_unreachable: str = DEFAULT_FALLBACKS["platform_unreachable"]
    timeout: str = DEFAULT_FALLBACKS["timeout"]
    unclear_answer: str = DEFAULT_FALLBACKS["unclear_answer"]

    def line(self, status: Status) -> str:
        texts = {
            "no_operator": self.no_operator,
            "platform_unreachable": self.platform_unreachable,
            "timeout": self.timeout,
            "unclear_answer": self.unclear_answer,
        }
        return texts.get(status, self.timeout)


@dataclass(frozen=True, slots=True)
class RelayOptions:
    default_timeout_s: int = TIMEOUT_DEFAULT
    # The window a call may choose its time limit from (inside models.TIMEOUT_MIN/MAX).
    min_timeout_s: int = TIMEOUT_MIN
    max_timeout_s: int = TIMEOUT_MAX
    # How long one platform request (rpc, join, leave, close) may take.
    platform_timeout_s: float = 5.0
    # How often a waiting call reports progress.
    progress_interval_s: float = 5.0
    # How often the cases of the calls waiting (at least this long) are read in one batch, for
    # answers whose broadcast Realtime dropped (0: never).
    catch_up_interval_s: float = 5.0
    # With nobody present on `operators`: record the case and answer `no_operator` at once.
    no_operator_answers_at_once: bool = True
    # How long a case stays answerable (None: the platform's default).
    case_ttl_s: int | None = None
    # Every case's answer (or timeout) is also POSTed there, signed with the secret.
    callback_url: str | None = None
    webhook_secret: str | None = None
    # The poll interval MCP tasks suggest to their clients: at least this, longer when the polls
    # of the tasks this replica waits for would exceed `task_polls_per_second`.
    task_poll_interval_ms: int = 1000
    task_polls_per_second: float = 50.0
    fallbacks: Fallbacks = field(default_factory=Fallbacks)

    def task_poll_interval(self, live_tasks: int) -> int:
        """The `pollInterval` (ms) to suggest while this replica waits for `live_tasks` tasks.

        Every poll is a request through the relay's one process, so N tasks polled every I ms
        cost N * 1000 / I requests a second, and the handles of new tasks queue behind them.
        The interval grows with N so that the polls stay within `task_polls_per_second`; the
        cost is delivery (a poll sees a committed answer up to one interval later). Both eras
        let the server change it: 2025-11-25 "Requestors SHOULD respect this value", SEP-2663
        "Clients SHOULD honor this value ... MAY change over the lifetime of a task". Rounded
        up to whole `POLL_INTERVAL_STEP_MS`, at most `MAX_TASK_POLL_INTERVAL_MS`."""
        floor = self.task_poll_interval_ms
        if live_tasks <= 0:
            return floor
        needed = math.ceil(live_tasks * 1000 / self.task_polls_per_second)
        stepped = -(-needed // POLL_INTERVAL_STEP_MS) * POLL_INTERVAL_STEP_MS
        return max(floor, min(stepped, MAX_TASK_POLL_INTERVAL_MS))

    def time_limit(self, requested: int | None, default: int | None = None) -> int:
        """The call's time limit: `requested`, else `default` (the configured default), checked
        against the configured window; `InvalidRequest("timeout_seconds", ...)` outside it."""
        timeout = requested or default or self.default_timeout_s
        if not self.min_timeout_s <= timeout <= self.max_timeout_s:
            raise InvalidRequest(
                "timeout_seconds",
                f"must be between {self.min_timeout_s} and {self.max_timeout_s}",
            )
        return timeout
