"""Presence state per topic, as Phoenix.Presence (Phoenix.Tracker) keeps it for Realtime.

Each tracking channel holds one meta under its presence key: the tracked payload plus a
`phx_ref`. `state()` is `Phoenix.Presence.group/1`'s `{key: {"metas": [...]}}`; `track`,
`update` and `untrack` return the diff every subscriber receives as `presence_diff`
(`{"joins": ..., "leaves": ...}`; an update is a join carrying `phx_ref_prev` plus a leave of
the old meta).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Hashable
from typing import Any

Meta = dict[str, Any]
Diff = dict[str, dict[str, dict[str, list[Meta]]]]


def new_ref() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()


def _entry(key: str, meta: Meta) -> dict[str, dict[str, list[Meta]]]:
    return {key: {"metas": [meta]}}


class TopicPresence:
    """Who is present on one topic: presence key → owner (a channel) → meta."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[Hashable, Meta]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def state(self) -> dict[str, dict[str, list[Meta]]]:
        return {key: {"metas": list(owners.values())} for key, owners in self._by_key.items()}

    def track(self, key: str, owner: Hashable, payload: Meta) -> Diff:
        """Track or update `owner` under `key`; returns the diff to broadcast."""
        owners = self._by_key.setdefault(key, {})
        old = owners.get(owner)
        meta: Meta = {**payload, "phx_ref": new_ref()}
        if old is None:
            owners[owner] = meta
            return {"joins": _entry(key, meta), "leaves": {}}
        meta["phx_ref_prev"] = old["phx_ref"]
        owners[owner] = meta
        return {"joins": _entry(key, meta), "leaves": _entry(key, old)}

    def untrack(self, key: str, owner: Hashable) -> Diff | None:
        owners = self._by_key.get(key)
        if owners is None or owner not in owners:
            return None
        old = owners.pop(owner)
        if not owners:
            del self._by_key[key]
        return {"joins": {}, "leaves": _entry(key, old)}
