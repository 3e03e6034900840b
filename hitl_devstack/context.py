"""What the devstack's services share: the context they are built with (`DevstackContext`) and
the users Auth signs in (`LocalUser`). A leaf: the services import it, it imports none of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from hitl_devstack.keys import OPERATOR_ROLE_CLAIM, LocalKeys

if TYPE_CHECKING:
    from hitl_devstack.realtime.limits import RealtimeLimits


@dataclass(frozen=True)
class LocalUser:
    """A user the devstack can sign in; `operator` sets `app_metadata.hitl_role`."""

    email: str
    password: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    operator: bool = True
    created_at: str = field(default_factory=lambda: iso_utc(time.time()))

    def app_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"provider": "email", "providers": ["email"]}
        if self.operator:
            meta[OPERATOR_ROLE_CLAIM] = "operator"
        return meta

    def as_json(self, signed_in_at: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": self.email,
            "email_confirmed_at": self.created_at,
            "phone": "",
            "confirmed_at": self.created_at,
            "last_sign_in_at": signed_in_at or self.created_at,
            "app_metadata": self.app_metadata(),
            "user_metadata": {},
            "identities": [],
            "created_at": self.created_at,
            "updated_at": signed_in_at or self.created_at,
            "is_anonymous": False,
        }


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class DevstackContext:
    """What every devstack service shares: the database pool, the keys, the limits."""

    pool: asyncpg.Pool
    keys: LocalKeys
    db_url: str
    limits: RealtimeLimits | None = None  # None: Supabase's defaults (or HITL_REALTIME_* env)
    users: Sequence[LocalUser] = ()  # who may sign in through /auth/v1
