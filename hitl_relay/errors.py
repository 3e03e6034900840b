"""The relay's errors: a small tree, each leaf mapped to exactly one response.

    HitlError                      root; never shown to a caller with a stack trace
    ├── InvalidRequest(field, rule)   bad tool input  → MCP tool result isError, HTTP 422
    ├── PlatformUnavailable           Supabase unreachable/failing → `platform_unreachable`
    ├── NotFound                      unknown case id → MCP isError / HTTP 404
    ├── DeliveryFailed                a notification channel refused or was unreachable (logged)
    └── ConfigError(problems)         invalid settings → the process refuses to start

Adapters translate their libraries' exceptions into these; nothing above the ports sees an
httpx, postgrest or websocket error.
"""

from __future__ import annotations

from collections.abc import Sequence


class HitlError(Exception):
    """Root of every error the relay raises on purpose."""


class InvalidRequest(HitlError):
    """The caller's input breaks a rule: `field` names the input field, `rule` what it must be."""

    def __init__(self, field: str, rule: str, *, also: Sequence[tuple[str, str]] = ()) -> None:
        self.field = field
        self.rule = rule
        # Every problem found, the first one being (field, rule): callers fix them all at once.
        self.problems: list[tuple[str, str]] = [(field, rule), *also]
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.problems))


class DeliveryFailed(HitlError):
    """A notification (webhook, e-mail) was not delivered; `retryable` when trying again may
    help (network errors, 429, 5xx, temporary SMTP failures)."""

    def __init__(self, detail: str, *, retryable: bool = True) -> None:
        self.detail = detail
        self.retryable = retryable
        super().__init__(detail)


class PlatformUnavailable(HitlError):
    """The platform (Supabase REST or Realtime) could not be reached or answered with a failure.

    Counts as a circuit-breaker failure. `detail` is for logs, never for the agent.
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class SchemaBehind(PlatformUnavailable):
    """The database has no such function: a migration this relay needs is not applied (for
    example one dated before the newest applied one, which `supabase db push` skips without
    `--include-all`). Postgres answered; asking again changes nothing until the migrations run."""


class NotFound(HitlError):
    """The named object (a case id, usually) does not exist or is not visible."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: not found")


class ConfigError(HitlError):
    """The configuration is invalid; `problems` holds one plain line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems))
