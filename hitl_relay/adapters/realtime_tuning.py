"""What the Realtime socket pool, its sockets and channels share: the tuning, the join refusals
the platform sends, what a channel tells its listeners, and the change signal waiters wait on."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import websockets
from realtime import (
    RealtimeChannelOptions,
)

from hitl_relay.ports import (
    ChannelEvent,
)

# What websockets / realtime-py raise when a connection attempt fails (refused, handshake
# refused with a status such as 401 or 429, TLS, DNS, our own timeout).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    websockets.exceptions.WebSocketException,
)

# Join refusals that retrying cannot cure (realtime_channel.ex reason codes, and the texts of
# a `system` error that precedes the server closing a channel).
PERMANENT_REFUSALS = (
    "Unauthorized",
    "InvalidJWTToken",
    "MalformedJWT",
    "JwtSignatureError",
    "PrivateOnly",
    "TopicNameRequired",
    "You no longer have permission",
    "Token has expired",
)

# Join refusals for a project-wide rate (realtime_channel.ex join/3); realtime-py waits 30 s after
# them (channel.py RATE_LIMIT_ERROR_CODES), the pool only `rate_limited_rejoin_s`.
RATE_LIMIT_REFUSALS = (
    "ClientJoinRateLimitReached",
    "ConnectionRateLimitReached",
    "DatabaseConnectionRateLimitReached",
)


@dataclass(frozen=True)
class RealtimeTuning:
    """How the socket pool behaves; the defaults suit production (voice calls of 30-60 s)."""

    channels_per_socket: int = 100
    # From asking to join until the server confirmed (includes waiting for the socket).
    join_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    # Reconnect backoff: doubling from the first to the cap, each delay jittered over its
    # upper half, so replicas that lost the platform together do not return in lockstep.
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 2.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 5.0
    idle_close_s: float = 30.0
    # After the server confirmed a leave, its phx_close for that join may still be in flight.
    rejoin_grace_s: float = 1.0
    # A connection must stay up this long before a drop counts as a fresh start: a socket the
    # server keeps closing right after its rejoins (rate limits) backs off instead of looping.
    stable_after_s: float = 10.0
    # A socket that has been failing to connect for this long fails new joins at once (a call
    # must not wait out the join timeout while the platform is down); shorter blips are waited
    # out.
    fail_joins_after_down_s: float = 1.0
    # Joins sent per second at most, all sockets together (the project's limit is shared with
    # every other client: the operators' app, other relay replicas). Half of Free's 100.
    joins_per_second: float = 50.0
    # After a join refused for the project's rate: no join for about this long (jittered over
    # its upper half), then the refused channel rejoins. Realtime re-evaluates its rate every
    # 5 s (Tenants.joins_per_second_rate tick).
    rate_limited_rejoin_s: float = 5.0

    def reconnect_delay(self, attempt: int) -> float:
        """The pause before reconnect attempt `attempt` (1, 2, ...) after a failed one."""
        ceiling = min(self.reconnect_max_s, self.reconnect_initial_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)


class Listener(Protocol):
    """What a channel tells the subscriptions attached to it (called on the event loop)."""

    def on_event(self, event: ChannelEvent) -> None: ...

    def on_interrupted(self) -> None: ...

    def on_lost(self, reason: str) -> None: ...

    def on_presence_sync(self) -> None: ...


ChannelKind = Literal["case", "presence"]


def channel_options(kind: ChannelKind) -> RealtimeChannelOptions:
    # The service role reads every private topic (RLS bypassed); presence is enabled on
    # `operators` to receive presence_state / presence_diff, never to track the relay itself.
    return {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": "", "enabled": kind == "presence"},
            "private": True,
        }
    }


def refusal_reason(error: Exception | None) -> str | None:
    """The server's reason when `error` is a refused join or a channel `system` error.

    realtime-py reports those as `Exception(json.dumps(payload))`; a transport problem comes
    as the websockets exception instead (and is never a refusal).
    """
    if error is None or type(error) is not Exception:
        return None
    try:
        payload = json.loads(str(error))
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    reason = payload.get("reason", payload.get("message"))
    return reason if isinstance(reason, str) else None


class Changed:
    """An edge-triggered 'something changed' for waiters (each change wakes every waiter)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def wait(self) -> Coroutine[Any, Any, Literal[True]]:
        """Wait for the next change after this call (bound now, so none is missed)."""
        return self._event.wait()
