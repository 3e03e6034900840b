"""The request's role and claims from its bearer token, checked as PostgREST checks it."""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hitl_devstack.rest.errors import PgrstError
from hitl_devstack.rest.settings import ANON_ROLE, JWT_SKEW_S


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
