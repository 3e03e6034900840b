"""The response: the media type from `Accept`, the rows' JSON envelope, status codes and
PostgREST's headers (Content-Range, Content-Profile, Preference-Applied)."""

# ruff: noqa: S608 - SQL is built from catalog identifiers (quoted) and bind placeholders only

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from hitl_devstack.rest.errors import PgrstError
from hitl_devstack.rest.query import Prefer
from hitl_devstack.rest.settings import SCHEMA

OBJECT_MEDIA = "application/vnd.pgrst.object+json"
ARRAY_MEDIA = "application/vnd.pgrst.array+json"


@dataclass
class Outcome:
    """What a statement produced: the JSON text of the rows, their number, the total."""

    body: str | None
    rows: int
    total: int | None = None


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


def envelope(source: str, total: str, media: Media) -> str:
    """Wrap a row source so the statement returns (body json text, rows, total)."""
    rows = "json_strip_nulls(json_agg(_t))" if media.strip_nulls else "json_agg(_t)"
    body = (
        f"case when count(*) = 1 then ({rows} -> 0)::text end"
        if media.single
        else f"coalesce({rows}, '[]')::text"
    )
    return f"select {body} as body, count(*) as rows, {total} as total from ({source}) _t"


def value_response(body: str | None, head: bool, media: Media | None = None) -> Response:
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


def read_response(
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


def write_response(method: str, outcome: Outcome, media: Media, prefer: Prefer) -> Response:
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
