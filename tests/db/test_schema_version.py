"""The relay's expected schema version, `public.hitl_schema_version()` and the newest migration
file agree: a migration author who adds a file must bump the function and the constant."""

from __future__ import annotations

import asyncpg

from hitl_relay import migrate
from hitl_relay.readiness import EXPECTED_SCHEMA_VERSION


async def test_constant_function_and_newest_migration_name_the_same_version(
    db: asyncpg.Connection,
) -> None:
    newest = migrate.migrations()[-1]
    found = await db.fetchval("select public.hitl_schema_version()")
    assert (EXPECTED_SCHEMA_VERSION, found) == (newest.version, newest.version), (
        f"the newest migration is {newest.path.name}: redefine public.hitl_schema_version() "
        "in it to return its version, and set hitl_relay.ports.EXPECTED_SCHEMA_VERSION"
    )


async def test_only_the_service_role_may_read_the_schema_version(db: asyncpg.Connection) -> None:
    allowed = {
        role: await db.fetchval(
            "select has_function_privilege($1, 'public.hitl_schema_version()', 'execute')", role
        )
        for role in ("service_role", "authenticated", "anon")
    }
    assert allowed == {"service_role": True, "authenticated": False, "anon": False}
