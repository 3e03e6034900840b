"""The `/rest/v1` routes: each request authenticated, turned into one statement and run in one
round trip under the request's role."""

# ruff: noqa: S608 - SQL is built from catalog identifiers (quoted) and bind placeholders only

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hitl_devstack.rest.errors import (
    PgrstError,
    column_not_found,
    error_response,
    postgres_error_response,
    singular,
)
from hitl_devstack.rest.query import (
    LOGIC_PARAMS,
    RESERVED_PARAMS,
    Params,
    Prefer,
    filter_sql,
    json_body,
    logic_sql,
    non_negative_int,
    order_sql,
    select_list,
    split_top_level,
    unquote_ident,
)
from hitl_devstack.rest.responses import (
    Outcome,
    envelope,
    negotiate,
    read_response,
    value_response,
    write_response,
)
from hitl_devstack.rest.schema import Column, Function, SchemaCache, Table, quote
from hitl_devstack.rest.settings import ANON_ROLE, API_ROLES, EXPOSED_SCHEMAS, MAX_ROWS, SEARCH_PATH
from hitl_devstack.rest.tokens import Auth, authenticate

if TYPE_CHECKING:
    from hitl_devstack.context import DevstackContext

log = logging.getLogger("hitl_devstack.rest")

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


class RestApi:
    def __init__(self, ctx: DevstackContext) -> None:
        self.ctx = ctx
        self.cache = SchemaCache(ctx.pool)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/rpc/{function}", self.rpc, methods=["GET", "HEAD", "POST"]),
            Route("/{table}", self.table, methods=["GET", "HEAD", "POST", "PATCH", "DELETE"]),
        ]

    # ---- entry points --------------------------------------------------------------------
    async def table(self, request: Request) -> Response:
        return await self._guarded(request, self._table)

    async def rpc(self, request: Request) -> Response:
        return await self._guarded(request, self._rpc)

    async def root(self, request: Request) -> Response:
        return await self._guarded(request, self._root)

    async def _root(self, request: Request, auth: Auth) -> Response:
        """A skeletal OpenAPI document: the exposed tables and functions, no schemas."""
        await self.cache.reload()
        paths: dict[str, dict[str, Any]] = {"/": {}}
        paths.update({f"/{name}": {} for name in sorted(self.cache.tables)})
        paths.update({f"/rpc/{name}": {} for name in sorted(self.cache.functions)})
        doc = {
            "swagger": "2.0",
            "info": {"title": "hitl-relay devstack (PostgREST subset)", "version": "1"},
            "basePath": "/",
            "schemes": ["http"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "paths": paths,
        }
        return Response(
            b"" if request.method == "HEAD" else json.dumps(doc),
            media_type="application/openapi+json; charset=utf-8",
        )

    async def _guarded(self, request: Request, handler: Any) -> Response:
        auth: Auth | None = None
        try:
            self._check_profile(request)
            auth = authenticate(request.headers, self.ctx.keys.jwt_secret)
            response: Response = await handler(request, auth)
            return response
        except PgrstError as e:
            return e.response()
        except asyncpg.PostgresError as e:
            return postgres_error_response(e, auth.role if auth else ANON_ROLE)
        except ClientDisconnect:
            # the client gave up before its body arrived (a timeout under load): nobody is
            # left to answer, and it is not the server's error
            log.info("client left before its request body: %s %s", request.method, request.url.path)
            return Response(status_code=499)
        except (OSError, asyncpg.InterfaceError) as e:
            log.warning(
                "database unreachable during %s %s: %s", request.method, request.url.path, e
            )
            return error_response(
                503, "PGRST000", "Database connection error. Retrying the connection.", str(e)
            )
        except Exception:  # request boundary: logged, the caller gets a generic 500
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return error_response(
                500, "PGRSTX00", "Internal server error", "The devstack logged the error."
            )

    def _check_profile(self, request: Request) -> None:
        header = "accept-profile" if request.method in ("GET", "HEAD") else "content-profile"
        schema = request.headers.get(header)
        if schema is not None and schema not in EXPOSED_SCHEMAS:
            raise PgrstError(
                406,
                "PGRST106",
                f"Invalid schema: {schema}",
                None,
                f"Only the following schemas are exposed: {', '.join(EXPOSED_SCHEMAS)}",
            )

    # ---- running a statement -------------------------------------------------------------
    async def _run(
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
        async with self.ctx.pool.acquire() as conn:
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
        async with self.ctx.pool.acquire() as conn:
            exists = await conn.fetchval("select 1 from pg_roles where rolname = $1", role)
        if exists:
            raise PgrstError(403, "42501", f'permission denied to set role "{role}"')
        raise PgrstError(
            401, "22023", f'role "{role}" does not exist', headers={"WWW-Authenticate": "Bearer"}
        )

    # ---- tables --------------------------------------------------------------------------
    async def _table(self, request: Request, auth: Auth) -> Response:
        table = await self.cache.table(request.path_params["table"])
        prefer = Prefer.parse(request.headers.getlist("prefer"))
        media = negotiate(request)
        single = media.single
        method = request.method
        params = Params()
        where = self._where(request, table.name, table.columns, "_x", params)
        query = request.query_params
        if method in ("GET", "HEAD"):
            select = select_list(query.get("select"), table.name, table.columns, "_x", params)
            order = query.get("order")
            tail = ""
            if order:
                tail += " order by " + order_sql(order, table.name, table.columns, "_x", params)
            limit = non_negative_int("limit", query.get("limit"))
            offset = non_negative_int("offset", query.get("offset")) or 0
            limit = MAX_ROWS if limit is None else min(limit, MAX_ROWS)
            tail += f" limit {limit}" + (f" offset {offset}" if offset else "")
            source = f"select {select} from {table.sql} as _x{where}{tail}"
            total = f"(select count(*) from {table.sql} as _x{where})" if prefer.count else "null"
            sql = envelope(source, total, media)
            try:
                outcome = await self._run(
                    request, auth, (sql, params.values), readonly=True, single=single
                )
            except Single as s:
                raise singular(s.rows) from None
            return read_response(request, outcome, offset, media, prefer, head=method == "HEAD")
        body = await json_body(request) if method != "DELETE" else None
        returning = prefer.return_ == "representation"
        out_select = (
            select_list(query.get("select"), table.name, table.columns, "_m", params)
            if returning
            else "1"
        )
        # QueryBuilder.hs returningF: `RETURNING 1` unless the response carries rows, so a
        # minimal write needs no SELECT privilege and meets no SELECT policy
        returns = (
            " returning _x.*"
            if prefer.return_ in ("representation", "headers-only")
            else (" returning 1")
        )
        if method == "POST":
            mutation = self._insert(table, body, query, prefer, params, returns)
        elif method == "PATCH":
            mutation = self._update(table, body, where, params, returns)
        else:
            mutation = f"delete from {table.sql} as _x{where}{returns}"
        unqualified = None
        if method in ("PATCH", "DELETE") and mutation is not None and not where:
            unqualified = "UPDATE" if method == "PATCH" else "DELETE"
        if mutation is None:  # nothing to write (empty PATCH body or empty insert list)
            statement: tuple[str, list[str]] = (
                "select '[]'::text as body, 0::bigint as rows, 0::bigint as total",
                [],
            )
        else:
            sql = f"with _m as ({mutation}) " + envelope(
                f"select {out_select} from _m", "(select count(*) from _m)", media
            )
            statement = (sql, params.values)
        try:
            outcome = await self._run(
                request,
                auth,
                statement,
                readonly=False,
                single=single,
                unqualified=unqualified,
            )
        except Single as s:
            raise singular(s.rows) from None
        return write_response(method, outcome, media, prefer)

    def _where(
        self,
        request: Request,
        table_name: str,
        columns: Mapping[str, Column],
        alias: str,
        params: Params,
        skip: frozenset[str] = frozenset(),
    ) -> str:
        conditions = []
        for key, value in request.query_params.multi_items():
            if key in RESERVED_PARAMS or key in skip:
                continue
            if key in LOGIC_PARAMS:
                conditions.append(logic_sql(key, value, table_name, columns, alias, params))
            else:
                conditions.append(filter_sql(key, value, table_name, columns, alias, params))
        return (" where " + " and ".join(conditions)) if conditions else ""

    def _insert(
        self,
        table: Table,
        body: Any,
        query: Mapping[str, str],
        prefer: Prefer,
        params: Params,
        returns: str,
    ) -> str | None:
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(r, dict) for r in rows):
            raise PgrstError(400, "PGRST102", "All object keys must match")
        columns_param = query.get("columns")
        if columns_param is not None:
            names = [unquote_ident(c.strip()) for c in split_top_level(columns_param)]
        elif rows:
            names = list(rows[0])
            if any(set(r) != set(names) for r in rows[1:]):
                raise PgrstError(400, "PGRST102", "All object keys must match")
        else:
            names = []
        if not rows:
            return None
        for name in names:
            if name not in table.columns:
                raise column_not_found(table.name, name)
        payload = params.add(json.dumps(rows))
        if names:
            cols = ", ".join(quote(n) for n in names)
            rows_sql = f"json_populate_recordset(null::{table.rowtype}, {payload}::json)"
            source = f"select {cols} from {rows_sql}"
            if prefer.missing == "default":
                raise PgrstError(
                    400,
                    "PGRST100",
                    "Prefer: missing=default is not supported by the hitl-relay devstack",
                    "Send every column, or leave missing=default out so missing keys are null.",
                )
            insert = f"insert into {table.sql} as _x ({cols}) {source}"
        else:
            insert = (
                f"insert into {table.sql} as _x select from "
                f"json_populate_recordset(null::{table.rowtype}, {payload}::json)"
            )
        if prefer.resolution:
            conflict_param = query.get("on_conflict")
            targets = (
                [unquote_ident(c.strip()) for c in split_top_level(conflict_param)]
                if conflict_param
                else list(table.pk)
            )
            for name in targets:
                if name not in table.columns:
                    raise PgrstError(400, "42703", f"column {table.name}.{name} does not exist")
            if not targets:
                raise PgrstError(
                    400, "PGRST100", "on_conflict needs columns when the table has no primary key"
                )
            target = ", ".join(quote(n) for n in targets)
            if prefer.resolution == "ignore-duplicates" or not names:
                insert += f" on conflict ({target}) do nothing"
            else:
                updates = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names)
                insert += f" on conflict ({target}) do update set {updates}"
        return insert + returns

    def _update(
        self, table: Table, body: Any, where: str, params: Params, returns: str
    ) -> str | None:
        if not isinstance(body, dict):
            raise PgrstError(400, "PGRST102", "Empty or invalid json")
        if not body:
            return None
        for name in body:
            if name not in table.columns:
                raise column_not_found(table.name, name)
        payload = params.add(json.dumps(body))
        sets = ", ".join(f"{quote(n)} = _b.{quote(n)}" for n in body)
        return (
            f"update {table.sql} as _x set {sets} "
            f"from json_populate_record(null::{table.rowtype}, {payload}::json) as _b"
            f"{where}{returns}"
        )

    # ---- functions -----------------------------------------------------------------------
    async def _rpc(self, request: Request, auth: Auth) -> Response:
        name = request.path_params["function"]
        is_post = request.method == "POST"
        query = request.query_params
        body: Any = None
        if is_post:
            body = await json_body(request, empty_ok=True)
            if body is None:
                body = {}
            args: dict[str, Any] = body if isinstance(body, dict) else {}
        else:
            if name not in self.cache.functions:
                await self.cache.reload()
            known = {p.name for fn in self.cache.functions.get(name, []) for p in fn.params}
            args = {k: v for k, v in query.multi_items() if k in known}
        fn = await self.cache.function(name, list(args), is_post)
        whole_body = is_post and fn.single_unnamed_json
        if is_post and not whole_body and not isinstance(body, dict):
            raise PgrstError(400, "PGRST102", "Empty or invalid json")
        prefer = Prefer.parse(request.headers.getlist("prefer"))
        media = negotiate(request)
        single = media.single
        params = Params()
        call, args_from = self._call(fn, args, body if whole_body else None, is_post, params)
        readonly = not is_post or not fn.volatile
        head = request.method == "HEAD"

        if fn.returns == "void" or (fn.returns == "scalar" and not fn.retset):
            from_clause = f" from {args_from}" if args_from else ""
            sql = f"select to_json({call})::text as body, 1 as rows, null::bigint as total"
            if fn.returns == "void":  # void has no JSON form; the call still runs
                sql = f"select ({call})::text as body, 1 as rows, null::bigint as total"
            outcome = await self._run(
                request, auth, (sql + from_clause, params.values), readonly=readonly,
                single=False,
            )  # fmt: skip
            if fn.returns == "void":
                return Response(status_code=204)
            return value_response(outcome.body, head)

        from_items = f"{args_from} cross join lateral " if args_from else ""
        if fn.returns == "composite" and not fn.retset:
            select = select_list(query.get("select"), fn.name, fn.columns, "_r", params)
            sql = (
                f"select (select row_to_json(_t)::text from (select {select}) _t) as body, "
                f"1 as rows, null::bigint as total from {from_items}{call} as _r"
            )
            outcome = await self._run(
                request, auth, (sql, params.values), readonly=readonly, single=False
            )
            return value_response(outcome.body, head, media)

        limit = non_negative_int("limit", query.get("limit"))
        offset = non_negative_int("offset", query.get("offset")) or 0
        page = (f" limit {limit}" if limit is not None else "") + (
            f" offset {offset}" if offset else ""
        )
        if fn.returns == "composite":
            where = self._where(request, fn.name, fn.columns, "_r", params, skip=frozenset(args))
            select = select_list(query.get("select"), fn.name, fn.columns, "_r", params)
            order = query.get("order")
            tail = (
                (" order by " + order_sql(order, fn.name, fn.columns, "_r", params))
                if order
                else ""
            )
            inner = f"select {select} from {from_items}{call} as _r{where}{tail}"
            total = (
                f"(select count(*) from {from_items}{call} as _r{where})"
                if prefer.count
                else "null"
            )
            sql = envelope(inner + page, total, media)
        else:  # setof a scalar type: an array of values
            inner = f"select _r.v from {from_items}{call} as _r(v)"
            total = (
                f"(select count(*) from {from_items}{call} as _r(v))" if prefer.count else "null"
            )
            body_sql = (
                "case when count(*) = 1 then (json_agg(_t.v) -> 0)::text end"
                if single
                else "coalesce(json_agg(_t.v), '[]')::text"
            )
            sql = (
                f"select {body_sql} as body, count(*) as rows, {total} as total "
                f"from ({inner}{page}) _t"
            )
        try:
            outcome = await self._run(
                request, auth, (sql, params.values), readonly=readonly, single=single
            )
        except Single as s:
            raise singular(s.rows) from None
        return read_response(request, outcome, offset, media, prefer, head=head)

    def _call(
        self,
        fn: Function,
        args: Mapping[str, Any],
        whole_body: Any,
        is_post: bool,
        params: Params,
    ) -> tuple[str, str]:
        """The call expression, and the FROM item its arguments come from ("" if none).

        POST arguments go through `json_to_record` with the parameters' catalog types, as
        PostgREST does, so JSON arrays, objects and numbers convert exactly as there.
        """
        if whole_body is not None:
            placeholder = params.add(json.dumps(whole_body))
            return f"{fn.sql}({placeholder}::text::{fn.params[0].type})", ""
        given = [p for p in fn.params if p.name in args]
        if not given:
            return f"{fn.sql}()", ""
        if is_post:
            payload = params.add(json.dumps({p.name: args[p.name] for p in given}))
            cols = ", ".join(f"{quote(p.name)} {p.type}" for p in given)
            named = ", ".join(f"{quote(p.name)} => _a.{quote(p.name)}" for p in given)
            return f"{fn.sql}({named})", f"json_to_record({payload}::json) as _a({cols})"
        named = ", ".join(
            f"{quote(p.name)} => {params.add(str(args[p.name]))}::text::{p.type}" for p in given
        )
        return f"{fn.sql}({named})", ""


def routes(ctx: DevstackContext) -> list[BaseRoute]:
    """The `/rest/v1` routes over the context's pool and keys."""
    return RestApi(ctx).routes()
