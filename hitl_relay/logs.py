"""Where the relay's logs go: JSON lines in production, readable lines in development.

`configure_logging(settings)` is called once by every long-running entry point (`hitl-relay
serve`, `stdio`, `devstack`, `dev`). It replaces loguru's sinks with one on stderr (never
stdout: in `stdio` mode stdout is the MCP stream):

- `HITL_LOG_JSON=true`: one JSON object per line: `time` (ISO 8601, UTC), `level`, `message`,
  `logger` (the module), and every `bind()` extra as a top-level key (`call_id`, `case_id`,
  `outcome`, `waited_ms`, ...); an exception adds `exception` (its traceback as text).
- otherwise: a coloured line (on a terminal) with the extras appended as `key=value`.

The level is `HITL_LOG_LEVEL` (default INFO). The stdlib `logging` of the libraries (uvicorn,
mcp, httpx, websockets, realtime) is routed into the same sink at WARNING and above, the
stdlib loggers of our own packages (`hitl_relay.*`, `hitl_devstack.*`) at the configured level,
so a production log is all JSON. A library's repeated warnings and errors (realtime-py's
per-attempt connection errors while the platform is down) are let through once, then once a
minute with a count (`RepeatFilter`).

Secrets never reach a line: the values of the API keys, the Supabase keys and the callback and
Retell secrets are replaced by `<secret>` wherever they appear, and extras named like a
credential (`authorization`, `api_key`, `password`, `*_token`, `*_secret`) are replaced by
`<redacted>`. Question and answer text is scrubbed earlier, by the redaction patcher of
`hitl_relay.security.audit` (`HITL_REDACT_LOGS`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

    from hitl_relay.config import Settings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Libraries' stdlib loggers below this level are dropped (uvicorn's access lines, httpx's
# request lines): the relay's own per-call line says what happened.
LIBRARY_LEVEL = logging.WARNING
# Stdlib loggers named under these packages log at the configured level, not at LIBRARY_LEVEL
# (the devstack is a package of its own, run by `hitl-relay devstack`/`dev` with these logs).
OWN_LOGGERS = ("hitl_relay", "hitl_devstack")
# Extras whose name says they hold a credential.
_CREDENTIAL_NAME = re.compile(
    r"(^|_)(authorization|api_?key|apikey|password|secret|token|service_role_key)s?$", re.I
)
# Secrets shorter than this are not searched for (a 1-character "secret" would mangle lines).
_MIN_SECRET_LEN = 8


@dataclass(frozen=True)
class LogOptions:
    """What `configure_logging` needs: the level, the format, the values never to print."""

    level: str = "INFO"
    json: bool = False
    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> LogOptions:
        values: list[str] = list(settings.api_key_values())
        for secret in (
            settings.supabase_service_role_key,
            settings.supabase_anon_key,
            settings.security.callback_secret,
            settings.security.retell_api_key,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        return cls(level=settings.log_level, json=settings.log_json, secrets=tuple(values))

    @classmethod
    def from_env(cls) -> LogOptions:
        """For the entry points that do not load the relay's settings (`devstack`, `dev`):
        the full settings when they are valid, else `HITL_LOG_LEVEL`/`HITL_LOG_JSON` read
        leniently (those tools must start even with a relay setting the relay would refuse)."""
        from pydantic import ValidationError

        from hitl_relay.config import Settings

        try:
            return cls.of(Settings())
        except ValidationError:
            level = os.environ.get("HITL_LOG_LEVEL", "INFO").strip().upper()
            as_json = os.environ.get("HITL_LOG_JSON", "").strip().lower() in ("1", "true", "yes")
            secrets = [
                os.environ.get(name, "")
                for name in ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "HITL_API_KEY")
            ]
            return cls(
                level=level if level in LEVELS else "INFO",
                json=as_json,
                secrets=tuple(s for s in secrets if s),
            )


class _Scrubber:
    """Replaces known secret values, and credential-named extras, before a line is written."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True
        )

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "<secret>")
        return text

    def extras(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            name: "<redacted>" if _CREDENTIAL_NAME.search(name) else value
            for name, value in extra.items()
        }


def json_line(record: Record, scrubber: _Scrubber) -> str:
    """The record as one JSON object (no newline inside): time, level, message, logger, extras."""
    entry: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
    }
    for name, value in scrubber.extras(record["extra"]).items():
        # The record's own fields win: an extra named `message` must not hide the message.
        entry.setdefault(name, value)
    if record["exception"] is not None:
        import traceback

        exc = record["exception"]
        entry["exception"] = "".join(
            traceback.format_exception(exc.type, exc.value, exc.traceback)
        ).rstrip()
    return scrubber.text(json.dumps(entry, default=str, ensure_ascii=False))


def readable_line(record: Record, scrubber: _Scrubber, colour: bool) -> str:
    """`HH:MM:SS.mmm LEVEL   module: message  key=value ...`, coloured on a terminal."""
    stamp = record["time"].astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    level = record["level"].name
    extras = " ".join(f"{k}={v}" for k, v in scrubber.extras(record["extra"]).items())
    text = f"{record['name']}: {record['message']}"
    if colour:
        colours = {"WARNING": "33", "ERROR": "31", "CRITICAL": "31;1", "DEBUG": "2"}
        code = colours.get(level, "0")
        line = f"\x1b[2m{stamp}\x1b[0m \x1b[{code}m{level:<7}\x1b[0m {text}"
        if extras:
            line += f"  \x1b[36m{extras}\x1b[0m"
    else:
        line = f"{stamp} {level:<7} {text}"
        if extras:
            line += f"  {extras}"
    if record["exception"] is not None:
        import traceback

        exc = record["exception"]
        line += "\n" + "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return scrubber.text(line.rstrip("\n"))


class _Sink:
    """A loguru sink writing one formatted line per record to `stream`."""

    def __init__(self, stream: TextIO, options: LogOptions, colour: bool) -> None:
        self.stream = stream
        self.json = options.json
        self.colour = colour
        self.scrubber = _Scrubber(options.secrets)

    def __call__(self, message: Message) -> None:
        record = message.record
        if self.json:
            line = json_line(record, self.scrubber)
        else:
            line = readable_line(record, self.scrubber, self.colour)
        self.stream.write(line + "\n")
        self.stream.flush()


class RepeatFilter(logging.Filter):
    """Lets the first of a run of like library warnings and errors through, then one a minute
    with how many were held back.

    realtime-py logs two ERROR lines per failed connection attempt, so while the platform is
    down a relay would log dozens a minute; the adapter already logs each change of the
    socket's state once (disconnected, reconnected after N failed attempts). "Like" means the
    same logger, level and message once its numbers are masked (ports, errno, attempt counts).
    """

    _NUMBERS = re.compile(r"\d+")

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock or time.monotonic
        # key → (when one was last let through, how many were held back since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name.startswith("hitl_relay"):
            return True
        key = (record.name, record.levelno, self._NUMBERS.sub("#", record.getMessage()))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._seen) > 1000:  # bounded: forget the runs that ended long ago
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every_s}
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            message = record.getMessage()
            record.msg = f"{message} (and {seen[1]} more like it in the last {now - seen[0]:.0f} s)"
            record.args = None
        return True


class InterceptHandler(logging.Handler):
    """Hands stdlib `logging` records to loguru (loguru's documented recipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Find the caller outside the logging module, so `function`/`line` name the library's.
        frame: FrameType | None = logging.currentframe()
        depth = 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        # `logger` in the output is the stdlib logger's name (`uvicorn.error`, `httpx`).
        name = record.name

        def rename(r: Record) -> None:
            r["name"] = name

        logger.patch(rename).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


def configure_logging(
    settings: Settings | LogOptions | None = None,
    *,
    stream: TextIO | None = None,
    colour: bool | None = None,
) -> int:
    """Send every log record (loguru's and stdlib's) to one sink on `stream` (stderr).

    `settings`: the relay's settings, or `LogOptions`, or None (read from the environment, see
    `LogOptions.from_env`). `colour`: None colours when `stream` is a terminal and the format
    is readable. Calling it again replaces the previous configuration. Returns the sink's id.
    """
    if settings is None:
        options = LogOptions.from_env()
    elif isinstance(settings, LogOptions):
        options = settings
    else:
        options = LogOptions.of(settings)
    out = stream if stream is not None else sys.stderr
    if colour is None:
        colour = not options.json and out.isatty()
    logger.remove()
    sink_id = logger.add(_Sink(out, options, colour), level=options.level, catch=True)

    # stdlib: libraries at WARNING, our own loggers (the relay's, the devstack's) at the level.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    library = InterceptHandler(level=LIBRARY_LEVEL)
    library.addFilter(RepeatFilter())
    root.addHandler(library)
    root.setLevel(min(LIBRARY_LEVEL, logging.getLevelName(options.level)))
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        for handler in list(own.handlers):
            if isinstance(handler, InterceptHandler):
                own.removeHandler(handler)
        own.addHandler(InterceptHandler(level=options.level))
        own.setLevel(options.level)
        own.propagate = False
    # uvicorn keeps its own handlers unless told otherwise: hand them to the root as well.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        lib = logging.getLogger(name)
        lib.handlers = []
        lib.propagate = True
    return sink_id


def start_line(settings: Settings | LogOptions, message: str) -> str:
    """A line printed at start whatever the level (tools wait for it): the message itself, or
    as a JSON log object when the logs are JSON, so a production log stays all JSON."""
    options = settings if isinstance(settings, LogOptions) else LogOptions.of(settings)
    if not options.json:
        return message
    return json.dumps(
        {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "message": message,
            "logger": "hitl_relay.cli",
        }
    )
