"""How the relay serves the console (no browser): config, security headers, the supabase-js
bundle, and the console's own files holding no HTML sinks or inline code."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from hitl_relay import console
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app

SERVICE_KEY = "service-" + secrets.token_urlsafe(24)
ANON_KEY = "anon-" + secrets.token_urlsafe(24)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "backend": "supabase",
        "supabase_url": "https://abcd.supabase.co",
        "supabase_service_role_key": SERVICE_KEY,
        "supabase_anon_key": ANON_KEY,
        "api_keys": "hitl_" + secrets.token_urlsafe(32),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
async def relay() -> AsyncIterator[httpx.AsyncClient]:
    """The relay's app without its lifespan: the console's routes need no platform."""
    transport = httpx.ASGITransport(app=create_app(settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
        yield client


def config_of(script: str) -> dict[str, object]:
    prefix = "window.HITL_CONSOLE_CONFIG = "
    assert script.startswith(prefix)
    value: dict[str, object] = json.loads(script.removeprefix(prefix).rstrip().rstrip(";"))
    return value


async def test_config_js_gives_the_project_url_and_anon_key_and_never_the_service_key(
    relay: httpx.AsyncClient,
) -> None:
    response = await relay.get("/console/config.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-store"
    assert config_of(response.text) == {
        "supabaseUrl": "https://abcd.supabase.co",
        "anonKey": ANON_KEY,
        "problems": [],
    }
    assert SERVICE_KEY not in response.text


async def test_console_pages_allow_scripts_from_the_relay_and_connections_to_the_project_only(
    relay: httpx.AsyncClient,
) -> None:
    page = await relay.get("/console/")
    assert page.status_code == 200
    assert "<title>Operator console · hitl-relay</title>" in page.text
    csp = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self' https://abcd.supabase.co wss://abcd.supabase.co"
    assert csp["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    for asset in ("console.js", "console.css", "config.js"):
        response = await relay.get(f"/console/{asset}")
        assert response.status_code == 200, asset
        assert "content-security-policy" in response.headers, asset


async def test_a_local_http_project_is_reached_over_ws() -> None:
    policy = console.content_security_policy("http://127.0.0.1:54321")
    assert "connect-src 'self' http://127.0.0.1:54321 ws://127.0.0.1:54321" in policy


async def test_bare_console_path_redirects_to_the_page(relay: httpx.AsyncClient) -> None:
    response = await relay.get("/console")
    assert response.status_code == 308
    assert response.headers["location"] == "/console/"


async def test_missing_supabase_js_bundle_is_a_404_naming_the_install_script(
    relay: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(console, "VENDOR_BUNDLE", tmp_path / "absent.js")
    response = await relay.get("/console/vendor/supabase.js")
    assert response.status_code == 404
    assert "scripts/install-console-deps" in response.text


async def test_installed_supabase_js_bundle_is_served_as_javascript(
    relay: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "supabase.js"
    bundle.write_text("var supabase = {createClient: function () {}};\n")
    monkeypatch.setattr(console, "VENDOR_BUNDLE", bundle)
    response = await relay.get("/console/vendor/supabase.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.text == bundle.read_text()


async def test_relay_without_url_or_anon_key_tells_the_console_what_to_set() -> None:
    transport = httpx.ASGITransport(
        app=create_app(settings(backend="memory", supabase_url=None, supabase_anon_key=None))
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        config = config_of((await client.get("/console/config.js")).text)
    problems = config["problems"]
    assert isinstance(problems, list)
    assert [p.split(" ", 1)[0] for p in problems] == ["SUPABASE_URL", "SUPABASE_ANON_KEY"]


def test_config_values_cannot_break_out_of_the_script() -> None:
    script = console.ConsoleConfig("https://x.supabase.co", "</script><script>alert(1)").script()
    assert "</script>" not in script
    assert config_of(script)["anonKey"] == "</script><script>alert(1)"


def test_console_script_never_writes_html_or_evaluates_code() -> None:
    source = (console.STATIC_DIR / "console.js").read_text()
    sinks = re.findall(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setAttribute\(\s*['\"]on|srcdoc",
        source,
    )
    assert sinks == []


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.handlers += [f"{tag} {name}" for name in names if name.startswith("on")]
        if "style" in names:
            self.inline_styles.append(tag)
        if tag == "script":
            self.scripts.append(names.get("src") or "")
            self._in_script = not names.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def test_console_page_has_no_inline_code_so_the_policy_can_forbid_it() -> None:
    markup = _Markup()
    markup.feed((console.STATIC_DIR / "index.html").read_text())
    assert markup.scripts == ["config.js", "vendor/supabase.js", "console.js"]
    assert (markup.inline_scripts, markup.inline_styles, markup.handlers) == (0, [], [])
