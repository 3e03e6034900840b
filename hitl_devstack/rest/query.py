"""PostgREST's request grammar (select, filters, logic trees, order, limit/offset, Prefer, the
JSON body) turned into SQL with bind parameters."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.requests import Request

from hitl_devstack.rest.errors import PgrstError, parse_error
from hitl_devstack.rest.schema import JSON_TYPES, Column, quote

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


class Params:
    """Bind parameters of one statement: `add` returns the placeholder.

    A request runs as one call of `pg_temp.devstack_request` (`statements.REQUEST_FUNCTION`), which
    EXECUTEs the statement with one text array: the placeholder is that array's element, as text.
    Every placeholder is cast where it is used (`::int`, `::json`, `::text::<column type>`), so
    text converts as a bound parameter of that type would."""

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


def unquote_ident(token: str) -> str:
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
    name = unquote_ident(tokens[0].strip())
    column = columns.get(name)
    if column is None:
        raise PgrstError(400, "42703", f"column {table_name}.{name} does not exist")
    path = []
    for i in range(1, len(tokens), 2):
        key = unquote_ident(tokens[i + 1].strip()) if i + 1 < len(tokens) else ""
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
            label, item = unquote_ident(m.group(1)), m.group(2)
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


def where_sql(
    request: Request,
    table_name: str,
    columns: Mapping[str, Column],
    alias: str,
    params: Params,
    skip: frozenset[str] = frozenset(),
) -> str:
    """The request's filters and logic trees as a WHERE clause ("" if none); `skip` names query
    parameters that are not filters (a GET call's function arguments)."""
    conditions = []
    for key, value in request.query_params.multi_items():
        if key in RESERVED_PARAMS or key in skip:
            continue
        if key in LOGIC_PARAMS:
            conditions.append(logic_sql(key, value, table_name, columns, alias, params))
        else:
            conditions.append(filter_sql(key, value, table_name, columns, alias, params))
    return (" where " + " and ".join(conditions)) if conditions else ""


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


def non_negative_int(name: str, value: str | None) -> int | None:
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


async def json_body(request: Request, empty_ok: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if empty_ok:
            return None
        raise PgrstError(400, "PGRST102", "Empty or invalid json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PgrstError(400, "PGRST102", "Empty or invalid json") from None
