"""`SecurityLayer`: the security controls of one HTTP app, built once from the settings.

The HTTP app uses it in three places:

    layer = SecurityLayer(settings)                    # refuses bad keys (ConfigError)
    Starlette(..., middleware=layer.middleware())      # guards, outermost first
    async with layer.running(backend): ...             # in the lifespan: audit writer

plus `layer.authorize` (the bearer check for the /mcp gate), `layer.transport_security()`
(the MCP SDK's DNS-rebinding protection) and `layer.limiter` / `layer.rules` for endpoints that
authenticate by other means (the Retell webhook).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from loguru import logger
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from hitl_relay import metrics
from hitl_relay.ports import Backend
from hitl_relay.security.audit import (
    AuditEvent,
    AuditSink,
    LogAuditSink,
    NullAuditSink,
    PlatformAuditSink,
    ThrottledAuditSink,
    install_log_redaction,
)
from hitl_relay.security.keys import keyring_or_refuse
from hitl_relay.security.middleware import (
    AuthGuard,
    NetworkGuard,
    OriginGuard,
    OriginPolicy,
)
from hitl_relay.security.network import NetworkPolicy
from hitl_relay.security.ratelimit import (
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    Rules,
    SharedRateLimiter,
)
from hitl_relay.security.settings import LOOPBACK_HOSTS, SecuritySettings


class Settings(Protocol):
    """What the layer reads of the relay's settings (`hitl_relay.config.Settings`)."""

    @property
    def security(self) -> SecuritySettings: ...

    @property
    def host(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def api_key_values(self) -> list[str]: ...


PROTECTED_PATHS = ("/mcp",)
# Methods and headers a browser client of /mcp needs (streamable HTTP).
CORS_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
CORS_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
)
CORS_EXPOSE = ("mcp-session-id", "retry-after", "www-authenticate")


def default_audit_sink(settings: Settings) -> AuditSink:
    choice = settings.security.audit_sink
    if choice == "auto":
        choice = "supabase" if settings.backend == "supabase" else "log"
    if choice == "none":
        return NullAuditSink()
    sink: AuditSink = PlatformAuditSink() if choice == "supabase" else LogAuditSink()
    return ThrottledAuditSink(sink)


def default_limiter(settings: Settings) -> RateLimiter:
    if settings.security.rate_limit_storage == "postgres":
        return SharedRateLimiter()
    return MemoryRateLimiter()


def transport_security_settings(settings: Settings) -> TransportSecuritySettings | None:
    """The MCP SDK's DNS-rebinding protection: Host and Origin checked on /mcp.

    On when serving on loopback (loopback names always allowed) or when HITL_ALLOWED_HOSTS is
    set; off otherwise (behind a proxy the public host name is not known here).
    """
    hosts = list(settings.security.allowed_hosts)
    origins = list(settings.security.allowed_origins)
    if settings.host in LOOPBACK_HOSTS:
        hosts += ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:*", "localhost:*", "[::1]:*"]
        origins += ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if not hosts:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


class SecurityLayer:
    """Keys, limits, network and origin policy, audit: shared by the guards and endpoints."""

    def __init__(
        self,
        settings: Settings,
        *,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
        protected: tuple[str, ...] = PROTECTED_PATHS,
    ) -> None:
        self.config = settings
        # The guards and the Retell endpoint read the security part (`layer.settings.<name>`).
        self.settings = settings.security
        self.keys = keyring_or_refuse(
            settings.api_key_values(),
            revoked=settings.security.revoked_keys,
            compromised=settings.security.compromised_keys,
            require_key=not settings.security.insecure_local,
        )
        # --insecure-local with no key at all: every request passes as this actor.
        self.open_access = settings.security.insecure_local and self.keys.size == 0
        self.network = NetworkPolicy(
            settings.security.trusted_proxies, settings.security.ip_allowlist
        )
        self.origins = OriginPolicy(settings.security.allowed_origins)
        self.rules = Rules.from_settings(settings.security)
        self.limiter = limiter or default_limiter(settings)
        self.audit = audit or default_audit_sink(settings)
        self.protected = protected
        install_log_redaction(settings.security.redact_logs)

    # ------------------------------------------------------------ wiring

    def middleware(self) -> list[Middleware]:
        """The guards for `Starlette(middleware=...)`, outermost first."""
        return [
            Middleware(NetworkGuard, layer=self),
            Middleware(OriginGuard, layer=self),
            Middleware(
                CORSMiddleware,
                allow_origins=sorted(self.origins.exact),
                allow_origin_regex=self.origins.cors_regex(),
                allow_methods=CORS_METHODS,
                allow_headers=CORS_HEADERS,
                expose_headers=CORS_EXPOSE,
                allow_credentials=False,
                max_age=600,
            ),
            Middleware(AuthGuard, layer=self),
        ]

    def host_allowed(self, headers: Headers) -> bool:
        """The request's Host is one the MCP endpoint would accept (no host list: any)."""
        security = transport_security_settings(self.config)
        if security is None:
            return True
        host = headers.get("host") or ""
        for pattern in security.allowed_hosts:
            if host == pattern:
                return True
            if pattern.endswith(":*") and host.rpartition(":")[0] == pattern[:-2]:
                return True
        return False

    def authorize(self, headers: Headers) -> bool:
        """The bearer check alone (the /mcp gate's `Authorize`)."""
        return self.identify(headers.get("authorization")) is not None

    def identify(self, authorization: str | None) -> str | None:
        """The key fingerprint for an Authorization header, or None."""
        if self.open_access:
            return "insecure-local"
        return self.keys.identify_authorization(authorization)

    def transport_security(self) -> TransportSecuritySettings | None:
        """The MCP SDK's DNS-rebinding protection for /mcp (see `transport_security_settings`)."""
        return transport_security_settings(self.config)

    @asynccontextmanager
    async def running(self, backend: Backend | None = None) -> AsyncIterator[None]:
        """For the app's lifespan: attaches the backend's audit and rate-limit ports, runs the
        audit writer, closes the limiter."""
        async with AsyncExitStack() as stack:
            sink: Any = self.audit
            inner = sink.inner if isinstance(sink, ThrottledAuditSink) else sink
            if isinstance(inner, PlatformAuditSink):
                if backend is not None and backend.audit is not None:
                    await stack.enter_async_context(inner.running(backend.audit))
                else:
                    logger.warning("the backend keeps no audit trail: auditing to the log")
                    if isinstance(sink, ThrottledAuditSink):
                        sink.inner = LogAuditSink()
                    else:
                        self.audit = LogAuditSink()
            if isinstance(self.limiter, SharedRateLimiter) and backend is not None:
                self.limiter.store = backend.rate_limits
            stack.push_async_callback(self.limiter.aclose)
            yield

    # ------------------------------------------------------------ recording

    def record(self, action: str, actor: str, outcome: str, **detail: Any) -> None:
        self.audit.record(AuditEvent(actor=actor, action=action, outcome=outcome, detail=detail))

    def refused_by_limit(self, scope: str, actor: str, decision: Decision, path: str) -> None:
        metrics.rate_limited.inc()
        self.record(
            "rate_limited",
            actor,
            "refused",
            scope=scope,
            path=path,
            retry_after=int(decision.retry_after_header),
        )
