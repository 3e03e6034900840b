"""JWT keys for the local stack, shaped like Supabase's local-dev keys.

Supabase signs HS256 JWTs with a project secret; `anon` and `service_role` keys carry
`{"iss": "supabase-demo", "role": ..., "exp": ...}`. We keep that shape but generate the secret
per checkout (stored in `.hitl/jwt_secret`, never in git), so no two machines share keys.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

SUPABASE_LOCAL_EXP = 1983812996  # the exp of the Supabase CLI's demo keys (2032)
OPERATOR_ROLE_CLAIM = "hitl_role"  # app_metadata.hitl_role == "operator" marks an operator


class TokenError(Exception):
    """A token was refused. `kind` names the Supabase error family, `message` its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class LocalKeys:
    jwt_secret: str
    anon_key: str
    service_role_key: str

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def user_token(
        self,
        user_id: str | None = None,
        *,
        email: str | None = None,
        operator: bool = True,
        ttl_s: int = 24 * 3600,
    ) -> str:
        """An `authenticated` user's access token, as Supabase Auth would issue it."""
        now = int(time.time())
        sub = user_id or str(uuid.uuid4())
        return self.sign(
            {
                "iss": "supabase-demo",
                "aud": "authenticated",
                "sub": sub,
                "email": email or f"{sub[:8]}@operators.local",
                "role": "authenticated",
                "app_metadata": {
                    "provider": "email",
                    **({OPERATOR_ROLE_CLAIM: "operator"} if operator else {}),
                },
                "user_metadata": {},
                "iat": now,
                "exp": now + ttl_s,
            }
        )

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a valid token; TokenError with Supabase's wording otherwise."""
        return verify(token, self.jwt_secret)


def verify(token: str, secret: str) -> dict[str, Any]:
    if not token:
        raise TokenError("MissingToken", "API key is missing")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], options={"verify_aud": False, "require": []}
        )
    except jwt.ExpiredSignatureError:
        try:
            exp = int(jwt.decode(token, options={"verify_signature": False})["exp"])
        except (jwt.DecodeError, KeyError, TypeError, ValueError):  # only the age is missing
            exp = int(time.time())
        raise TokenError(
            "InvalidJWTToken", f"Token has expired {int(time.time()) - exp} seconds ago"
        ) from None
    except jwt.InvalidSignatureError:
        raise TokenError("JwtSignatureError", "Failed to validate JWT signature") from None
    except jwt.DecodeError:
        raise TokenError("MalformedJWT", "The token provided is not a valid JWT") from None
    except jwt.InvalidTokenError as e:
        raise TokenError("MalformedJWT", f"The token provided is not a valid JWT: {e}") from None
    if "role" not in claims or "exp" not in claims:
        raise TokenError("InvalidJWTToken", "Fields `role` and `exp` are required in JWT")
    return claims


def make_keys(secret: str) -> LocalKeys:
    exp = SUPABASE_LOCAL_EXP  # fixed, so one secret always yields the same two keys

    def key(role: str) -> str:
        return jwt.encode({"iss": "supabase-demo", "role": role, "exp": exp}, secret, "HS256")

    return LocalKeys(jwt_secret=secret, anon_key=key("anon"), service_role_key=key("service_role"))


def load_or_create(home: Path | str = ".hitl") -> LocalKeys:
    """The checkout's keys: the secret is made once (48 random bytes) and kept in HITL_HOME."""
    path = Path(home) / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return make_keys(path.read_text().strip())
