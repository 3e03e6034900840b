"""The one home of every input bound and rule: lengths, time limits, the id rule, options, what
JSON is accepted, and how a validation error becomes an `InvalidRequest` naming the field and the
rule ("priority: must be between 1 and 5"). `models` re-exports them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from hitl_relay.errors import InvalidRequest

QUESTION_MAX = 2000
CONTEXT_MAX = 8000
ID_MAX = 128
CALLER_INFO_MAX_BYTES = 16 * 1024
HISTORY_MAX_TURNS = 200
TURN_CONTENT_MAX = 8000
# A call's time limit in seconds: the bounds' one home (the settings, the CLI, the memory twin
# import them; hitl_open_case and hitl_continue_case in SQL are tested against them).
TIMEOUT_MIN = 5
TIMEOUT_MAX = 600
TIMEOUT_DEFAULT = 45
# The id rule (session, call and agent ids), as the SQL's `hitl_id` states it.
ID_RULE = f"must be 1 to {ID_MAX} printable characters"
# One-tap answers: the bounds' one home (hitl_option_bounds() in SQL is tested against them).
OPTIONS_MIN = 2
OPTIONS_MAX = 6
OPTION_MAX_CHARS = 80
SKILLS_MAX = 8
SKILL_MAX_CHARS = 64


# Deeper nesting than any caller description needs; deeper JSON is refused, never walked
# partly (a check that stops at some depth lets what lies below reach Postgres).
JSON_MAX_DEPTH = 32
NON_FINITE_RULE = "must hold only finite numbers (no NaN, Infinity, or values such as 1e400)"


def value_problem(value: object) -> str | None:
    """Why `value` (decoded JSON) cannot be stored in Postgres text/jsonb, or None.

    Walks every key and value iteratively, so no depth escapes it: U+0000 in any string
    (Postgres text and jsonb cannot hold it), a non-finite float (NaN, Infinity, or 1e400,
    which JSON decoders turn into infinity), nesting deeper than JSON_MAX_DEPTH.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL (U+0000) characters"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return NON_FINITE_RULE
        elif isinstance(item, Mapping | list | tuple):
            if depth >= JSON_MAX_DEPTH:
                return f"must be nested at most {JSON_MAX_DEPTH} levels deep"
            if isinstance(item, Mapping):
                for k, v in item.items():
                    stack.append((k, depth + 1))
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (readers disagree on which one counts)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key[:64]!r} in a JSON object")
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads_strict(data: bytes | str) -> Any:
    """`json.loads` refusing duplicate keys at any depth (DuplicateKeyError); what the relay
    reads itself (the rate limiter's call ids, the Retell body) so it never reads a body in a
    way the tool would read differently. Raises ValueError (or RecursionError) on bad JSON."""
    return json.loads(data, object_pairs_hook=_no_duplicates)


def call_id_of(arguments: Mapping[str, Any]) -> str | None:
    """The call id the tool will use for these arguments (None when it will refuse them)."""
    if "call_id" in arguments and "callId" in arguments:
        return None
    value = arguments.get("call_id", arguments.get("callId"))
    return value if isinstance(value, str) and value else None


def option_rule(options: list[str]) -> list[str]:
    """The options trimmed, or ValueError naming the rule (the tool's and the memory twin's
    check; `hitl_options` in SQL applies the same bounds)."""
    if not OPTIONS_MIN <= len(options) <= OPTIONS_MAX:
        raise ValueError(f"must have {OPTIONS_MIN} to {OPTIONS_MAX} items (got {len(options)})")
    cleaned = [v.strip() for v in options]
    for number, text in enumerate(cleaned):
        if not text:
            raise ValueError(f"item {number} must not be empty")
        if len(text) > OPTION_MAX_CHARS:
            raise ValueError(f"item {number} must be at most {OPTION_MAX_CHARS} characters")
        if text.lower() in (t.lower() for t in cleaned[:number]):
            raise ValueError(f"item {number} repeats an earlier option")
    return cleaned


def printable_id(value: str) -> str:
    """`value` if it is an id (`ID_RULE`: not blank, printable, at most `ID_MAX` characters)."""
    if not value.strip() or len(value) > ID_MAX or not value.isprintable():
        raise ValueError(ID_RULE)
    return value


# Rules stated once per field, so every range error on it reads the same.
_FIELD_RULES = {
    "question": f"must be 1 to {QUESTION_MAX} characters",
    "context": f"must be at most {CONTEXT_MAX} characters",
    "session_id": ID_RULE,
    "call_id": ID_RULE,
    "agent_id": ID_RULE,
    "priority": "must be between 1 and 5",
    "urgency": "must be one of low, medium, high",
    "timeout_seconds": f"must be between {TIMEOUT_MIN} and {TIMEOUT_MAX}",
    "case_id": "must be a case id (a UUID)",
    "options": f"must have {OPTIONS_MIN} to {OPTIONS_MAX} items",
}
_RANGE_TYPES = {
    "greater_than_equal",
    "less_than_equal",
    "greater_than",
    "less_than",
    "string_too_short",
    "string_too_long",
    "int_parsing",
    "int_type",
    "int_from_float",
    "literal_error",
    "string_type",
    "enum",
}


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "arguments"


def _rule(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    loc = tuple(err.get("loc", ()))
    if kind == "missing":
        return "is required"
    if len(loc) == 1 and str(loc[0]) in _FIELD_RULES and kind in _RANGE_TYPES:
        return _FIELD_RULES[str(loc[0])]
    if kind == "value_error":
        return str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    fixed = {
        "string_too_short": "must not be empty",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    return str(err.get("msg", "is invalid")).lower()


def invalid_request_from(error: ValidationError) -> InvalidRequest:
    """One `InvalidRequest` for a pydantic error: the first problem, all of them in `problems`."""
    problems = [(_location(tuple(e["loc"])), _rule(e)) for e in error.errors()]
    if not problems:  # pragma: no cover - pydantic always reports at least one
        problems = [("arguments", "are invalid")]
    return InvalidRequest(problems[0][0], problems[0][1], also=problems[1:])
