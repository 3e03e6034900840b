"""The security settings: the part of the relay's configuration this package reads.

`hitl_relay.config.Settings` holds one as its `security` part; every variable here is an
ordinary `HITL_*` setting read from the environment and `.env`. Each has a safe default (see
`docs/security-settings.env`); `security_problems()` adds the cross-field rules to the one
`ConfigError` the relay refuses to start with.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from limits import RateLimitItem, parse_many
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hitl_relay.security.keys import key_problems

# One setting, several values: "a, b, c" in the environment.
CommaList = Annotated[list[str], NoDecode]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_limits(text: str) -> list[RateLimitItem]:
    """`"300/second;6000/minute"` → limits' items; empty or `off` → no limit."""
    if text.strip().lower() in ("", "off", "none"):
        return []
    return list(parse_many(text))


class SecuritySettings(BaseSettings):
    """Bearer keys, rate limits, origins, networks, Retell signatures, callbacks, audit."""

    model_config = SettingsConfigDict(
        env_prefix="HITL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # --- keys (HITL_API_KEYS lives in Settings: plain keys or `sha256:<hex>` of a key) ---
    # Keys refused even when listed in HITL_API_KEYS: `sha256:<hex>` (or bare hex) of each.
    revoked_keys: CommaList = Field(default_factory=list)
    # More known-leaked keys (same form); the integration plan's published key is built in.
    compromised_keys: CommaList = Field(default_factory=list)
    # Serve without any API key (`hitl-relay serve --insecure-local`): loopback only.
    insecure_local: bool = False

    # --- rate limits (limits' notation, `;` between several; `off` disables one) ---
    # Every request from one client address, counted BEFORE authentication (flood guard).
    rate_limit_per_ip: str = "1000/second;30000/minute"
    # Failed authentications from one address; once spent, that address gets 429 before any
    # key is even compared.
    rate_limit_auth_failures_per_ip: str = "20/minute"
    # Requests per API key (every MCP request; Retell sends all of an agent's calls with one
    # key, so this must absorb bursts).
    rate_limit_per_key: str = "1000/second;30000/minute"
    # ask_human calls per phone call id (a runaway agent loop is refused, the call is not).
    rate_limit_per_call: str = "30/minute"
    # `memory`: this process only; `postgres`: counters in the platform database (the
    # `hitl_rate_limit_hit` function), so limits hold across replicas.
    rate_limit_storage: Literal["memory", "postgres"] = "memory"

    # --- browsers, hosts, networks ---
    # Origins allowed for CORS and by Origin validation (exact, or `http://localhost:*`).
    allowed_origins: CommaList = Field(default_factory=list)
    # Host header values the MCP endpoint accepts (DNS-rebinding protection), e.g.
    # `relay.example.com`; loopback names are always accepted when serving on loopback.
    allowed_hosts: CommaList = Field(default_factory=list)
    # Client addresses allowed at all (CIDRs); empty: any address.
    ip_allowlist: CommaList = Field(default_factory=list)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (CIDRs).
    trusted_proxies: CommaList = Field(default_factory=list)
    # Plain-HTTP requests: `off` (served), `reject` (403) or `redirect` (308 to https).
    https_mode: Literal["off", "reject", "redirect"] = "off"
    # Largest request body accepted (bytes); larger → 413.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    # --- Retell custom function (POST /retell/ask_human) ---
    retell_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HITL_RETELL_API_KEY", "RETELL_API_KEY")
    )

    # --- outgoing callbacks ---
    # Every case's answer (and first timeout) is POSTed here, signed with HITL_CALLBACK_SECRET
    # (`x-hitl-signature`); stored on the case, so a late answer still reaches it.
    callback_url: str | None = None
    callback_secret: SecretStr | None = None
    # Run the delivery worker that claims due callbacks from the platform (any replica may):
    # unset = on when HITL_CALLBACK_URL is set and the backend is supabase.
    callback_worker: bool | None = None
    # Allow callbacks to http:// and to private, loopback or link-local addresses (local use).
    callback_allow_private: bool = False
    # One delivery attempt's time limit, and the whole delivery's (all retries) time budget.
    callback_timeout_seconds: float = Field(10.0, gt=0, le=120)
    callback_budget_seconds: float = Field(60.0, gt=0, le=3600)

    # --- audit and logs ---
    # Where auth failures, rate-limit refusals and webhook events are recorded: `auto`
    # (hil_audit through the platform with the supabase backend, the log otherwise), `log`,
    # `supabase`, `none`.
    audit_sink: Literal["auto", "log", "supabase", "none"] = "auto"
    # Keep question, context and answer text out of plain logs.
    redact_logs: bool = True

    @field_validator(
        "revoked_keys",
        "compromised_keys",
        "allowed_origins",
        "allowed_hosts",
        "ip_allowlist",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator(
        "callback_worker", "callback_url", "callback_secret", "retell_api_key", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `HITL_CALLBACK_URL=` in a .env file means "not set", as in .env.example.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ip_allowlist", "trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return value

    @field_validator("revoked_keys", "compromised_keys")
    @classmethod
    def _hashes(cls, value: list[str]) -> list[str]:
        for entry in value:
            digest = entry.removeprefix("sha256:")
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError("each entry must be sha256:<64 hex digits> of a key")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "*" and not entry.startswith(("http://", "https://")):
                raise ValueError(f"{entry!r} must start with http:// or https://")
            if entry == "*":
                raise ValueError("'*' is not allowed: list each origin")
        return [entry.rstrip("/") for entry in value]

    @field_validator(
        "rate_limit_per_ip",
        "rate_limit_auth_failures_per_ip",
        "rate_limit_per_key",
        "rate_limit_per_call",
    )
    @classmethod
    def _limits(cls, value: str) -> str:
        try:
            parse_limits(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate limit (examples: '300/second', '30/minute;500/hour', "
                "'off')"
            ) from None
        return value

    def problems(self, *, api_keys: list[str], host: str) -> list[str]:
        """Cross-field security rules, with the relay's keys and host; one line each (empty when
        consistent)."""
        keys = api_keys
        out = key_problems(
            keys,
            revoked=self.revoked_keys,
            compromised=self.compromised_keys,
            # Only the HTTP server needs a key, and long ones (SecurityLayer checks both);
            # a compromised or malformed key is refused everywhere.
            require_key=False,
            min_length=0,
        )
        if self.callback_url:
            schemes = ("https://", "http://") if self.callback_allow_private else ("https://",)
            if not self.callback_url.startswith(schemes):
                out.append(
                    "HITL_CALLBACK_URL: must be an https:// URL "
                    "(http:// only with HITL_CALLBACK_ALLOW_PRIVATE=true)"
                )
            secret = self.callback_secret.get_secret_value() if self.callback_secret else ""
            if len(secret) < 16:
                out.append(
                    "HITL_CALLBACK_SECRET: is required with HITL_CALLBACK_URL (at least 16 "
                    "characters; `hitl-relay keygen` makes one)"
                )
        if self.insecure_local and host not in LOOPBACK_HOSTS:
            out.append(
                "HITL_INSECURE_LOCAL: serving without API keys is allowed only on a loopback "
                f"address (HITL_HOST is {host})"
            )
        return out
