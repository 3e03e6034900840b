"""Table requests (`/rest/v1/<table>`): reads by GET/HEAD, writes by POST/PATCH/DELETE, each as
one statement over the table's catalog columns."""

# ruff: noqa: S608 - SQL is built from catalog identifiers (quoted) and bind placeholders only

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hitl_devstack.rest.errors import PgrstError, column_not_found, singular
from hitl_devstack.rest.query import (
    Params,
    Prefer,
    json_body,
    non_negative_int,
    order_sql,
    select_list,
    split_top_level,
    unquote_ident,
    where_sql,
)
from hitl_devstack.rest.responses import envelope, negotiate, read_response, write_response
from hitl_devstack.rest.schema import SchemaCache, Table, quote
from hitl_devstack.rest.settings import MAX_ROWS
from hitl_devstack.rest.statements import Single, Statements
from hitl_devstack.rest.tokens import Auth


class Tables:
    """`/rest/v1/<table>`: the request's grammar as one statement on the table, run as its role."""

    def __init__(self, cache: SchemaCache, statements: Statements) -> None:
        self.cache = cache
        self.statements = statements

    async def handle(self, request: Request, auth: Auth) -> Response:
        table = await self.cache.table(request.path_params["table"])
        prefer = Prefer.parse(request.headers.getlist("prefer"))
        media = negotiate(request)
        single = media.single
        method = request.method
        params = Params()
        where = where_sql(request, table.name, table.columns, "_x", params)
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
                outcome = await self.statements.run(
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
            outcome = await self.statements.run(
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
