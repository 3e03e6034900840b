"""API keys for the local stack, shaped like Supabase's keys.

Legacy keys: Supabase signs HS256 JWTs with a project secret; `anon` and `service_role` keys carry
`{"iss": "supabase-demo", "role": ..., "exp": ...}` (supabase/cli
apps/cli-go/pkg/config/apikeys.go).
New keys: an opaque `sb_publishable_…` and `sb_secret_…`, made as Supabase's self-hosting script
makes them (supabase/supabase docker/utils/add-new-auth-keys.sh: prefix + 22 random base64url
characters + `_` + the first 8 base64url characters of sha256("<project ref>|<prefix+random>")).
They are not JWTs: the API gateway swaps them for the anon / service_role JWT (`gateway.py`).
We keep those shapes but derive everything from a secret made per checkout (stored in
`.hitl/jwt_secret`, never in git), so no two machines share keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

SUPABASE_LOCAL_EXP = 1983812996  # the exp of the Supabase CLI's demo keys (2032)
OPERATOR_ROLE_CLAIM = "hitl_role"  # app_metadata.hitl_role == "operator" marks an operator
PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"
OPAQUE_PREFIX = "sb_"
PROJECT_REF = "hitl-devstack"  # the checksum's project ref (Supabase: the project's ref)


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
    publishable_key: str = ""
    secret_key: str = ""

    def opaque_key_jwt(self, key: str) -> str | None:
        """The JWT the gateway puts in place of a new API key; None for any other string."""
        if key and hmac.compare_digest(key, self.secret_key):
            return self.service_role_key
        if key and hmac.compare_digest(key, self.publishable_key):
            return self.anon_key
        return None

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def user_token(
        self,
        user_id: str | None = None,
        *,
        email: str | None = None,
        operator: bool = True,
        ttl_s: int = 24 * 3600,
        skills: Sequence[str] | None = None,
    ) -> str:
        """An `authenticated` user's access token, as Supabase Auth would issue it (`skills`:
        the operator's app_metadata.hitl_skills, which routing reads)."""
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
                    **({"hitl_skills": list(skills)} if skills is not None else {}),
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


def opaque_key(prefix: str, random_part: str, project_ref: str = PROJECT_REF) -> str:
    """`<prefix><22 chars>_<checksum>` as add-new-auth-keys.sh's generateOpaqueKey builds it."""
    intermediate = prefix + random_part
    digest = hashlib.sha256(f"{project_ref}|{intermediate}".encode()).digest()
    return f"{intermediate}_{_b64url(digest)[:8]}"


def opaque_key_is_well_formed(key: str, project_ref: str = PROJECT_REF) -> bool:
    """True when `key` is a new API key whose checksum matches `project_ref`."""
    for prefix in (PUBLISHABLE_PREFIX, SECRET_PREFIX):
        if key.startswith(prefix):
            random_part = key[len(prefix) : len(prefix) + 22]
            return hmac.compare_digest(key, opaque_key(prefix, random_part, project_ref))
    return False


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def make_keys(secret: str) -> LocalKeys:
    exp = SUPABASE_LOCAL_EXP  # fixed, so one secret always yields the same keys

    def key(role: str) -> str:
        return jwt.encode({"iss": "supabase-demo", "role": role, "exp": exp}, secret, "HS256")

    def new_key(prefix: str) -> str:
        # derived (HMAC of the secret), not stored: the secret file stays the only secret
        random_part = _b64url(hmac.digest(secret.encode(), prefix.encode(), "sha256"))[:22]
        return opaque_key(prefix, random_part)

    return LocalKeys(
        jwt_secret=secret,
        anon_key=key("anon"),
        service_role_key=key("service_role"),
        publishable_key=new_key(PUBLISHABLE_PREFIX),
        secret_key=new_key(SECRET_PREFIX),
    )


def load_or_create(home: Path | str = ".hitl") -> LocalKeys:
    """The checkout's keys: the secret is made once (48 random bytes) and kept in HITL_HOME."""
    path = Path(home) / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return make_keys(path.read_text().strip())
