"""PostgREST's error shapes: its own errors, and Postgres errors mapped to HTTP as it maps them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from starlette.responses import Response

from hitl_devstack.rest.settings import ANON_ROLE


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


def singular(rows: int) -> PgrstError:
    return PgrstError(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        f"The result contains {rows} rows",
    )


def column_not_found(table: str, column: str) -> PgrstError:
    return PgrstError(
        400, "PGRST204", f"Could not find the '{column}' column of '{table}' in the schema cache"
    )
