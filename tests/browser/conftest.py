"""Browser tests of the operator console: Debian's Chromium driven by Playwright (async API).

Everything runs in the test's event loop: the devstack (REST, Realtime, Auth on a fresh
database), a relay on the Supabase adapter serving MCP and the console at `/console/`, and the
browser. Cases reach the console the way production opens them: a voice agent's `ask_human`
over MCP (`Stack.ask`). Screenshots go to tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hitl_devstack.context import LocalUser
from hitl_devstack.keys import make_keys
from hitl_devstack.realtime import RealtimeLimits
from hitl_devstack.server import Devstack
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.mcp_client import connect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",  # the alert beeps run without a click
]
API_KEY = "browser-" + secrets.token_urlsafe(16)
WAIT_S = 10.0

pytestmark = pytest.mark.browser


@dataclass
class Ask:
    """An `ask_human` call in flight: `await ask.result()` for what the agent gets back."""

    call_id: str
    task: asyncio.Task[dict[str, Any]] | None = None
    sent_at: float = 0.0  # monotonic, just before the tool call left
    sent_wall: float = 0.0  # the same moment, epoch seconds

    async def result(self, timeout_s: float = 30.0) -> dict[str, Any]:
        assert self.task is not None
        return await asyncio.wait_for(asyncio.shield(self.task), timeout_s)


@dataclass
class Stack:
    """The devstack, a relay serving MCP and the console, and two operator accounts."""

    devstack: Devstack
    relay_url: str
    operators: list[LocalUser]
    asks: list[asyncio.Task[dict[str, Any]]] = field(default_factory=list)

    @property
    def console_url(self) -> str:
        return self.relay_url + "/console/"

    @property
    def mcp_url(self) -> str:
        return self.relay_url + "/mcp"

    def token(self, user: LocalUser) -> str:
        return self.devstack.keys.user_token(user.id, email=user.email, operator=True)

    async def operators_online(self) -> int | None:
        """What the relay itself believes (its presence port), through a test-only route."""
        import httpx

        async with httpx.AsyncClient() as client:
            response = await client.get(self.relay_url + "/test/operators-online")
        value = response.json()["operators_online"]
        return None if value is None else int(value)

    async def ask(self, question: str, **arguments: Any) -> Ask:
        """Start an `ask_human` call over MCP as a voice agent does: the MCP session is set up
        first (Retell keeps one per call), then the tool call is sent; returns once it is sent."""
        call_id = arguments.pop("call_id", f"call_{uuid.uuid4().hex[:10]}")
        args: dict[str, Any] = {
            "question": question,
            "session_id": call_id,
            "call_id": call_id,
            "agent_id": "agent_browser_test",
            **arguments,
        }
        handle = Ask(call_id=call_id)
        connected = asyncio.Event()

        async def call() -> dict[str, Any]:
            async with connect(self.mcp_url, API_KEY) as client:
                handle.sent_at = time.monotonic()
                handle.sent_wall = time.time()
                connected.set()
                result = await client.call_tool("ask_human", args)
            assert not result.is_error, result.content
            structured = result.structured_content
            assert isinstance(structured, dict), result
            return structured

        handle.task = asyncio.get_running_loop().create_task(call(), name=f"ask {question[:30]}")
        self.asks.append(handle.task)
        waiter = asyncio.ensure_future(connected.wait())
        await asyncio.wait([waiter, handle.task], timeout=WAIT_S, return_when="FIRST_COMPLETED")
        if not connected.is_set():
            waiter.cancel()
            if handle.task.done():
                handle.task.result()  # raises what went wrong
            raise AssertionError(f"the MCP session to {self.mcp_url} was not set up in {WAIT_S} s")
        return handle

    async def restart_devstack(self, while_down: Callable[[], Awaitable[None]]) -> None:
        """Stop the devstack (every socket closes with 1001), run `while_down`, start it again
        on the same port with the same keys and users."""
        old = self.devstack
        await old.stop()
        await while_down()
        self.devstack = Devstack(
            old.db_url, old.keys, port=old.port, limits=old.limits, users=self.operators
        )
        await self.devstack.start()

    async def db_fetchrow(self, sql: str, *args: Any) -> Any:
        import asyncpg

        conn = await asyncpg.connect(self.devstack.db_url)
        try:
            return await conn.fetchrow(sql, *args)
        finally:
            await conn.close()


async def _operators_online(request: Request) -> Response:
    relay = request.state.relay_state.get()
    return JSONResponse({"operators_online": await relay.presence.operators_online()})


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    """A devstack with two operator accounts (password sign-in works) and a relay on it."""
    operators = [
        LocalUser(email="ada@ops.example", password=secrets.token_urlsafe(12)),
        LocalUser(email="grace@ops.example", password=secrets.token_urlsafe(12)),
    ]
    limits = RealtimeLimits(channel_error_backoff_s=0.05, connect_error_backoff_s=0.05)
    devstack = Devstack(
        db_url, make_keys(secrets.token_urlsafe(32)), limits=limits, users=operators
    )
    await devstack.start()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="supabase",
        supabase_url=devstack.url,
        supabase_service_role_key=devstack.keys.service_role_key,  # type: ignore[arg-type]
        supabase_anon_key=devstack.keys.anon_key,  # type: ignore[arg-type]
        api_keys=API_KEY,  # type: ignore[arg-type]
        presence_cache_ttl_seconds=0.0,
        progress_interval_seconds=1.0,
    )
    app = create_app(settings, extra_routes=[Route("/test/operators-online", _operators_online)])
    stack = Stack(devstack, "", operators)
    try:
        async with running(app) as url:
            stack.relay_url = url
            yield stack
            for task in stack.asks:
                task.cancel()
            await asyncio.gather(*stack.asks, return_exceptions=True)
    finally:
        await stack.devstack.stop()  # a test may have restarted it
        await devstack.stop()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@dataclass
class ConsolePage:
    """One operator's browser context with the console open; records what went wrong."""

    page: Page
    context: BrowserContext
    stack: Stack
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def sign_in_with_token(self, user: LocalUser) -> None:
        await self.page.goto(f"{self.stack.console_url}#token={self.stack.token(user)}")
        await self.wait_live(user)

    async def sign_in_with_password(self, user: LocalUser) -> None:
        await self.page.goto(self.stack.console_url)
        await self.page.get_by_label("Email").fill(user.email)
        await self.page.get_by_label("Password").fill(user.password)
        await self.page.get_by_role("button", name="Sign in", exact=True).click()
        await self.wait_live(user)

    async def wait_live(self, user: LocalUser) -> None:
        """Signed in, Realtime joined, and this operator on its own presence list."""
        from playwright.async_api import expect

        await expect(self.page.locator("#live-status")).to_have_attribute("data-state", "live")
        await expect(
            self.page.locator(f'#presence-list [data-operator-id="{user.id}"]')
        ).to_be_visible()

    def expected_console_error(self, text: str) -> None:
        """Drop the console errors containing `text`: the test caused them on purpose."""
        self.console_errors[:] = [e for e in self.console_errors if text not in e]

    def case_item(self, text: str) -> Any:
        return self.page.locator(".case-item", has_text=text)

    async def screenshot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
async def open_console(
    chromium: Browser, stack: Stack
) -> AsyncIterator[Callable[..., Awaitable[ConsolePage]]]:
    """Factory: a new browser context (one operator) on the console; closed after the test,
    which fails if a page threw, logged an error (a Content-Security-Policy violation, a
    failed load) or opened a dialog."""
    pages: list[ConsolePage] = []

    async def make(width: int = 1280, height: int = 860) -> ConsolePage:
        context = await chromium.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_S * 1000)
        page = await context.new_page()
        cp = ConsolePage(page, context, stack)

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                cp.console_errors.append(msg.text)

        async def on_dialog(dialog: Any) -> None:
            cp.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("pageerror", lambda e: cp.page_errors.append(str(e)))
        page.on("console", on_console)
        page.on("dialog", on_dialog)
        pages.append(cp)
        return cp

    yield make
    for cp in pages:
        await cp.context.close()
    problems = {
        "uncaught errors": [e for cp in pages for e in cp.page_errors],
        "console errors (CSP violations, failed loads, ...)": [
            e for cp in pages for e in cp.console_errors
        ],
        "dialogs": [d for cp in pages for d in cp.dialogs],
    }
    assert not any(problems.values()), json.dumps(problems, indent=2)
