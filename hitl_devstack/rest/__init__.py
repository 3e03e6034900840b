"""The PostgREST subset of the devstack, mounted at `/rest/v1`.

It answers what supabase-py 2.34 and supabase-js 2.119 send (tables: GET/HEAD/POST/PATCH/DELETE
with `select`, filters, `order`, `limit`, `offset`, `Prefer`, single-object `Accept`; functions:
`/rpc/<fn>` by POST or GET) with PostgREST's status codes, headers and error bodies. Every
request runs in one transaction under the role of its JWT (`set_config('role', ...)`,
`request.jwt.claims`, ...) so row-level security applies exactly as on Supabase.

Identifiers are never taken from the request into SQL: tables, columns and functions are looked
up in a per-process copy of the catalog (refreshed on a miss) and quoted; every value is a bind
parameter cast to the column's type. See `hitl_devstack/README.md` for what is supported.
"""

from hitl_devstack.rest.api import routes
from hitl_devstack.rest.query import Params
from hitl_devstack.rest.statements import prepare_connection

__all__ = ["Params", "prepare_connection", "routes"]
