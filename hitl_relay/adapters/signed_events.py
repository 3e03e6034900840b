"""Proof that a Realtime broadcast was sent by the database, not by a client.

Realtime delivers a client's broadcast on a private topic exactly like one the database sent
with `realtime.send` (supabase/realtime, `lib/realtime_web/channels/realtime_channel/
broadcast_handler.ex`, forwards any authorised client broadcast to every subscriber with the
client's payload as is).
So the triggers of migration 20261206100000_hitl_signed_events.sql add `sig` to every
`message`, `session` and `case_opened` payload: HMAC-SHA256 over a canonical string of the
event's fields, keyed with a secret only the database and the service role can read
(`public.hitl_event_key()`). This module builds the same canonical string and checks `sig`.

The canonical string is the event name, then for each signed field in order a line
`<field>=<n>:<text>` (`n` the number of characters of the field's text value, as
`payload ->> field` gives it: strings as is, booleans `true`/`false`, integers in decimal) or
`<field>=-` for a null or absent field, joined with newlines.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from typing import Any, Final

SIGNED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "message": (
        "id",
        "case_id",
        "sender_type",
        "sender_id",
        "content",
        "kind",
        "created_at",
        "is_answer",
        "option_index",
        "option",
    ),
    "session": ("session_id", "case_id", "status", "expires_at"),
    "case_opened": (
        "case_id",
        "priority",
        "urgency",
        "question",
        "title",
        "deadline_at",
        "expires_at",
        "retell_call_id",
        "source",
    ),
}


def _text(value: Any) -> str | None:
    """The text `payload ->> field` gives for a JSON scalar; None for null, and for values whose
    text only Postgres's JSON rendering defines (objects, arrays, non-integers: never signed)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"unsigned value type {type(value).__name__}")


def canonical(event: str, payload: Mapping[str, Any]) -> bytes:
    """The string the database signs for `event` (UTF-8)."""
    parts = [event]
    for name in SIGNED_FIELDS[event]:
        text = _text(payload.get(name))
        parts.append(f"{name}=-" if text is None else f"{name}={len(text)}:{text}")
    return "\n".join(parts).encode("utf-8")


def sign(key: bytes, event: str, payload: Mapping[str, Any]) -> str:
    """The `sig` the database would attach (tests and the devstack's checks use it)."""
    # hmac.digest: OpenSSL's one-shot HMAC, the same value as hmac.new(...).digest() without
    # building the two hash objects in Python (an answer's frame is checked on its hot path).
    return hmac.digest(key, canonical(event, payload), "sha256").hex()


def verify(key: bytes | None, event: str, payload: Mapping[str, Any]) -> bool:
    """True only when `payload["sig"]` is the database's signature of `payload` under `key`."""
    sig = payload.get("sig")
    if key is None or not isinstance(sig, str) or event not in SIGNED_FIELDS:
        return False
    try:
        expected = sign(key, event, payload)
    except TypeError:
        return False
    return hmac.compare_digest(expected, sig)


class EventKey:
    """The database's event key as the relay holds it: None until read (then every event is
    only a wake-up, which costs a read but loses nothing)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self._settled = asyncio.Event()
        if key is not None:
            self._settled.set()

    def set_hex(self, value: str) -> None:
        key = bytes.fromhex(value)
        if len(key) != 32:
            raise ValueError("the event key must be 32 bytes")
        self.key = key
        self._settled.set()

    def unavailable(self) -> None:
        """The relay stopped trying to read the key (no `hitl_event_key()` for this role):
        every event stays a wake-up."""
        self._settled.set()

    @property
    def settled(self) -> bool:
        return self._settled.is_set()

    async def wait_settled(self) -> None:
        """Until the key is read, or the relay stopped trying: from then on each event arrives
        as it will for good (as itself when the key is known; before, each is a wake-up)."""
        await self._settled.wait()

    def verify(self, event: str, payload: Mapping[str, Any]) -> bool:
        return verify(self.key, event, payload)
