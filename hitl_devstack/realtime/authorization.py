"""Private-channel authorisation through the `realtime.messages` RLS policies.

As supabase/realtime `lib/realtime/tenants/authorization.ex` does it, in a transaction that is
always rolled back, with `role`, `realtime.topic`, `request.jwt.claims`,
`request.jwt.claim.sub`, `request.jwt.claim.role` and `request.headers` set locally:

- read (`get_read_policies_for_connection`): probe rows `(topic, extension)` are inserted by the
  admin connection, then selected under the token's role; a visible row means read = true;
- write (`get_write_policies_for_connection`): a row is inserted under the token's role in a
  savepoint; success means write = true, SQLSTATE 42501 (RLS violation) false.

Any other database error is an RLS policy error (`handle_policies_result`), which Realtime turns
into "Unauthorized" at join.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

# The roles Realtime's admin connection may switch to (supabase_realtime_admin is granted these).
API_ROLES = frozenset({"anon", "authenticated", "service_role"})


class RlsPolicyError(Exception):
    """A policy raised, or the token's role cannot be assumed."""


class DatabaseUnavailable(Exception):
    """The project database did not answer ("Realtime was unable to connect to the project
    database")."""


# Connection-level failures, as opposed to an error raised by a policy.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
# Either, or an error from a statement.
DB_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


@dataclass(slots=True)
class Policies:
    """Realtime.Tenants.Authorization.Policies: None means not evaluated yet."""

    broadcast_read: bool | None = None
    broadcast_write: bool | None = None
    presence_read: bool | None = None
    presence_write: bool | None = None


@dataclass(frozen=True, slots=True)
class AuthContext:
    topic: str  # the sub-topic, as `realtime.topic()` returns it
    claims: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return str(self.claims.get("role") or "")


def _extensions(presence_enabled: bool) -> tuple[str, ...]:
    return ("broadcast", "presence") if presence_enabled else ("broadcast",)


async def _set_config(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, ctx: AuthContext
) -> None:
    sub = ctx.claims.get("sub")
    await conn.execute(
        "select set_config('role', $1, true), set_config('realtime.topic', $2, true),"
        " set_config('request.jwt.claims', $3, true),"
        " set_config('request.jwt.claim.sub', $4, true),"
        " set_config('request.jwt.claim.role', $1, true),"
        " set_config('request.headers', $5, true)",
        ctx.role,
        ctx.topic,
        json.dumps(dict(ctx.claims)),
        "" if sub is None else str(sub),
        json.dumps(dict(ctx.headers)),
    )


def _check_role(ctx: AuthContext) -> None:
    if ctx.role not in API_ROLES:
        raise RlsPolicyError(f"role {ctx.role!r} cannot be assumed by Realtime")


_Evaluation = Callable[[asyncpg.Pool, AuthContext, Policies, tuple[str, ...]], Awaitable[Policies]]


async def _evaluate(
    evaluation: _Evaluation,
    pool: asyncpg.Pool,
    ctx: AuthContext,
    policies: Policies,
    presence_enabled: bool,
) -> Policies:
    """Run one evaluation for the extensions in play; a lost database is DatabaseUnavailable."""
    _check_role(ctx)
    try:
        return await evaluation(pool, ctx, policies, _extensions(presence_enabled))
    except CONNECTION_ERRORS as e:
        raise DatabaseUnavailable(str(e)) from e


async def read_policies(
    pool: asyncpg.Pool, ctx: AuthContext, policies: Policies, *, presence_enabled: bool
) -> Policies:
    """Evaluate read for broadcast (and presence when enabled) into `policies`."""
    return await _evaluate(_read, pool, ctx, policies, presence_enabled)


@contextlib.asynccontextmanager
async def _rolled_back(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
    """A connection in a transaction that is always rolled back (the checks write probe rows);
    a database error other than a lost connection is the policy's (RlsPolicyError)."""
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            yield conn
        except CONNECTION_ERRORS:
            raise
        except asyncpg.PostgresError as e:
            raise RlsPolicyError(f"{type(e).__name__}: {e}") from e
        finally:
            await tr.rollback()


async def _read(
    pool: asyncpg.Pool, ctx: AuthContext, policies: Policies, exts: tuple[str, ...]
) -> Policies:
    async with _rolled_back(pool) as conn:
        rows = await conn.fetch(
            "insert into realtime.messages (topic, extension)"
            " select $1, e from unnest($2::text[]) as e returning id, extension",
            ctx.topic,
            list(exts),
        )
        await _set_config(conn, ctx)
        visible = {
            r["id"]
            for r in await conn.fetch(
                "select id from realtime.messages where id = any($1::uuid[])",
                [r["id"] for r in rows],
            )
        }
    for r in rows:
        setattr(policies, f"{r['extension']}_read", r["id"] in visible)
    return policies


async def write_policies(
    pool: asyncpg.Pool, ctx: AuthContext, policies: Policies, *, presence_enabled: bool = True
) -> Policies:
    """Evaluate write for broadcast (and presence when enabled) into `policies`."""
    return await _evaluate(_write, pool, ctx, policies, presence_enabled)


async def _write(
    pool: asyncpg.Pool, ctx: AuthContext, policies: Policies, exts: tuple[str, ...]
) -> Policies:
    async with _rolled_back(pool) as conn:
        await _set_config(conn, ctx)
        for ext in exts:
            savepoint = conn.transaction()
            await savepoint.start()
            try:
                await conn.execute(
                    "insert into realtime.messages (topic, extension) values ($1, $2)",
                    ctx.topic,
                    ext,
                )
                allowed = True
            except asyncpg.InsufficientPrivilegeError:
                allowed = False
            finally:
                await savepoint.rollback()
            setattr(policies, f"{ext}_write", allowed)
    return policies
