"""Function calls (`/rest/v1/rpc/<fn>`): arguments from the JSON body (POST) or the query string
(GET/HEAD), the result as a value, an object or rows, as PostgREST shapes it."""

# ruff: noqa: S608 - SQL is built from catalog identifiers (quoted) and bind placeholders only

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hitl_devstack.rest.errors import PgrstError, singular
from hitl_devstack.rest.query import (
    Params,
    Prefer,
    json_body,
    non_negative_int,
    order_sql,
    select_list,
    where_sql,
)
from hitl_devstack.rest.responses import envelope, negotiate, read_response, value_response
from hitl_devstack.rest.schema import Function, SchemaCache, quote
from hitl_devstack.rest.statements import Single, Statements
from hitl_devstack.rest.tokens import Auth


class Functions:
    """`/rest/v1/rpc/<fn>`: a call of the catalog function its arguments name, run as the
    request's role (read-only unless a POST calls a volatile function)."""

    def __init__(self, cache: SchemaCache, statements: Statements) -> None:
        self.cache = cache
        self.statements = statements

    async def handle(self, request: Request, auth: Auth) -> Response:
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
            outcome = await self.statements.run(
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
            outcome = await self.statements.run(
                request, auth, (sql, params.values), readonly=readonly, single=False
            )
            return value_response(outcome.body, head, media)

        limit = non_negative_int("limit", query.get("limit"))
        offset = non_negative_int("offset", query.get("offset")) or 0
        page = (f" limit {limit}" if limit is not None else "") + (
            f" offset {offset}" if offset else ""
        )
        if fn.returns == "composite":
            where = where_sql(request, fn.name, fn.columns, "_r", params, skip=frozenset(args))
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
            outcome = await self.statements.run(
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
