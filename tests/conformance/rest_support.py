"""Shared pieces of the REST conformance tests: unmodified supabase-py clients, one per role.

supabase-py 2.34.1 itself warns (DeprecationWarning, `timeout`/`verify` passed to its own postgrest
client) whenever it builds a client without a custom httpx client; the tests use the client
exactly as shipped, so those warnings are ignored by the modules that import this.
"""

from __future__ import annotations

import uuid
from typing import Any

from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_devstack.server import Devstack

SUPABASE_TIMEOUT_WARNING = (
    r"ignore:The '\w+' parameter is deprecated. Please configure it in the http client"
    ":DeprecationWarning"
)


class Clients:
    """supabase-py clients against one devstack; `close()` releases their connections."""

    def __init__(self, devstack: Devstack) -> None:
        self.devstack = devstack
        self._made: list[AsyncClient] = []

    async def service(self) -> AsyncClient:
        return await self._make(self.devstack.keys.service_role_key)

    async def anon(self) -> AsyncClient:
        return await self._make(self.devstack.keys.anon_key)

    async def user(self, token: str) -> AsyncClient:
        """A signed-in user: the anon key as apikey, the user's access token as bearer."""
        return await self._make(self.devstack.keys.anon_key, token)

    async def operator(self, user_id: str | None = None) -> AsyncClient:
        token = self.devstack.keys.user_token(user_id or str(uuid.uuid4()), operator=True)
        return await self.user(token)

    async def _make(self, key: str, token: str | None = None) -> AsyncClient:
        options = AsyncClientOptions(headers={"Authorization": f"Bearer {token}"} if token else {})
        client = await acreate_client(self.devstack.url, key, options=options)
        self._made.append(client)
        return client

    async def close(self) -> None:
        for client in self._made:
            await client.postgrest.aclose()


def case_input(**overrides: Any) -> dict[str, Any]:
    """A valid `hitl_open_case` argument, as the relay sends it."""
    call = f"call_{uuid.uuid4().hex[:12]}"
    p: dict[str, Any] = {
        "case_id": str(uuid.uuid4()),
        "question": "Can we waive the late fee for order 1182?",
        "context": "Caller is a long-time customer.",
        "mcp_session_id": f"mcp_{uuid.uuid4().hex[:12]}",
        "retell_call_id": call,
        "retell_agent_id": "agent_demo",
        "caller_info": {"name": "Ada"},
        "priority": 3,
        "urgency": "high",
        "conversation_history": [{"role": "user", "content": "Hello"}],
        "timeout_seconds": 45,
    }
    p.update(overrides)
    return p
