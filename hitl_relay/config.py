"""The relay's configuration: one `Settings`, from the environment and `.env`, checked at start.

Variables are `HITL_*`, except Supabase's own three (`SUPABASE_URL`, `SUPABASE_SERVICE_ROLE_KEY`,
`SUPABASE_ANON_KEY`), named as the Supabase dashboard and CLI name them. `load_settings()` turns
every problem into one plain line of a `ConfigError`, so a bad deployment says all that is
wrong at once and never starts half-configured.
"""

from __future__ import annotations

import socket
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode

from hitl_relay.adapters.platform_options import PlatformOptions
from hitl_relay.errors import ConfigError
from hitl_relay.models import TIMEOUT_DEFAULT, TIMEOUT_MAX, TIMEOUT_MIN
from hitl_relay.options import DEFAULT_FALLBACKS, Fallbacks, RelayOptions
from hitl_relay.security.settings import SecuritySettings


def _unprefixed(name: str) -> Any:
    # Supabase's variables keep their own names; HITL_-prefixed spellings are accepted too.
    return AliasChoices(name, f"HITL_{name}")


# A catch-up read more often than this would poll the platform rather than back Realtime up.
MIN_CATCH_UP_INTERVAL_S = 0.5

# The names the security part is given by (its fields and their environment aliases).
_SECURITY_NAMES = frozenset(SecuritySettings.model_fields) | {
    str(choice)
    for info in SecuritySettings.model_fields.values()
    if isinstance(info.validation_alias, AliasChoices)
    for choice in info.validation_alias.choices
}


class Settings(BaseSettings):
    """Everything the relay reads from its environment (see `.env.example` for each setting).

    Composed of parts: the security variables (keys, rate limits, origins, networks, Retell,
    callbacks, audit) are `security`, a `hitl_relay.security.settings.SecuritySettings` read
    from the same environment and `.env`; `relay_options()` and `platform_options()` are what
    the core and the Supabase adapter are given.
    """

    # The same sources as the security part: HITL_* variables and `.env`.
    model_config = SecuritySettings.model_config

    # Which platform adapter serves the ports: `supabase` in every real deployment; `memory`
    # (an in-process twin, no persistence) only for tests and demos.
    backend: Literal["supabase", "memory"] = "supabase"

    supabase_url: str | None = Field(None, validation_alias=_unprefixed("SUPABASE_URL"))
    # The legacy service_role JWT or a new secret key (`sb_secret_…`, Supabase's name for it is
    # SUPABASE_SECRET_KEY): supabase-py sends either as `apikey` and bearer, and the gateway
    # turns a secret key into the service role.
    supabase_service_role_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "SUPABASE_SERVICE_ROLE_KEY",
            "HITL_SUPABASE_SERVICE_ROLE_KEY",
            "SUPABASE_SECRET_KEY",
            "HITL_SUPABASE_SECRET_KEY",
        ),
    )
    supabase_anon_key: SecretStr | None = Field(
        None, validation_alias=_unprefixed("SUPABASE_ANON_KEY")
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Bearer keys accepted on /mcp, comma separated (several at once for rotation).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # A call's time limit: the default and the window a tool call may choose from, inside the
    # bounds every layer enforces (models.TIMEOUT_MIN/MAX, which SQL checks again).
    default_timeout_seconds: int = Field(TIMEOUT_DEFAULT, ge=TIMEOUT_MIN, le=TIMEOUT_MAX)
    min_timeout_seconds: int = Field(TIMEOUT_MIN, ge=TIMEOUT_MIN, le=TIMEOUT_MAX)
    max_timeout_seconds: int = Field(TIMEOUT_MAX, ge=TIMEOUT_MIN, le=TIMEOUT_MAX)
    # MCP tasks: the poll interval suggested to clients (ms), the cost of one indexed read each.
    task_poll_interval_ms: int = Field(1000, ge=100, le=60_000)
    # ... and the task polls a second one replica invites at most: with more live tasks than
    # this times the interval, the suggested interval grows (`RelayOptions.task_poll_interval`).
    task_polls_per_second: float = Field(50.0, gt=0, le=100_000)
    # How often a waiting call sends an MCP progress notification.
    progress_interval_seconds: float = Field(5.0, gt=0, le=60)
    # While calls wait, their cases are read in one batch this often (0: never): Realtime drops
    # broadcasts without telling anyone (over a plan's messages per second, for one).
    catch_up_interval_seconds: float = Field(5.0, ge=0, le=60)
    # How long a case stays answerable by operators (and `get_human_answer`); None: platform's 1 h.
    case_ttl_seconds: int | None = Field(None, ge=60, le=7 * 86400)

    fallback_no_operator: str = Field(DEFAULT_FALLBACKS["no_operator"], min_length=1)
    fallback_platform_unreachable: str = Field(
        DEFAULT_FALLBACKS["platform_unreachable"], min_length=1
    )
    fallback_timeout: str = Field(DEFAULT_FALLBACKS["timeout"], min_length=1)
    fallback_unclear_answer: str = Field(DEFAULT_FALLBACKS["unclear_answer"], min_length=1)

    # With nobody present on `operators`, record the case and answer `no_operator` at once
    # (with its case id) instead of waiting for an operator who is not there.
    no_operator_answers_at_once: bool = True
    presence_cache_ttl_seconds: float = Field(0.5, ge=0, le=1.0)
    channels_per_socket: int = Field(100, ge=1, le=100)
    # Realtime channel joins this relay sends per second at most. Supabase limits joins per
    # project (Free 100/s, Pro 500/s), shared with the operators' app and every replica: the
    # default leaves Free half its budget; with N replicas use about limit / (2 * N).
    realtime_joins_per_second: float = Field(50.0, gt=0, le=10_000)
    # Seconds a single platform request (rpc, join) may take before it counts as a failure.
    platform_timeout_seconds: float = Field(5.0, gt=0, le=60)

    # This relay process's name in `hil_sessions.instance_id`: on start it closes the sessions
    # it was waiting on when it stopped (session recovery). It must stay the same across
    # restarts, so it defaults to the host name; replicas sharing a host must each set their own.
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)

    breaker_failure_threshold: int = Field(5, ge=1, le=1000)
    breaker_window_seconds: float = Field(30.0, gt=0, le=3600)
    breaker_reset_seconds: float = Field(10.0, gt=0, le=3600)
    # On SIGTERM: how long waiting calls may take to return their fallback before the process
    # stops anyway (they normally return within milliseconds; see Relay.drain).
    drain_timeout_seconds: float = Field(5.0, ge=0, le=60)
    # The garbage collector's full collection runs after this many generation-1 collections
    # (CPython's default: 10); see hitl_relay.gc_tuning for why a relay wants it rarer.
    gc_full_collection_every: int = Field(100, ge=1, le=100_000)
    # `hitl-relay serve` freezes the collector's survivors this often, so waiting calls leave
    # every automatic collection (hitl_relay.gc_tuning.FreezePolicy); 0 turns that off.
    gc_freeze_interval_seconds: float = Field(1.0, ge=0, le=60)
    # ... and after this many objects frozen since its last full pass runs one whatever it
    # costs, so reference cycles among frozen objects cannot pile up without bound.
    gc_freeze_cap_objects: int = Field(10_000_000, ge=100_000, le=1_000_000_000)

    # The plan's success figures on /metrics (hitl_success_rate, ...): computed by the database
    # over the last `success_window_seconds`, re-read in the background at most this often.
    success_window_seconds: float = Field(3600.0, ge=60, le=30 * 86400)
    success_refresh_seconds: float = Field(30.0, ge=1, le=3600)

    # Escalation (hitl_relay.escalation): how often this relay runs hitl_escalate and sends
    # its notifications (0: never; pg_cron still runs it every minute).
    escalation_interval_seconds: float = Field(5.0, ge=0, le=3600)
    # A Slack-compatible incoming webhook for escalations (the URL is the credential), and an
    # optional HMAC secret for receivers that verify `x-hitl-signature`.
    notify_webhook_url: SecretStr | None = None
    notify_webhook_secret: SecretStr | None = None
    # E-mail for escalations: SMTP server, STARTTLS before AUTH, sender and recipients.
    notify_smtp_host: str | None = None
    notify_smtp_port: int = Field(587, ge=1, le=65535)
    notify_smtp_username: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_smtp_starttls: bool = True
    notify_email_from: str = "hitl-relay@localhost"
    notify_email_to: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Demo/test backend only: a simulated operator answers every case with this text.
    memory_auto_answer: str | None = None
    memory_auto_answer_delay_seconds: float = Field(0.5, ge=0, le=600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    security: SecuritySettings

    def __init__(self, **values: Any) -> None:
        # The security part reads the same sources; its variables may be given here flat.
        if "security" not in values:
            given = {k: values.pop(k) for k in list(values) if k in _SECURITY_NAMES}
            sources = {k: values[k] for k in ("_env_file",) if k in values}
            values["security"] = SecuritySettings(**sources, **given)
        super().__init__(**values)

    @field_validator("api_keys", "notify_email_to", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("catch_up_interval_seconds")
    @classmethod
    def _check_catch_up(cls, value: float) -> float:
        if 0 < value < MIN_CATCH_UP_INTERVAL_S:
            raise ValueError(f"must be 0 (off) or at least {MIN_CATCH_UP_INTERVAL_S}")
        return value

    @field_validator("supabase_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def problems(self) -> list[str]:
        """Rules that span several settings; one line each (empty when consistent)."""
        out: list[str] = []
        if self.min_timeout_seconds > self.max_timeout_seconds:
            out.append("HITL_MIN_TIMEOUT_SECONDS: must not exceed HITL_MAX_TIMEOUT_SECONDS")
        if not self.min_timeout_seconds <= self.default_timeout_seconds <= self.max_timeout_seconds:
            out.append(
                "HITL_DEFAULT_TIMEOUT_SECONDS: must be between HITL_MIN_TIMEOUT_SECONDS "
                f"({self.min_timeout_seconds}) and HITL_MAX_TIMEOUT_SECONDS "
                f"({self.max_timeout_seconds})"
            )
        if self.backend == "supabase":
            if not self.supabase_url:
                out.append("SUPABASE_URL: is required (your project's API URL)")
            key = self.supabase_service_role_key
            if key is None:
                out.append(
                    "SUPABASE_SERVICE_ROLE_KEY: is required (the relay uses the service role; "
                    "a secret key sb_secret_… may be given as SUPABASE_SECRET_KEY instead)"
                )
            elif key.get_secret_value().startswith("sb_publishable_"):
                out.append(
                    "SUPABASE_SERVICE_ROLE_KEY: is a publishable key (sb_publishable_…), which "
                    "acts as anon; the relay needs a secret key (sb_secret_…) or the service_role "
                    "key"
                )
        out.extend(self.security.problems(api_keys=self.api_key_values(), host=self.host))
        return out

    def api_key_values(self) -> list[str]:
        return [key.get_secret_value() for key in self.api_keys]

    def relay_options(self) -> RelayOptions:
        """What the relay core is configured with."""
        secret = self.security.callback_secret
        return RelayOptions(
            default_timeout_s=self.default_timeout_seconds,
            min_timeout_s=self.min_timeout_seconds,
            max_timeout_s=self.max_timeout_seconds,
            platform_timeout_s=self.platform_timeout_seconds,
            progress_interval_s=self.progress_interval_seconds,
            catch_up_interval_s=self.catch_up_interval_seconds,
            no_operator_answers_at_once=self.no_operator_answers_at_once,
            case_ttl_s=self.case_ttl_seconds,
            callback_url=self.security.callback_url,
            webhook_secret=secret.get_secret_value() if secret else None,
            task_poll_interval_ms=self.task_poll_interval_ms,
            task_polls_per_second=self.task_polls_per_second,
            fallbacks=Fallbacks(
                no_operator=self.fallback_no_operator,
                platform_unreachable=self.fallback_platform_unreachable,
                timeout=self.fallback_timeout,
                unclear_answer=self.fallback_unclear_answer,
            ),
        )

    def platform_options(self) -> PlatformOptions:
        """What the Supabase adapter connects with."""
        key = self.supabase_service_role_key
        return PlatformOptions(
            url=self.supabase_url,
            service_role_key=key.get_secret_value() if key is not None else None,
            timeout_s=self.platform_timeout_seconds,
            instance_id=self.instance_id,
            presence_cache_ttl_s=self.presence_cache_ttl_seconds,
            channels_per_socket=self.channels_per_socket,
            joins_per_second=self.realtime_joins_per_second,
        )


def _env_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    if field.isupper():  # already an environment name (an alias)
        return field
    info = Settings.model_fields.get(field) or SecuritySettings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        return str(first)
    return f"HITL_{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read and check the settings; raise `ConfigError` listing every problem, one line each."""
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{_env_name(err['loc'])}: {message}")
        raise ConfigError(lines) from None
    problems = settings.problems()
    if problems:
        raise ConfigError(problems)
    return settings
