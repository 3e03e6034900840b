"""Bearer API keys: parse, check at start, compare in constant time, make new ones.

`HITL_API_KEYS` lists keys as plain text or as `sha256:<hex>` of the key (so a deployment may
keep only hashes; the prefix in any letter case). A plain entry of 64 hex digits is refused: it
reads as a hash, and taken as a key the hash itself would authenticate.
Several keys may be live at once (rotation: add the new key, move clients,
drop the old one); `HITL_REVOKED_KEYS` refuses keys by hash even while still listed.
Keys known to be public (the integration plan's example key is one) stop the relay at start.

Comparison hashes the presented key and compares SHA-256 digests with `hmac.compare_digest`
against every configured key, with no early exit: neither the key's length nor which key
matched shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hitl_relay.errors import ConfigError

# SHA-256 of keys that were published and must never be accepted. The first is the key printed
# in the original integration plan.
COMPROMISED_SHA256 = frozenset({"0955bb026c7699bd76e7daecf0993d6401e6bbebf06c1b7b64b543ad26aa2c16"})
KEY_PREFIX = "hitl_"
MIN_PLAIN_KEY_LENGTH = 16
HASH_PREFIX = "sha256:"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_fingerprint(digest: bytes) -> str:
    """A short, non-secret name for a key (audit `actor`, per-key limits): `key:<12 hex>`."""
    return "key:" + digest.hex()[:12]


def generate_key() -> str:
    """A new random API key: `hitl_` + 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def env_lines(key: str) -> list[str]:
    """The `.env` line for `key`, and its hashed form for deployments that keep only hashes."""
    return [
        f"HITL_API_KEYS={key}",
        f"HITL_API_KEYS={HASH_PREFIX}{hashlib.sha256(key.encode()).hexdigest()}",
    ]


def _is_hashed(text: str) -> bool:
    """`sha256:` in any letter case: a hashed entry, never a plain key."""
    return text[: len(HASH_PREFIX)].lower() == HASH_PREFIX


def _looks_like_a_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _hash_entry(entry: str) -> bytes | None:
    """The digest of a `sha256:<hex>` (or, in revocation lists, bare 64-hex) entry; None if it
    is not one."""
    text = entry.strip()
    bare = text[len(HASH_PREFIX) :] if _is_hashed(text) else text
    if _looks_like_a_hash(bare):
        try:
            return bytes.fromhex(bare)
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    fingerprint: str


class KeyRing:
    """The live API keys; `identify()` says which one a presented key is, or None."""

    def __init__(
        self,
        entries: Sequence[str],
        *,
        revoked: Iterable[str] = (),
        compromised: Iterable[str] = (),
        min_length: int = MIN_PLAIN_KEY_LENGTH,
    ) -> None:
        self.problems: list[str] = []
        revoked_digests = {d for d in (_hash_entry(r) for r in revoked) if d is not None}
        bad = set(COMPROMISED_SHA256) | {
            d.hex() for d in (_hash_entry(c) for c in compromised) if d is not None
        }
        keys: list[_Key] = []
        for number, entry in enumerate(entries, start=1):
            text = entry.strip()
            if _is_hashed(text):
                digest = _hash_entry(text)
                if digest is None:
                    self.problems.append(
                        f"HITL_API_KEYS: entry #{number} must be sha256:<64 hex digits>"
                    )
                    continue
            elif _looks_like_a_hash(text):
                # Taken as a plain key, a hash would make the hash itself a live key.
                self.problems.append(
                    f"HITL_API_KEYS: entry #{number} is 64 hex digits, which reads as a SHA-256 "
                    "hash: write a hashed key as sha256:<hex>; a plain key must not look like "
                    "one (make one with `hitl-relay keygen`)"
                )
                continue
            else:
                if len(text) < min_length:
                    self.problems.append(
                        f"HITL_API_KEYS: entry #{number} is too short (at least "
                        f"{min_length} characters; make one with `hitl-relay keygen`)"
                    )
                    continue
                digest = key_digest(text)
            if digest.hex() in bad:
                self.problems.append(
                    f"HITL_API_KEYS: entry #{number} ({key_fingerprint(digest)}) is a "
                    "compromised key (it has been published); remove it and make a new one "
                    "with `hitl-relay keygen`"
                )
                continue
            if digest in revoked_digests:
                continue  # listed but revoked: refused, like any unknown key
            keys.append(_Key(digest, key_fingerprint(digest)))
        self._keys = tuple(keys)

    @property
    def size(self) -> int:
        return len(self._keys)

    def identify(self, presented: str) -> str | None:
        """The fingerprint of the live key `presented` is, or None (constant time)."""
        candidate = key_digest(presented)
        found: str | None = None
        for key in self._keys:  # every key, no early exit
            if hmac.compare_digest(candidate, key.digest):
                found = key.fingerprint
        return found

    def identify_authorization(self, authorization: str | None) -> str | None:
        """The key fingerprint for an `Authorization: Bearer <key>` header value, or None."""
        presented = bearer_token(authorization)
        if presented is None:
            return None
        return self.identify(presented)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, presented = authorization.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return None
    return presented


def key_problems(
    entries: Sequence[str],
    *,
    revoked: Iterable[str] = (),
    compromised: Iterable[str] = (),
    require_key: bool,
    min_length: int = MIN_PLAIN_KEY_LENGTH,
) -> list[str]:
    """Why the relay must not start with these keys (empty: fine)."""
    ring = KeyRing(entries, revoked=revoked, compromised=compromised, min_length=min_length)
    problems = list(ring.problems)
    if require_key and not problems and ring.size == 0:
        problems.append(
            "HITL_API_KEYS: is required (make one with `hitl-relay keygen`); "
            "`--insecure-local` serves without keys on loopback only"
            + (" (every listed key is revoked)" if entries else "")
        )
    return problems


def keyring_or_refuse(
    entries: Sequence[str],
    *,
    revoked: Iterable[str] = (),
    compromised: Iterable[str] = (),
    require_key: bool,
) -> KeyRing:
    """The key ring, or `ConfigError` naming each problem (compromised, malformed, none)."""
    revoked = list(revoked)
    compromised = list(compromised)
    problems = key_problems(
        entries, revoked=revoked, compromised=compromised, require_key=require_key
    )
    if problems:
        raise ConfigError(problems)
    return KeyRing(entries, revoked=revoked, compromised=compromised)
