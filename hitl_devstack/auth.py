"""The Supabase Auth (GoTrue) subset of the devstack, mounted at `/auth/v1`.

Just enough for the operators' console to sign in with supabase-js `signInWithPassword` against
local users configured at start (`LocalUser`): `POST /token?grant_type=password`,
`POST /token?grant_type=refresh_token`, `GET /user`, `POST /logout`. Sessions are shaped as
GoTrue returns them (access_token, token_type, expires_in, expires_at, refresh_token, user); the
access token carries the claims RLS reads (`role`, `sub`, `email`,
`app_metadata.hitl_role`). Errors use GoTrue's API-version 2024-01-01 shape `{code, message}`.
Users and refresh tokens live in memory: nothing here is meant to outlive the process.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hitl_devstack.context import LocalUser, iso_utc
from hitl_devstack.keys import TokenError

if TYPE_CHECKING:
    from hitl_devstack.context import DevstackContext

API_VERSION = "2024-01-01"
ACCESS_TOKEN_TTL_S = 3600  # GoTrue's default jwt_expiry


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"code": code, "message": message},
        status_code=status,
        headers={"X-Supabase-Api-Version": API_VERSION},
    )


class AuthApi:
    def __init__(self, ctx: DevstackContext) -> None:
        self.ctx = ctx
        self.users = {u.email.lower(): u for u in ctx.users}
        self._refresh: dict[str, tuple[str, str]] = {}  # refresh token → (email, session id)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/token", self.token, methods=["POST"]),
            Route("/user", self.user, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/settings", self.settings, methods=["GET"]),
        ]

    async def health(self, _: Request) -> Response:
        return JSONResponse({"name": "GoTrue", "description": "hitl-relay devstack auth subset"})

    async def settings(self, _: Request) -> Response:
        return JSONResponse(
            {
                "external": {"email": True},
                "disable_signup": True,
                "mailer_autoconfirm": True,
                "phone_autoconfirm": False,
                "sms_provider": "",
            }
        )

    async def token(self, request: Request) -> Response:
        grant = request.query_params.get("grant_type")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "bad_json", "Could not parse request body as JSON")
        if not isinstance(body, dict):
            return _error(400, "bad_json", "Could not parse request body as JSON")
        if grant == "password":
            email = str(body.get("email") or "").strip().lower()
            password = str(body.get("password") or "")
            user = self.users.get(email)
            if not email or not password:
                return _error(400, "validation_failed", "missing email or phone")
            if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
                return _error(400, "invalid_credentials", "Invalid login credentials")
            return JSONResponse(self._session(user, str(uuid.uuid4()), _issuer(request)))
        if grant == "refresh_token":
            found = self._refresh.pop(str(body.get("refresh_token") or ""), None)
            if found is None or found[0] not in self.users:
                return _error(
                    400,
                    "refresh_token_not_found",
                    "Invalid Refresh Token: Refresh Token Not Found",
                )
            return JSONResponse(self._session(self.users[found[0]], found[1], _issuer(request)))
        return _error(400, "unsupported_grant_type", "unsupported_grant_type")

    async def user(self, request: Request) -> Response:
        claims = self._claims(request)
        if isinstance(claims, Response):
            return claims
        user = self.users.get(str(claims.get("email", "")).lower())
        if user is None or user.id != claims.get("sub"):
            return _error(403, "user_not_found", "User from sub claim in JWT does not exist")
        return JSONResponse(user.as_json())

    async def logout(self, request: Request) -> Response:
        claims = self._claims(request)
        if isinstance(claims, Response):
            return claims
        session = claims.get("session_id")
        for token, (_, sid) in list(self._refresh.items()):
            if sid == session:
                del self._refresh[token]
        return Response(status_code=204)

    def _claims(self, request: Request) -> dict[str, Any] | Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "no_authorization", "This endpoint requires a Bearer token")
        try:
            claims = self.ctx.keys.verify(token.strip())
        except TokenError as e:
            return _error(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {e}")
        if claims.get("role") != "authenticated":
            return _error(403, "bad_jwt", "invalid claim: missing sub claim")
        return claims

    def _session(self, user: LocalUser, session_id: str, issuer: str) -> dict[str, Any]:
        now = int(time.time())
        expires_at = now + ACCESS_TOKEN_TTL_S
        access_token = self.ctx.keys.sign(
            {
                "iss": issuer,
                "aud": "authenticated",
                "sub": user.id,
                "email": user.email,
                "phone": "",
                "app_metadata": user.app_metadata(),
                "user_metadata": {},
                "role": "authenticated",
                "aal": "aal1",
                "amr": [{"method": "password", "timestamp": now}],
                "session_id": session_id,
                "is_anonymous": False,
                "iat": now,
                "exp": expires_at,
            }
        )
        refresh_token = secrets.token_urlsafe(24)
        self._refresh[refresh_token] = (user.email.lower(), session_id)
        return {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_TTL_S,
            "expires_at": expires_at,
            "refresh_token": refresh_token,
            "user": user.as_json(iso_utc(now)),
        }


def _issuer(request: Request) -> str:
    """GoTrue's `iss`: the auth API's own URL (`http://127.0.0.1:54321/auth/v1`)."""
    return str(request.base_url).rstrip("/")


def routes(ctx: DevstackContext) -> list[BaseRoute]:
    """The `/auth/v1` routes over the context's keys and local users."""
    return AuthApi(ctx).routes()
