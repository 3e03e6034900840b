"""Running one request's statement: the role prelude and the statement in one transaction, in one
round trip to the database, under the role of the request's JWT."""

from __future__ import annotations

import json

import asyncpg
from starlette.requests import Request

from hitl_devstack.rest.errors import PgrstError
from hitl_devstack.rest.responses import Outcome
from hitl_devstack.rest.settings import API_ROLES, SEARCH_PATH
from hitl_devstack.rest.tokens import Auth

# One request, one round trip: PostgREST runs a request as one transaction of a `select
# set_config('role', ...), set_config('request.jwt.claims', ...), ...` statement and the main
# statement (PostgREST src/PostgREST/Query/PreQuery.hs txVarQuery, MainTx.hs), sent over a
# pipelining connection. asyncpg sends one statement per round trip (BEGIN, the settings, the
# statement and COMMIT were four), so the stand-in does the same steps inside one function call,
# whose implicit transaction is the request's: the settings (transaction-local, as PostgREST's),
# then the statement through EXECUTE, planned after the role switch so that grants and
# row-level security are the request role's. The function lives in each pool connection's
# pg_temp (made when the connection opens: `prepare_connection`), never in a schema the
# migrations or the API see.
SINGLE_SQLSTATE = "PGSGL"  # singular response with other than one row: rolled back, as PostgREST
REQUEST_FUNCTION = f"""
create or replace function pg_temp.devstack_request(
  p_role text, p_claims text, p_sub text, p_method text, p_path text, p_headers text,
  p_search_path text, p_readonly boolean, p_single boolean, p_sql text, p_args text[],
  out body text, out rows bigint, out total bigint, out found_row boolean)
language plpgsql as $fn$
begin
  if p_readonly then
    -- going read-only is allowed at any point of a transaction (only the reverse is not)
    perform set_config('transaction_read_only', 'on', true);
  end if;
  perform set_config('role', p_role, true),
    set_config('request.jwt.claims', p_claims, true),
    set_config('request.jwt.claim.sub', p_sub, true),
    set_config('request.jwt.claim.role', p_role, true),
    set_config('request.method', p_method, true),
    set_config('request.path', p_path, true),
    set_config('request.headers', p_headers, true),
    set_config('request.cookies', '{{}}', true),
    set_config('search_path', p_search_path, true);
  execute p_sql into body, rows, total using p_args;
  found_row := found;
  if p_single and coalesce(rows, 0) <> 1 then
    raise exception using errcode = '{SINGLE_SQLSTATE}', message = coalesce(rows, 0)::text;
  end if;
end
$fn$
"""
REQUEST_CALL = (
    "select body, rows, total, found_row"
    " from pg_temp.devstack_request($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """A new pool connection gets the request function (see REQUEST_FUNCTION)."""
    await conn.execute(REQUEST_FUNCTION)


class Single(Exception):
    """Accept: application/vnd.pgrst.object+json and not exactly one row (rolls back)."""

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows


class Statements:
    """Runs statements on the pool, each as one request of one role."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def run(
        self,
        request: Request,
        auth: Auth,
        statement: tuple[str, list[str]],
        *,
        readonly: bool,
        single: bool,
        unqualified: str | None = None,
    ) -> Outcome:
        """Run the role prelude and the statement in one transaction, in one round trip to the
        database (REQUEST_FUNCTION); its result (json text, row count, total) is the outcome.

        `unqualified` names a DELETE/UPDATE without a WHERE clause: hosted loads pg-safeupdate
        for PostgREST's role (supabase/postgres migrations/db/migrations/
        20220224211803_fix-postgrest-supautils.sql: `ALTER ROLE authenticator SET
        session_preload_libraries = supautils, safeupdate`), whose parse hook refuses it with
        SQLSTATE 21000 (eradman/pg-safeupdate safeupdate.c); Debian ships no pg-safeupdate, so
        the refusal is raised here, before the statement, as the hook would."""
        if auth.role not in API_ROLES:
            await self._refuse_role(auth.role)
        claims = json.dumps(auth.claims, separators=(",", ":"))
        sub = auth.claims.get("sub")
        headers = json.dumps({k.lower(): v for k, v in request.headers.items()})
        path = request.url.path.removeprefix("/rest/v1") or "/"
        if unqualified is not None:
            raise PgrstError(400, "21000", f"{unqualified} requires a WHERE clause")
        sql, args = statement
        async with self.pool.acquire() as conn:
            try:
                row = await conn.fetchrow(
                    REQUEST_CALL,
                    auth.role,
                    claims,
                    "" if sub is None else str(sub),
                    request.method,
                    path,
                    headers,
                    SEARCH_PATH,
                    readonly,
                    single,
                    sql,
                    args,
                )
            except asyncpg.PostgresError as e:
                if e.sqlstate == SINGLE_SQLSTATE:
                    raise Single(int(str(e))) from None
                raise
        assert row is not None
        assert row["found_row"], "a request's statement returns one row"
        return Outcome(row["body"], int(row["rows"] or 0), row["total"])

    async def _refuse_role(self, role: str) -> None:
        async with self.pool.acquire() as conn:
            exists = await conn.fetchval("select 1 from pg_roles where rolname = $1", role)
        if exists:
            raise PgrstError(403, "42501", f'permission denied to set role "{role}"')
        raise PgrstError(
            401, "22023", f'role "{role}" does not exist', headers={"WWW-Authenticate": "Bearer"}
        )
