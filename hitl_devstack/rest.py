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

# ruff: noqa: S608 - SQL is built from catalog identifiers (quoted) and bind placeholders only

from __future__ import annotations

import asyncio
import base64
import difflib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import asyncpg
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from hitl_devstack.context import DevstackContext

log = logging.getLogger("hitl_devstack.rest")

SCHEMA = "public"
EXPOSED_SCHEMAS = (SCHEMA,)
ANON_ROLE = "anon"
API_ROLES = frozenset({"anon", "authenticated", "service_role"})
MAX_ROWS = 1000  # Supabase runs PostgREST with PGRST_DB_MAX_ROWS=1000
JWT_SKEW_S = 30  # PostgREST's allowed clock skew for exp/nbf/iat
SEARCH_PATH = "public, extensions"

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


OBJECT_MEDIA = "application/vnd.pgrst.object+json"
ARRAY_MEDIA = "application/vnd.pgrst.array+json"
JSON_TYPES = frozenset({"json", "jsonb"})
RESERVED_PARAMS = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict"})
LOGIC_PARAMS = frozenset({"or", "and", "not.or", "not.and"})
COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
IS_VALUES = {
    "null": "is null",
    "not_null": "is not null",
    "true": "is true",
    "false": "is false",
    "unknown": "is unknown",
}


# ---- errors -------------------------------------------------------------------------------
class PgrstError(Exception):
    """An error PostgREST itself would answer: status, code and the JSON body fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        hint: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return error_response(
            self.status, self.code, self.message, self.details, self.hint, self.headers
        )


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    hint: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    # aeson encodes object keys sorted: code, details, hint, message
    body = json.dumps(
        {"code": code, "details": details, "hint": hint, "message": message},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    all_headers = {"Proxy-Status": f"PostgREST; error={code}", **(headers or {})}
    return Response(
        body,
        status_code=status,
        media_type="application/json; charset=utf-8",
        headers=all_headers,
    )


def parse_error(message: str, details: str) -> PgrstError:
    return PgrstError(400, "PGRST100", message, details)


def sqlstate_status(sqlstate: str, message: str, authed: bool) -> int:
    """PostgREST's SQLSTATE → HTTP mapping (src/PostgREST/Error.hs `mapSQLtoHTTP`)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42P01": 404,
        "42P17": 500,
        "42501": 403 if authed else 401,
    }
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if sqlstate == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    prefixes = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
        "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
        "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }  # fmt: skip
    return prefixes.get(sqlstate[:2], 400)


def postgres_error_response(e: asyncpg.PostgresError, role: str) -> Response:
    sqlstate = e.sqlstate or "XX000"
    message = str(getattr(e, "message", None) or e)
    detail = getattr(e, "detail", None)
    hint = getattr(e, "hint", None)
    if sqlstate == "PGRST":
        raised = _raised_pgrst(message, detail)
        if raised is not None:
            return raised
    status = sqlstate_status(sqlstate, message, authed=role != ANON_ROLE)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return error_response(status, sqlstate, message, detail, hint, headers)


def _raised_pgrst(message: str, detail: str | None) -> Response | None:
    """`RAISE SQLSTATE 'PGRST' USING message = '{json}', detail = '{json}'`: full control."""
    try:
        body = json.loads(message)
        extra = json.loads(detail or "")
        status = int(extra["status"])
        headers = {str(k): str(v) for k, v in dict(extra.get("headers") or {}).items()}
        return error_response(
            status,
            str(body["code"]),
            str(body["message"]),
            body.get("details"),
            body.get("hint"),
            headers,
        )
    except (ValueError, KeyError, TypeError):
        return None


# ---- authentication -----------------------------------------------------------------------
@dataclass(frozen=True)
class Auth:
    role: str
    claims: dict[str, Any]


def _invalid_token(code: str, message: str, details: Any = None) -> PgrstError:
    challenge = f'Bearer error="invalid_token", error_description={json.dumps(message)}'
    return PgrstError(401, code, message, details, headers={"WWW-Authenticate": challenge})


def authenticate(headers: Mapping[str, str], secret: str) -> Auth:
    """The request's role and claims, verified as PostgREST 13+ verifies them.

    PostgREST v14 (src/PostgREST/Auth/Jwt.hs `parseToken`, Error.hs `JwtDecodeError`) hands the
    bearer token to jose-jwt's `decode` (tekul/jose-jwt Jose/Jwt.hs) with the secret as one HS256
    key; each way that can fail is a distinct PGRST301 message, reproduced by `_decode_jws`.
    """
    authorization = headers.get("authorization")
    token: str | None = None
    if authorization is not None:
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
            if not token:
                raise _invalid_token("PGRST301", "Empty JWT is sent in Authorization header")
    if token is None:
        token = headers.get("apikey") or None
    if token is None:
        return Auth(ANON_ROLE, {"role": ANON_ROLE})
    parts = token.count(".") + 1
    if parts != 3:
        raise _invalid_token("PGRST301", f"Expected 3 parts in JWT; got {parts}")
    claims = _decode_jws(token, secret)
    _check_claims(claims)
    role = claims.get("role")
    if role is None:
        role = ANON_ROLE
    elif not isinstance(role, str):
        role = json.dumps(role)
    return Auth(role, {**claims, "role": role})


# jose-jwt's JwsAlg (Jose/Jwa.hs): a header naming any other `alg` does not parse
JWS_ALGS = frozenset(
    {"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
     "EdDSA"}
)  # fmt: skip
B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url(part: str) -> bytes | None:
    """memory's Base64URLUnpadded: no padding, url-safe alphabet only; None when invalid."""
    if not B64URL.fullmatch(part) or len(part) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _decode_jws(token: str, secret: str) -> dict[str, Any]:
    """jose-jwt's `decode` as PostgREST calls it, with PostgREST's message for each failure."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header_raw, payload, signature = (
        _b64url(header_b64),
        _b64url(payload_b64),
        _b64url(signature_b64),
    )
    header: Any = None
    if header_raw is not None:
        try:
            header = json.loads(header_raw)
        except ValueError:
            header = None
    alg = header.get("alg") if isinstance(header, dict) else None
    # Jose/Internal/Parser.hs parseJwt: any parse failure is BadCrypto
    if alg not in JWS_ALGS or payload is None or (alg != "none" and signature is None):
        raise _invalid_token("PGRST301", "JWT cryptographic operation failed")
    if alg == "none":
        raise _invalid_token(
            "PGRST301",
            "Wrong or unsupported encoding algorithm",
            "JWT is unsecured but expected 'alg' was not 'none'",
        )
    if alg != "HS256":  # the secret is one symmetric key pinned to HS256 (Config.hs parseSecret)
        raise _invalid_token(
            "PGRST301",
            "No suitable key or wrong key type",
            "No suitable key was found to decode the JWT",
        )
    expected = hmac.digest(secret.encode(), f"{header_b64}.{payload_b64}".encode(), "sha256")
    if signature is None or not hmac.compare_digest(expected, signature):
        raise _invalid_token(
            "PGRST301",
            "No suitable key or wrong key type",
            "None of the keys was able to decode the JWT",
        )
    try:
        claims: Any = json.loads(payload)
    except ValueError:
        claims = None
    if not isinstance(claims, dict):  # Jwt.hs decodeClaims
        raise _invalid_token("PGRST303", "Parsing claims failed")
    return claims


def _check_claims(claims: Mapping[str, Any]) -> None:
    """Jwt.hs checkForErrors: exp, nbf, iat (30 s skew), then aud's type; the first error."""
    now = int(time.time())
    checks = (
        ("exp", "JWT expired", -1),  # expired: exp < now - skew
        ("nbf", "JWT not yet valid", 1),  # not yet valid: nbf > now + skew
        ("iat", "JWT issued at future", 1),
    )
    for name, message, direction in checks:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid_token("PGRST303", f"The JWT '{name}' claim must be a number")
        seconds = int(value) if float(value).is_integer() else 0  # Sci.toBoundedInteger
        if direction * (seconds - now) > JWT_SKEW_S:
            raise _invalid_token("PGRST303", message)
    aud = claims.get("aud")
    if aud is not None and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        raise _invalid_token(
            "PGRST303", "The JWT 'aud' claim must be a string or an array of strings"
        )


# ---- the schema cache ---------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): a valid SQL type name, from the catalog


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]
    pk: tuple[str, ...]
    rowtype: str  # quoted, schema-qualified

    @property
    def sql(self) -> str:
        return f"{quote(SCHEMA)}.{quote(self.name)}"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    type_name: str  # pg_type.typname, to spot json/jsonb
    has_default: bool


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Param, ...]  # input parameters, in order
    retset: bool
    returns: str  # void | scalar | composite
    columns: dict[str, Column]  # result columns when composite
    volatile: bool

    @property
    def sql(self) -> str:
        return f"{quote(SCHEMA)}.{quote(self.name)}"

    @property
    def single_unnamed_json(self) -> bool:
        return (
            len(self.params) == 1
            and self.params[0].name == ""
            and self.params[0].type_name in JSON_TYPES
        )


TABLES_SQL = """
select c.relname, c.oid::regclass::text as rowtype,
       coalesce(array_agg(a.attname order by a.attnum) filter (where a.attnum is not null),
                '{}') as names,
       coalesce(array_agg(format_type(a.atttypid, a.atttypmod) order by a.attnum)
                filter (where a.attnum is not null), '{}') as types,
       coalesce((select array_agg(pa.attname order by k.ord)
                 from pg_index i
                 cross join unnest(i.indkey) with ordinality as k(attnum, ord)
                 join pg_attribute pa on pa.attrelid = i.indrelid and pa.attnum = k.attnum
                 where i.indrelid = c.oid and i.indisprimary), '{}') as pk
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = $1 and c.relkind in ('r', 'v', 'm', 'f', 'p')
group by c.oid, c.relname
"""

FUNCTIONS_SQL = """
select p.proname, p.provolatile::text as provolatile, p.proretset, rt.typtype::text as typtype,
       rt.typname::text as rettype,
       rt.typrelid, p.pronargdefaults,
       coalesce(p.proargnames, '{}') as argnames,
       coalesce(p.proargmodes::text[], '{}') as argmodes,
       array(select format_type(t, null)
             from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             with ordinality u(t, i) order by i) as argtypes,
       array(select ty.typname from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             with ordinality u(t, i) join pg_type ty on ty.oid = u.t order by i) as argtypnames,
       coalesce((select array_agg(a.attname order by a.attnum) from pg_attribute a
                 where a.attrelid = rt.typrelid and a.attnum > 0 and not a.attisdropped), '{}')
         as rel_names,
       coalesce((select array_agg(format_type(a.atttypid, a.atttypmod) order by a.attnum)
                 from pg_attribute a
                 where a.attrelid = rt.typrelid and a.attnum > 0 and not a.attisdropped), '{}')
         as rel_types
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
where n.nspname = $1 and p.prokind = 'f'
"""


def _function_from_row(row: asyncpg.Record) -> Function | None:
    names: list[str] = list(row["argnames"])
    modes: list[str] = list(row["argmodes"])
    types: list[str] = list(row["argtypes"])
    typnames: list[str] = list(row["argtypnames"])
    if not modes:
        modes = ["i"] * len(types)
    names += [""] * (len(types) - len(names))
    inputs = [
        (names[i], types[i], typnames[i]) for i in range(len(types)) if modes[i] in ("i", "b")
    ]
    if any(m == "v" for m in modes):
        return None  # variadic functions are not supported
    outputs = {
        names[i]: Column(names[i], types[i])
        for i in range(len(types))
        if modes[i] in ("o", "b", "t")
    }
    n_defaults = int(row["pronargdefaults"])
    params = tuple(
        Param(n, t, tn, has_default=i >= len(inputs) - n_defaults)
        for i, (n, t, tn) in enumerate(inputs)
    )
    if row["rettype"] == "void":
        returns, columns = "void", {}
    elif row["typtype"] == "c":
        returns = "composite"
        columns = {n: Column(n, t) for n, t in zip(row["rel_names"], row["rel_types"], strict=True)}
    elif row["rettype"] == "record" and outputs:
        returns, columns = "composite", outputs
    elif row["typtype"] == "p" and row["rettype"] not in ("anyelement", "anyarray"):
        return None  # trigger, record without columns, internal: not callable over REST
    else:
        returns, columns = "scalar", {}
    return Function(
        name=row["proname"],
        params=params,
        retset=bool(row["proretset"]),
        returns=returns,
        columns=columns,
        volatile=row["provolatile"] == "v",
    )


class SchemaCache:
    """Tables and functions of the exposed schema, loaded once, reloaded when a name is missed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.tables: dict[str, Table] = {}
        self.functions: dict[str, list[Function]] = {}
        self._loaded = False
        self._generation = 0
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        """Read the catalog again; callers missing at the same time share one reload."""
        seen = self._generation
        async with self._lock:
            if self._generation != seen:
                return  # another request reloaded while this one waited
            await self._reload()
            self._generation += 1

    async def _reload(self) -> None:
        async with self._pool.acquire() as conn:
            table_rows = await conn.fetch(TABLES_SQL, SCHEMA)
            function_rows = await conn.fetch(FUNCTIONS_SQL, SCHEMA)
        tables = {}
        for r in table_rows:
            columns = {n: Column(n, t) for n, t in zip(r["names"], r["types"], strict=True)}
            tables[r["relname"]] = Table(r["relname"], columns, tuple(r["pk"]), r["rowtype"])
        functions: dict[str, list[Function]] = {}
        for r in function_rows:
            fn = _function_from_row(r)
            if fn is not None:
                functions.setdefault(fn.name, []).append(fn)
        self.tables, self.functions, self._loaded = tables, functions, True

    async def table(self, name: str) -> Table:
        if not self._loaded or name not in self.tables:
            await self.reload()
        found = self.tables.get(name)
        if found is None:
            close = difflib.get_close_matches(name, list(self.tables), n=1, cutoff=0.75)
            raise PgrstError(
                404,
                "PGRST205",
                f"Could not find the table '{SCHEMA}.{name}' in the schema cache",
                None,
                f"Perhaps you meant the table '{SCHEMA}.{close[0]}'" if close else None,
            )
        return found

    async def function(self, name: str, keys: Sequence[str], is_post: bool) -> Function:
        candidates = self._match(name, keys, is_post)
        if not candidates:
            await self.reload()
            candidates = self._match(name, keys, is_post)
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            listed = ", ".join(
                f"{SCHEMA}.{f.name}({', '.join(f'{p.name} => {p.type}' for p in f.params)})"
                for f in candidates
            )
            raise PgrstError(
                300,
                "PGRST203",
                f"Could not choose the best candidate function between: {listed}",
                None,
                "Try renaming the parameters or the function itself in the database so function "
                "overloading can be resolved",
            )
        raise self._no_function(name, sorted(keys), is_post)

    def _match(self, name: str, keys: Sequence[str], is_post: bool) -> list[Function]:
        given = set(keys)
        found = []
        for fn in self.functions.get(name, []):
            names = {p.name for p in fn.params}
            required = {p.name for p in fn.params if not p.has_default}
            if (is_post and fn.single_unnamed_json) or (given <= names and required <= given):
                found.append(fn)
        if len(found) > 1:  # an exact match of the given names wins over defaulted ones
            exact = [f for f in found if {p.name for p in f.params} == given]
            if len(exact) == 1:
                return exact
        return found

    def _no_function(self, name: str, keys: list[str], is_post: bool) -> PgrstError:
        func = f"{SCHEMA}.{name}"
        if keys:
            shown = f"({', '.join(keys)})"
            searched = f" with parameter{'s' if len(keys) > 1 else ''} {', '.join(keys)}"
        else:
            shown = searched = " without parameters"
        if is_post:
            searched += " or with a single unnamed json/jsonb parameter"
        overloads = self.functions.get(name, [])
        hint = None
        if overloads:
            signatures = [
                "(" + ", ".join(sorted(p.name for p in f.params)) + ")" for f in overloads
            ]
            wanted = "(" + ", ".join(keys) + ")"
            best = difflib.get_close_matches(wanted, signatures, n=1, cutoff=0.33)
            if best:
                hint = f"Perhaps you meant to call the function {func}{best[0]}"
        else:
            close = difflib.get_close_matches(name, list(self.functions), n=1, cutoff=0.75)
            if close:
                hint = f"Perhaps you meant to call the function {SCHEMA}.{close[0]}"
        return PgrstError(
            404,
            "PGRST202",
            f"Could not find the function {func}{shown} in the schema cache",
            f"Searched for the function {func}{searched}, but no matches were found in the "
            "schema cache.",
            hint,
        )


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# ---- query parameters ---------------------------------------------------------------------
class Params:
    """Bind parameters of one statement: `add` returns the placeholder.

    A request runs as one call of `pg_temp.devstack_request` (REQUEST_FUNCTION), which EXECUTEs
    the statement with one text array: the placeholder is that array's element, as text. Every
    placeholder is cast where it is used (`::int`, `::json`, `::text::<column type>`), so text
    converts as a bound parameter of that type would."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, value: str | int | list[str | None]) -> str:
        if isinstance(value, list):
            text = "{" + ",".join(_array_element(v) for v in value) + "}"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = value
        self.values.append(text)
        return f"($1[{len(self.values)}])"


def _array_element(value: str | None) -> str:
    """One element of a text[] literal: double-quoted, so commas, braces, spaces and the word
    NULL stay data; None is the SQL null."""
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote_ident(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1].replace('""', '"').replace('\\"', '"').replace("\\\\", "\\")
    return token


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside double quotes and parentheses (PostgREST's list syntax)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    current: list[str] = []
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _list_values(text: str) -> list[str | None]:
    """The items of `(a,"b,c",null)` in an `in` filter; quotes keep commas and parentheses."""
    values: list[str | None] = []
    for raw in split_top_level(text):
        item = raw.strip()
        if len(item) >= 2 and item[0] == item[-1] == '"':
            values.append(re.sub(r"\\(.)", r"\1", item[1:-1]))
        elif item.lower() == "null":
            values.append(None)
        else:
            values.append(item)
    return values


@dataclass(frozen=True)
class Field:
    """A column, optionally followed by a JSON path (`metadata->caller->>name`)."""

    column: Column
    path: tuple[tuple[str, str], ...]  # (arrow, key)

    def sql(self, alias: str, params: Params) -> str:
        expr = f"{alias}.{quote(self.column.name)}"
        for arrow, key in self.path:
            placeholder = params.add(int(key)) if re.fullmatch(r"-?\d+", key) else params.add(key)
            cast = "::int" if re.fullmatch(r"-?\d+", key) else "::text"
            expr = f"({expr} {arrow} {placeholder}{cast})"
        return expr

    @property
    def output_name(self) -> str:
        return self.path[-1][1] if self.path else self.column.name

    @property
    def value_type(self) -> str:
        if not self.path:
            return self.column.type
        return "text" if self.path[-1][0] == "->>" else "jsonb"


def parse_field(text: str, table_name: str, columns: Mapping[str, Column]) -> Field:
    tokens = re.split(r"(->>|->)", text)
    name = _unquote_ident(tokens[0].strip())
    column = columns.get(name)
    if column is None:
        raise PgrstError(400, "42703", f"column {table_name}.{name} does not exist")
    path = []
    for i in range(1, len(tokens), 2):
        key = _unquote_ident(tokens[i + 1].strip()) if i + 1 < len(tokens) else ""
        if not key:
            raise parse_error(
                f'"failed to parse select parameter ({text})" (line 1, column {len(text)})',
                "unexpected end of input expecting field name (* or [a..z0..9_$])",
            )
        path.append((tokens[i], key))
    if path and column.type not in JSON_TYPES:
        raise PgrstError(
            400, "42883", f"operator does not exist: {column.type} -> unknown", None,
            "No operator matches the given name and argument types. You might need to add "
            "explicit type casts.",
        )  # fmt: skip
    return Field(column, tuple(path))


def select_list(
    select: str | None, table_name: str, columns: Mapping[str, Column], alias: str, params: Params
) -> str:
    """`select=` as SQL: `*`, columns, `alias:column`, JSON paths. No embedding, no casts."""
    text = (select or "*").strip() or "*"
    items: list[str] = []
    for raw in split_top_level(text):
        item = raw.strip()
        if item == "*":
            items.append(f"{alias}.*")
            continue
        if not item:
            raise parse_error(
                f'"failed to parse select parameter ({text})" (line 1, column {len(text)})',
                "unexpected empty item",
            )
        if "(" in item or item.startswith("..."):
            raise parse_error(
                f'"failed to parse select parameter ({text})" (line 1, column 1)',
                "embedded resources, spreads and aggregates are not supported by the hitl-relay "
                "devstack; select plain columns",
            )
        label: str | None = None
        m = re.match(r'^((?:"(?:[^"]|"")*")|[^:"]+):(?!:)(.*)$', item)
        if m:
            label, item = _unquote_ident(m.group(1)), m.group(2)
        if "::" in item:
            raise parse_error(
                f'"failed to parse select parameter ({text})" (line 1, column 1)',
                "casts in select are not supported by the hitl-relay devstack",
            )
        fld = parse_field(item, table_name, columns)
        items.append(f"{fld.sql(alias, params)} as {quote(label or fld.output_name)}")
    return ", ".join(items)


def filter_sql(
    key: str,
    value: str,
    table_name: str,
    columns: Mapping[str, Column],
    alias: str,
    params: Params,
) -> str:
    """One `column=[not.]op.value` filter as a SQL condition with bind parameters."""
    fld = parse_field(key, table_name, columns)
    return _condition(fld, value, alias, params, f"{key}={value}")


def _condition(fld: Field, value: str, alias: str, params: Params, shown: str) -> str:
    negate = False
    rest = value
    if rest.startswith("not."):
        negate, rest = True, rest[4:]
    op, dot, operand = rest.partition(".")
    if not dot and op not in IS_VALUES:
        raise parse_error(
            f'"failed to parse filter ({value})" (line 1, column {len(value) + 1})',
            f"unexpected end of input in {shown}; filters are column=operator.value",
        )
    col = fld.sql(alias, params)
    typ = fld.value_type
    if op in COMPARISONS:
        cond = f"{col} {COMPARISONS[op]} {params.add(operand)}::text::{typ}"
    elif op in ("like", "ilike"):
        cond = f"{col}::text {op} {params.add(operand.replace('*', '%'))}::text"
    elif op == "is":
        sql = IS_VALUES.get(operand.lower())
        if sql is None:
            raise parse_error(
                f'"failed to parse filter ({value})" (line 1, column 4)',
                f"unexpected {operand!r} expecting null, not_null, true, false or unknown",
            )
        cond = f"{col} {sql}"
    elif op == "in":
        if not (operand.startswith("(") and operand.endswith(")")):
            raise parse_error(
                f'"failed to parse filter ({value})" (line 1, column 4)',
                "expecting a list in parentheses: in.(a,b,c)",
            )
        items = _list_values(operand[1:-1]) if operand[1:-1].strip() else []
        # an empty list matches nothing, as in PostgREST
        cond = f"{col} = any({params.add(items)}::text[]::{typ}[])" if items else "false"
    else:
        raise parse_error(
            f'"failed to parse filter ({value})" (line 1, column 1)',
            f"unknown or unsupported operator {op!r}; the hitl-relay devstack supports eq, neq, "
            "gt, gte, lt, lte, like, ilike, is, in and not.<op>",
        )
    return f"not ({cond})" if negate else cond


def logic_sql(
    key: str,
    value: str,
    table_name: str,
    columns: Mapping[str, Column],
    alias: str,
    params: Params,
) -> str:
    """`or=(a.eq.1,b.gt.2)`, `and=(...)`, `not.or=(...)`, nested `or(...)`/`and(...)`."""
    negate = key.startswith("not.")
    joiner = key.removeprefix("not.")
    if not (value.startswith("(") and value.endswith(")")):
        raise parse_error(
            f'"failed to parse logic tree ({value})" (line 1, column 1)',
            'expecting "(" around the conditions',
        )
    parts = []
    for raw in split_top_level(value[1:-1]):
        item = raw.strip()
        m = re.match(r"^(not\.)?(or|and)(\(.*\))$", item)
        if m:
            parts.append(
                logic_sql(
                    (m.group(1) or "") + m.group(2), m.group(3), table_name, columns, alias, params
                )
            )
            continue
        # "column.op.value" where the column may be quoted
        m2 = re.match(r'^("(?:[^"]|"")+"|[^.]+(?:->>?[^.]+)*)\.(.*)$', item)
        if m2 is None:
            raise parse_error(
                f'"failed to parse logic tree ({value})" (line 1, column 1)',
                f"cannot read the condition {item!r}",
            )
        fld = parse_field(m2.group(1), table_name, columns)
        operand = m2.group(2)
        parts.append(_condition(fld, _unquote_operand(operand), alias, params, item))
    cond = "(" + f" {joiner} ".join(parts or ["true"]) + ")"
    return f"not {cond}" if negate else cond


def _unquote_operand(operand: str) -> str:
    op, dot, rest = operand.partition(".")
    if op == "not":
        return "not." + _unquote_operand(rest)
    if dot and len(rest) >= 2 and rest[0] == rest[-1] == '"' and op != "in":
        return op + "." + re.sub(r"\\(.)", r"\1", rest[1:-1])
    return operand


def order_sql(value: str, table_name: str, columns: Mapping[str, Column], alias: str,
              params: Params) -> str:  # fmt: skip
    terms = []
    for raw in split_top_level(value):
        item = raw.strip()
        if not item:
            continue
        pieces = item.split(".")
        modifiers: list[str] = []
        while len(pieces) > 1 and pieces[-1] in ("asc", "desc", "nullsfirst", "nullslast"):
            modifiers.insert(0, pieces.pop())
        name = ".".join(pieces)
        fld = parse_field(name, table_name, columns)
        direction = [m for m in modifiers if m in ("asc", "desc")]
        nulls = [m for m in modifiers if m.startswith("nulls")]
        if len(direction) > 1 or len(nulls) > 1:
            raise parse_error(
                f'"failed to parse order ({value})" (line 1, column 1)',
                "expecting at most one of asc/desc and one of nullsfirst/nullslast",
            )
        sql = fld.sql(alias, params) + (f" {direction[0]}" if direction else "")
        if nulls:
            sql += " nulls first" if nulls[0] == "nullsfirst" else " nulls last"
        terms.append(sql)
    return ", ".join(terms)


def _non_negative_int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"\d+", value.strip()):
        raise parse_error(
            f'"failed to parse {name} parameter ({value})" (line 1, column 1)',
            f"{name} must be a non-negative integer",
        )
    return int(value)


@dataclass
class Prefer:
    """`Prefer` as PostgREST v14 reads it (src/PostgREST/ApiRequest/Preferences.hs fromHeaders):
    the first accepted value of each preference wins, and `Preference-Applied` lists them in
    PostgREST's order. `tx=` is honoured only when db-tx-end allows an override; Supabase keeps
    the default `commit` (docs/references/configuration.rst db-tx-end; the CLI sets no
    PGRST_DB_TX_END), so `tx=rollback` is read, never applied and never echoed."""

    return_: str | None = None  # representation | minimal | headers-only
    count: str | None = None
    resolution: str | None = None
    missing: str | None = None
    handling: str | None = None

    ACCEPTED: ClassVar[dict[str, tuple[str, ...]]] = {
        "resolution": ("merge-duplicates", "ignore-duplicates"),
        "missing": ("default", "null"),
        "return": ("representation", "minimal", "headers-only"),
        "count": ("exact", "planned", "estimated"),
        "handling": ("strict", "lenient"),
    }

    @classmethod
    def parse(cls, headers: Iterable[str]) -> Prefer:
        prefer = cls()
        for header in headers:
            for raw in header.split(","):
                key, _, value = raw.strip().partition("=")
                attr = "return_" if key == "return" else key
                if value in cls.ACCEPTED.get(key, ()) and getattr(prefer, attr) is None:
                    setattr(prefer, attr, value)
        return prefer

    @property
    def applied(self) -> list[str]:
        """prefAppliedHeader's order: resolution, missing, return, count, (tx), handling."""
        pairs = (
            ("resolution", self.resolution),
            ("missing", self.missing),
            ("return", self.return_),
            ("count", self.count),
            ("handling", self.handling),
        )
        return [f"{key}={value}" for key, value in pairs if value is not None]


# ---- the API ------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a statement produced: the JSON text of the rows, their number, the total."""

    body: str | None
    rows: int
    total: int | None = None


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
            limit = _non_negative_int("limit", query.get("limit"))
            offset = _non_negative_int("offset", query.get("offset")) or 0
            limit = MAX_ROWS if limit is None else min(limit, MAX_ROWS)
            tail += f" limit {limit}" + (f" offset {offset}" if offset else "")
            source = f"select {select} from {table.sql} as _x{where}{tail}"
            total = f"(select count(*) from {table.sql} as _x{where})" if prefer.count else "null"
            sql = _envelope(source, total, media)
            try:
                outcome = await self._run(
                    request, auth, (sql, params.values), readonly=True, single=single
                )
            except Single as s:
                raise _singular(s.rows) from None
            return _read_response(request, outcome, offset, media, prefer, head=method == "HEAD")
        body = await _json_body(request) if method != "DELETE" else None
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
            sql = f"with _m as ({mutation}) " + _envelope(
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
            raise _singular(s.rows) from None
        return _write_response(method, outcome, media, prefer)

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
            names = [_unquote_ident(c.strip()) for c in split_top_level(columns_param)]
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
                raise _column_not_found(table.name, name)
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
                [_unquote_ident(c.strip()) for c in split_top_level(conflict_param)]
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
                raise _column_not_found(table.name, name)
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
            body = await _json_body(request, empty_ok=True)
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
            return _value_response(outcome.body, head)

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
            return _value_response(outcome.body, head, media)

        limit = _non_negative_int("limit", query.get("limit"))
        offset = _non_negative_int("offset", query.get("offset")) or 0
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
            sql = _envelope(inner + page, total, media)
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
            raise _singular(s.rows) from None
        return _read_response(request, outcome, offset, media, prefer, head=head)

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


# ---- helpers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Media:
    """The response media type PostgREST picks from `Accept`."""

    single: bool = False
    strip_nulls: bool = False

    @property
    def content_type(self) -> str:
        if not self.single and not self.strip_nulls:
            return "application/json; charset=utf-8"
        kind = OBJECT_MEDIA if self.single else ARRAY_MEDIA
        return kind + (";nulls=stripped" if self.strip_nulls else "") + "; charset=utf-8"


def negotiate(request: Request) -> Media:
    """The first acceptable entry of `Accept`; none acceptable is PGRST107 (406)."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return Media()
    for raw in accept.split(","):
        kind, *options = (part.strip() for part in raw.split(";"))
        stripped = "nulls=stripped" in options
        if kind in ("*/*", "application/*", "application/json"):
            return Media()
        if kind == OBJECT_MEDIA:
            return Media(single=True, strip_nulls=stripped)
        if kind == ARRAY_MEDIA:
            return Media(strip_nulls=stripped)
    raise PgrstError(
        406,
        "PGRST107",
        "None of these media types are available: "
        + ", ".join(part.split(";")[0].strip() for part in accept.split(",")),
    )


def _singular(rows: int) -> PgrstError:
    return PgrstError(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        f"The result contains {rows} rows",
    )


def _column_not_found(table: str, column: str) -> PgrstError:
    return PgrstError(
        400, "PGRST204", f"Could not find the '{column}' column of '{table}' in the schema cache"
    )


def _envelope(source: str, total: str, media: Media) -> str:
    """Wrap a row source so the statement returns (body json text, rows, total)."""
    rows = "json_strip_nulls(json_agg(_t))" if media.strip_nulls else "json_agg(_t)"
    body = (
        f"case when count(*) = 1 then ({rows} -> 0)::text end"
        if media.single
        else f"coalesce({rows}, '[]')::text"
    )
    return f"select {body} as body, count(*) as rows, {total} as total from ({source}) _t"


async def _json_body(request: Request, empty_ok: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if empty_ok:
            return None
        raise PgrstError(400, "PGRST102", "Empty or invalid json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PgrstError(400, "PGRST102", "Empty or invalid json") from None


def _value_response(body: str | None, head: bool, media: Media | None = None) -> Response:
    media = media or Media()
    return Response(
        b"" if head else (body if body is not None else "null"),
        status_code=200,
        media_type=media.content_type,
        headers={"Content-Profile": SCHEMA},
    )


def _content_range(first: int, rows: int, total: int | None) -> str:
    shown_total = "*" if total is None else str(total)
    if rows == 0:
        return f"*/{shown_total}"
    return f"{first}-{first + rows - 1}/{shown_total}"


def _read_response(
    request: Request, outcome: Outcome, offset: int, media: Media, prefer: Prefer, head: bool
) -> Response:
    total = outcome.total if prefer.count else None
    status = 200
    if total is not None:
        if offset > total and not (offset == 0 and total == 0):
            raise PgrstError(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                f"An offset of {offset} was requested, but there are only {total} rows.",
            )
        if outcome.rows < total:
            status = 206
    headers = {
        "Content-Range": _content_range(offset, outcome.rows, total),
        "Content-Profile": SCHEMA,
    }
    if prefer.count:
        headers["Preference-Applied"] = f"count={prefer.count}"
    return Response(
        b"" if head else (outcome.body or "[]"),
        status_code=status,
        media_type=media.content_type,
        headers=headers,
    )


def _write_response(method: str, outcome: Outcome, media: Media, prefer: Prefer) -> Response:
    total = outcome.total if prefer.count else None
    headers = {"Content-Profile": SCHEMA}
    if method == "POST":
        headers["Content-Range"] = f"*/{'*' if total is None else total}"
    else:
        headers["Content-Range"] = (
            f"0-{outcome.rows - 1}/{'*' if total is None else total}"
            if outcome.rows
            else f"*/{'*' if total is None else total}"
        )
    if prefer.applied:
        headers["Preference-Applied"] = ", ".join(prefer.applied)
    if prefer.return_ == "representation":
        return Response(
            outcome.body if outcome.body is not None else "[]",
            status_code=201 if method == "POST" else 200,
            media_type=media.content_type,
            headers=headers,
        )
    return Response(status_code=201 if method == "POST" else 204, headers=headers)


def routes(ctx: DevstackContext) -> list[BaseRoute]:
    """The `/rest/v1` routes over the context's pool and keys."""
    return RestApi(ctx).routes()
