"""The `/rest/v1` routes: each request authenticated, turned into one statement and run in one
round trip under the request's role.

`guard` checks and renders errors, `tables` and `functions` build the statement, `statements`
runs it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hitl_devstack.rest.functions import Functions
from hitl_devstack.rest.guard import guarded
from hitl_devstack.rest.schema import SchemaCache
from hitl_devstack.rest.statements import Statements
from hitl_devstack.rest.tables import Tables
from hitl_devstack.rest.tokens import Auth

if TYPE_CHECKING:
    from hitl_devstack.context import DevstackContext


class RestApi:
    def __init__(self, ctx: DevstackContext) -> None:
        self.ctx = ctx
        self.cache = SchemaCache(ctx.pool)
        statements = Statements(ctx.pool)
        self.tables = Tables(self.cache, statements)
        self.functions = Functions(self.cache, statements)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/rpc/{function}", self.rpc, methods=["GET", "HEAD", "POST"]),
            Route("/{table}", self.table, methods=["GET", "HEAD", "POST", "PATCH", "DELETE"]),
        ]

    # ---- entry points --------------------------------------------------------------------
    async def table(self, request: Request) -> Response:
        return await guarded(request, self.tables.handle, self.ctx.keys.jwt_secret)

    async def rpc(self, request: Request) -> Response:
        return await guarded(request, self.functions.handle, self.ctx.keys.jwt_secret)

    async def root(self, request: Request) -> Response:
        return await guarded(request, self._root, self.ctx.keys.jwt_secret)

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


def routes(ctx: DevstackContext) -> list[BaseRoute]:
    """The `/rest/v1` routes over the context's pool and keys."""
    return RestApi(ctx).routes()
