"""The operator console: static pages the relay serves at `/console/`.

    GET /console/                      the console (static/index.html, console.js, console.css)
    GET /console/config.js             `window.HITL_CONSOLE_CONFIG`: the Supabase URL and the
                                       anon key (public by design; never the service-role key)
    GET /console/vendor/supabase.js    supabase-js's browser bundle, put in place by
                                       `scripts/install-console-deps`; 404 with the fix otherwise

The console talks to Supabase directly (REST, Realtime, Auth) as the signed-in operator; the
relay only hands out the files. Every response carries a Content-Security-Policy that allows
scripts from the relay alone and connections to the Supabase project alone, so operator-facing
text (which is plain text, never HTML) cannot run anything even if it were mis-rendered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
VENDOR_BUNDLE = HERE / "vendor" / "supabase.js"
INSTALL_HINT = "run scripts/install-console-deps (it copies @supabase/supabase-js's browser bundle)"


@dataclass(frozen=True)
class ConsoleConfig:
    """What the browser needs to reach the operators' Supabase project."""

    supabase_url: str | None
    anon_key: str | None

    def problems(self) -> list[str]:
        out = []
        if not self.supabase_url:
            out.append("SUPABASE_URL is not set on the relay: the console cannot reach Supabase.")
        if not self.anon_key:
            out.append(
                "SUPABASE_ANON_KEY is not set on the relay: the console needs the project's "
                "anon (public) key to sign operators in."
            )
        return out

    def script(self) -> str:
        """`config.js`: one assignment, JSON-encoded (no value can break out of the string)."""
        body = json.dumps(
            {
                "supabaseUrl": self.supabase_url or "",
                "anonKey": self.anon_key or "",
                "problems": self.problems(),
            }
        ).replace("<", "\\u003c")
        return f"window.HITL_CONSOLE_CONFIG = {body};\n"


def content_security_policy(supabase_url: str | None) -> str:
    """Scripts and styles from the relay only; fetch and WebSocket to the Supabase project."""
    connect = ["'self'"]
    if supabase_url:
        parts = urlsplit(supabase_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            ws = "wss" if parts.scheme == "https" else "ws"
            connect += [f"{parts.scheme}://{parts.netloc}", f"{ws}://{parts.netloc}"]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {' '.join(connect)}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    """ASGI wrapper adding the console's security headers to every response it sends."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self._app = app
        self._headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self._headers]}
            await send(message)

        await self._app(scope, receive, send_with_headers)


def routes(config: ConsoleConfig) -> list[BaseRoute]:
    """The `/console` routes for `create_app(extra_routes=...)`."""
    script = config.script()

    async def config_js(_request: Request) -> Response:
        return Response(
            script,
            media_type="text/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def vendor_js(_request: Request) -> Response:
        if not VENDOR_BUNDLE.is_file():
            # A comment, typed as a script: browsers log only the 404, people read the fix.
            return Response(
                f"/* supabase-js is not installed for the console: {INSTALL_HINT} */\n",
                status_code=404,
                media_type="text/javascript",
            )
        return FileResponse(VENDOR_BUNDLE, media_type="text/javascript")

    async def to_slash(_request: Request) -> Response:
        return RedirectResponse("/console/", status_code=308)

    csp = content_security_policy(config.supabase_url)
    inner: list[BaseRoute] = [
        Route("/config.js", config_js, methods=["GET", "HEAD"]),
        Route("/vendor/supabase.js", vendor_js, methods=["GET", "HEAD"]),
        Mount("/", app=StaticFiles(directory=STATIC_DIR, html=True)),
    ]
    return [
        Route("/console", to_slash, methods=["GET", "HEAD"]),
        Mount("/console", app=SecurityHeaders(Router(routes=inner), csp)),
    ]
