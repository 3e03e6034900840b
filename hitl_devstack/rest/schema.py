"""The schema cache: the exposed schema's tables and functions, read from the catalog."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from hitl_devstack.rest.errors import PgrstError
from hitl_devstack.rest.settings import SCHEMA

JSON_TYPES = frozenset({"json", "jsonb"})


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
