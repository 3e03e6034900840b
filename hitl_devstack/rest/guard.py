"""The gateway checks every `/rest/v1` request passes (the schema profile, the JWT) and the error
rendering at the request boundary: what a handler raises becomes PostgREST's status and body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from hitl_devstack.rest.errors import PgrstError, error_response, postgres_error_response
from hitl_devstack.rest.settings import ANON_ROLE, EXPOSED_SCHEMAS
from hitl_devstack.rest.tokens import Auth, authenticate

log = logging.getLogger("hitl_devstack.rest")

Handler = Callable[[Request, Auth], Awaitable[Response]]


async def guarded(request: Request, handler: Handler, jwt_secret: str) -> Response:
    """The handler's response, or the PostgREST-shaped error for whatever it raised."""
    auth: Auth | None = None
    try:
        check_profile(request)
        auth = authenticate(request.headers, jwt_secret)
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
        log.warning("database unreachable during %s %s: %s", request.method, request.url.path, e)
        return error_response(
            503, "PGRST000", "Database connection error. Retrying the connection.", str(e)
        )
    except Exception:  # request boundary: logged, the caller gets a generic 500
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(
            500, "PGRSTX00", "Internal server error", "The devstack logged the error."
        )


def check_profile(request: Request) -> None:
    """Accept-Profile (reads) or Content-Profile (writes) must name an exposed schema."""
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
