"""The edge's service ports (`hitl_relay.service_ports`) over the case store's supabase-py client:
audit rows into `public.hil_audit`, the shared rate-limit counters (`hitl_rate_limit_hit` /
`_peek`) and the callback outbox (`hitl_callbacks_claim`, `hitl_callback_result`).

Every request goes through `SupabaseCaseStore.execute`: the same HTTP client, bound, in-flight
limit and error translation as the relay's own RPCs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from postgrest.types import ReturnMethod
from supabase import AsyncClient

from hitl_relay.adapters.supabase_store import SupabaseCaseStore
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.service_ports import CallbackOutcome, QueuedCallback, RateVerdict, WindowLimit


class SupabaseServices:
    """`AuditStore`, `RateLimitStore` and `CallbackOutbox` on one service-role client."""

    def __init__(self, client: AsyncClient, store: SupabaseCaseStore) -> None:
        self._client = client
        self._store = store

    async def insert_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            query = self._client.table("hil_audit").insert(
                [dict(r) for r in rows], returning=ReturnMethod.minimal
            )
            await self._store.execute("hil_audit", query)

    async def rate_limit(
        self, key: str, limits: Sequence[WindowLimit], *, hit: bool
    ) -> RateVerdict:
        fn = "hitl_rate_limit_hit" if hit else "hitl_rate_limit_peek"
        body = {
            "p_key": key,
            "p_limits": [{"limit": w.limit, "window_seconds": w.window_seconds} for w in limits],
        }
        data = await self._store.rpc(fn, body)
        if not isinstance(data, dict) or not isinstance(data.get("allowed"), bool):
            raise PlatformUnavailable(f"{fn}: unexpected reply {data!r:.200}")
        return RateVerdict(data["allowed"], float(data.get("retry_after") or 0.0))

    async def claim_callbacks(self, limit: int, lease_s: int) -> list[QueuedCallback]:
        data = await self._store.rpc(
            "hitl_callbacks_claim", {"p_limit": limit, "p_lease_seconds": lease_s}
        )
        if not isinstance(data, list):
            raise PlatformUnavailable(f"hitl_callbacks_claim: unexpected reply {data!r:.200}")
        return [_queued(item) for item in data if isinstance(item, dict)]

    async def callback_result(
        self,
        callback_id: int,
        outcome: CallbackOutcome,
        detail: Mapping[str, Any],
        retry_in_s: int,
    ) -> bool:
        data = await self._store.rpc(
            "hitl_callback_result",
            {
                "p_id": callback_id,
                "p_outcome": outcome,
                "p_detail": dict(detail),
                "p_retry_in_seconds": retry_in_s,
            },
        )
        return isinstance(data, dict) and data.get("changed") is True


def _queued(item: Mapping[str, Any]) -> QueuedCallback:
    url = item.get("callback_url")
    secret = item.get("webhook_secret")
    payload = item.get("payload")
    try:
        return QueuedCallback(
            id=int(item["id"]),
            case_id=str(item.get("case_id")),
            event=str(item.get("event")),
            attempts=int(item.get("attempts") or 1),
            callback_url=url if isinstance(url, str) else None,
            webhook_secret=secret if isinstance(secret, str) and secret else None,
            payload=payload if isinstance(payload, dict) else {},
        )
    except (KeyError, TypeError, ValueError):
        raise PlatformUnavailable(f"hitl_callbacks_claim: unexpected item {item!r:.200}") from None
