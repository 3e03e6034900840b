"""`hitl-relay doctor`: is this relay's configuration able to serve calls? One line per check.

Reads the same configuration as `serve` (environment and `.env`) and checks, in order:

    configuration        the settings load (every problem, one line each)
    API keys             present, well-formed, not revoked or compromised (what `serve` refuses)
    Supabase URL         answers HTTP
    service key          the platform accepts SUPABASE_SERVICE_ROLE_KEY (a service_role JWT or a
                         secret key sb_secret_…, also read from SUPABASE_SECRET_KEY) as the
                         service role
    migrations           hitl_schema_version() is the version this relay expects (as /readyz)
    realtime join        a private channel can be joined and left
    presence             the `operators` channel (presence) can be joined

Each line reads `ok   <what> — <detail>` or `FAIL <what> — <what to do>`. A check that cannot
run because an earlier one failed is not printed as passed: it says what it waits for. Nothing
here raises to the caller: the outcome is the lines and the exit code (0 all ok, 1 otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import uuid4

import anyio
import httpx

from hitl_relay.config import Settings, load_settings
from hitl_relay.errors import ConfigError, HitlError
from hitl_relay.ports import PlatformReadiness
from hitl_relay.readiness import EXPECTED_SCHEMA_VERSION, migrations_check
from hitl_relay.security import key_problems

if TYPE_CHECKING:
    from hitl_relay.adapters.supabase import SupabasePlatform

# JWT refusals by PostgREST (PGRST301..303), a plain 401, and the API gateway's refusals of an
# unknown or missing `apikey` (gateway.py): the key itself is wrong.
KEY_REFUSED_MARKERS = (
    "PGRST30",
    "401",
    "JWT",
    "JWS",
    "Invalid API key",
    "No API key found",
)


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what} — {self.detail}"


def _ok(what: str, detail: str) -> Finding:
    return Finding(True, what, detail)


def _fail(what: str, detail: str) -> Finding:
    return Finding(False, what, detail)


def check_configuration(load: Callable[[], Settings]) -> tuple[Settings | None, list[Finding]]:
    try:
        settings = load()
    except ConfigError as e:
        return None, [
            _fail("configuration", f"{p} (fix it in the environment or .env)") for p in e.problems
        ]
    return settings, [_ok("configuration", f"valid (backend {settings.backend})")]


def check_api_keys(settings: Settings) -> list[Finding]:
    problems = key_problems(
        settings.api_key_values(),
        revoked=settings.security.revoked_keys,
        compromised=settings.security.compromised_keys,
        require_key=not settings.security.insecure_local,
    )
    if problems:
        return [_fail("API keys", p) for p in problems]
    count = len(settings.api_keys)
    return [_ok("API keys", f"{count} key(s) usable, none revoked or compromised")]


async def check_url(url: str, timeout_s: float, apikey: str | None = None) -> Finding:
    # with the key as `apikey`, as every Supabase client sends it: without one the project's
    # gateway answers 401 before PostgREST
    headers = {"apikey": apikey} if apikey else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(f"{url}/rest/v1/", headers=headers)
    except (httpx.HTTPError, OSError) as e:
        detail = str(e) or type(e).__name__
        return _fail(
            "Supabase URL",
            f"cannot reach {url}: {detail} — check SUPABASE_URL (your project's API URL) and "
            "that this host can reach it",
        )
    return _ok("Supabase URL", f"{url} answers (HTTP {response.status_code})")


def check_key_and_migrations(platform: PlatformReadiness) -> list[Finding]:
    database = platform.database
    if not database.ok:
        reason = database.reason or "failed"
        if any(marker in reason for marker in KEY_REFUSED_MARKERS):
            return [
                _fail(
                    "service key",
                    f"the platform refused SUPABASE_SERVICE_ROLE_KEY ({reason}) — use one of "
                    "the project's secret keys (sb_secret_…) or its service_role key "
                    "(dashboard: Settings → API Keys)",
                ),
                _fail("migrations", "not checked: the service key was refused"),
            ]
        return [
            _fail(
                "database",
                f"the platform did not reach its database ({reason}) — check the project is up",
            ),
            _fail("migrations", "not checked: the database is unreachable"),
        ]
    if platform.schema_error is not None and platform.schema_error.startswith("42501"):
        return [
            _fail(
                "service key",
                f"accepted, but not as the service role ({platform.schema_error}) — "
                "SUPABASE_SERVICE_ROLE_KEY must be a secret key (sb_secret_…) or the service_role "
                "key, not the publishable or anon key",
            ),
            _fail("migrations", "not checked: the key is not the service role's"),
        ]
    findings = [_ok("service key", "accepted (an RPC as the service role reached the database)")]
    migrations = migrations_check(platform, EXPECTED_SCHEMA_VERSION)
    if migrations["ok"]:
        findings.append(_ok("migrations", f"current ({EXPECTED_SCHEMA_VERSION})"))
    else:
        findings.append(_fail("migrations", str(migrations["reason"])))
    return findings


async def run_checks(load: Callable[[], Settings] = load_settings) -> list[Finding]:
    """Every check, in order (see the module docstring)."""
    settings, findings = check_configuration(load)
    if settings is None:
        return findings
    findings += check_api_keys(settings)
    if settings.backend == "memory":
        findings.append(_ok("platform", "HITL_BACKEND=memory: no platform to check"))
        return findings
    assert settings.supabase_url is not None  # load_settings requires it for supabase
    timeout_s = settings.platform_timeout_seconds
    key = settings.supabase_service_role_key
    reached = await check_url(
        settings.supabase_url, timeout_s, key.get_secret_value() if key else None
    )
    findings.append(reached)
    if not reached.ok:
        return findings
    findings += await check_platform(settings, timeout_s)
    return findings


async def check_platform(settings: Settings, timeout_s: float) -> list[Finding]:
    """Service key, migrations, a realtime join and presence, over the relay's own adapter."""
    from hitl_relay.adapters.supabase import build_platform

    platform = await build_platform(settings.platform_options(), presence=False)
    try:
        readiness = await platform.readiness(timeout_s)
        findings = check_key_and_migrations(readiness)
        key_refused = not all(f.ok for f in findings if f.what == "service key")
        if key_refused or not readiness.database.ok:
            return findings  # Realtime would refuse the same key: nothing more to learn
        findings.append(await _check_join(platform, timeout_s))
        findings.append(await _check_presence(platform, timeout_s))
        return findings
    finally:
        await platform.aclose()


async def _check_join(platform: SupabasePlatform, timeout_s: float) -> Finding:
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout_s + 1):
            async with platform.channel.subscribe(uuid4()):
                pass
    except (HitlError, TimeoutError) as e:
        return _fail(
            "realtime join",
            f"joining a private channel failed ({e}) — check Realtime is enabled for the project "
            "and the realtime.messages policies are applied (migrations)",
        )
    ms = (time.perf_counter() - started) * 1000
    return _ok("realtime join", f"a private case channel joined and left in {ms:.0f} ms")


async def _check_presence(platform: SupabasePlatform, timeout_s: float) -> Finding:
    started = time.perf_counter()
    platform.presence.start()
    presence = platform.presence
    try:
        with anyio.fail_after(timeout_s + 1):
            while not presence.joined:
                await presence.changed.wait()  # notified on every sync or loss
    except TimeoutError:
        return _fail(
            "presence",
            "the operators channel (presence) was not joined within "
            f"{timeout_s + 1:g} s — check the realtime.messages policies (migrations) and Realtime",
        )
    ms = (time.perf_counter() - started) * 1000
    count = platform.presence.count()
    return _ok("presence", f"operators channel joined in {ms:.0f} ms ({count} operator(s) present)")


def run(load: Callable[[], Settings] = load_settings) -> tuple[list[str], int]:
    """The printed lines and the exit code."""

    async def checks() -> list[Finding]:
        return await run_checks(load)

    findings = anyio.run(checks)
    lines = [f.line() for f in findings]
    return lines, 0 if all(f.ok for f in findings) else 1
