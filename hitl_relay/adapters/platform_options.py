"""What the Supabase adapter connects with; the edge builds it from the settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlatformOptions:
    """What the adapter needs to connect (the edge builds it from the settings)."""

    url: str | None
    service_role_key: str | None
    # One platform request (rpc, join) may take this long before it counts as a failure.
    timeout_s: float = 5.0
    # This relay process's name, sent with every request (session recovery).
    instance_id: str = "relay"
    presence_cache_ttl_s: float = 0.5
    channels_per_socket: int = 100
    joins_per_second: float = 50.0
