"""The `hitl-relay` command: run the relay, the local stack, and the operator's chores."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import typer

from hitl_relay.models import TIMEOUT_MAX, TIMEOUT_MIN

if TYPE_CHECKING:
    from hitl_relay.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def migrate(
    database_url: str = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="Target database (default: local)."
    ),
    local: bool = typer.Option(
        False, "--local", help="Also apply supabase/local/ (bare Postgres only)."
    ),
    allow_no_cron: bool = typer.Option(
        False,
        "--allow-no-cron",
        help="Succeed on a database without pg_cron (sessions then expire only through the relay).",
    ),
) -> None:
    """Apply supabase/migrations in order, recorded as the Supabase CLI records them.

    Prints every database notice and warning. Exits 3 when the realtime policies are refused
    (it prints the SQL to run in the dashboard's SQL editor), 4 when the pg_cron jobs could not
    be scheduled (unless --allow-no-cron), 1 on any other failure.
    """
    from hitl_relay import migrate as migrations

    if database_url is None:
        stack = _devstack_commands()
        if stack is None:
            _fail("--database-url (or DATABASE_URL): required (no local cluster here)", code=2)
        database_url = stack.local_database_url()
        local = True

    def notice(text: str) -> None:
        warning = text.startswith(("WARNING", "ERROR"))
        typer.secho(text, err=True, fg=typer.colors.YELLOW if warning else None)

    try:
        outcome = asyncio.run(migrations.run(database_url, local=local, on_notice=notice))
    except migrations.PolicyRefused as e:
        typer.secho(
            f"error: {e.migration.path.name} was refused: the migration role may not create "
            "policies on realtime.messages here (it belongs to supabase_realtime_admin; on a "
            "hosted project only the dashboard's SQL editor may, through supautils).\n"
            "Every earlier migration is applied and every hitl table is protected by RLS; "
            "operators cannot join private Realtime channels until you run the SQL below in "
            "the dashboard's SQL editor (Database > SQL Editor), then run this command again.",
            fg=typer.colors.RED,
            err=True,
        )
        typer.echo(e.sql)
        raise typer.Exit(3) from None
    except migrations.MigrationError as e:
        _fail(str(e))
    listed = f": {', '.join(outcome.applied)}" if outcome.applied else ""
    typer.echo(f"applied {len(outcome.applied)} migration(s){listed}")
    if outcome.cron_scheduled:
        typer.echo(outcome.cron_detail)
    elif allow_no_cron:
        typer.secho(
            f"warning: {outcome.cron_detail}; allowed by --allow-no-cron: "
            f"{migrations.NO_CRON_CONSEQUENCE}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    else:
        _fail(
            f"{outcome.cron_detail}: {migrations.NO_CRON_CONSEQUENCE}. Enable pg_cron "
            "(Supabase: Database > Extensions, or `create extension pg_cron with schema "
            "pg_catalog` in the database cron.database_name names) and run this again, or pass "
            "--allow-no-cron to accept it",
            code=4,
        )


@app.command()
def stats(
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="Window: the last N hours."),
    json_out: bool = typer.Option(False, "--json", help="Print the raw JSON."),
) -> None:
    """The plan's success metrics (response time, success, timeouts, utilisation) vs targets."""
    import json
    from datetime import timedelta

    from hitl_relay.stats import StatsError, fetch_metrics, render

    url = os.environ.get("SUPABASE_URL")
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_SECRET_KEY")
    stack = _env_file(Path(os.environ.get("HITL_HOME", ".hitl")) / "devstack.env")
    url = url or stack.get("SUPABASE_URL")
    key = key or stack.get("SUPABASE_SERVICE_ROLE_KEY")
    if not url or not key:
        _fail("set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or start the devstack)")
    try:
        metrics = asyncio.run(fetch_metrics(url, key, timedelta(hours=hours)))
    except StatsError as e:
        _fail(str(e))
    if json_out:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        render(metrics)


def _env_file(path: Path) -> dict[str, str]:
    """The non-empty values a .env-style file sets ({} when there is no such file)."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v} if path.is_file() else {}


def _relay_settings(**overrides: object) -> Settings:
    from hitl_relay.config import load_settings
    from hitl_relay.errors import ConfigError

    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as e:
        for problem in e.problems:
            typer.secho(f"config: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str = typer.Option(None, "--host", help="Bind address (default HITL_HOST)."),
    port: int = typer.Option(None, "--port", help="Port (default HITL_PORT)."),
    insecure_local: bool = typer.Option(
        None, "--insecure-local", help="Serve without API keys (loopback only; the devstack)."
    ),
) -> None:
    """Serve the relay: MCP at /mcp (bearer key), /healthz, /readyz, /metrics."""
    from hitl_relay import http_app
    from hitl_relay.security import key_problems

    settings = _relay_settings(host=host, port=port, insecure_local=insecure_local)
    problems = key_problems(
        settings.api_key_values(),
        revoked=settings.security.revoked_keys,
        compromised=settings.security.compromised_keys,
        require_key=not settings.security.insecure_local,
    )
    for problem in problems:
        typer.secho(f"config: {problem}", fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(2)
    from hitl_relay.logs import configure_logging, start_line

    configure_logging(settings)
    address = f"http://{settings.host}:{settings.port}/mcp"
    typer.echo(start_line(settings, f"hitl-relay: MCP at {address}"), err=True)
    http_app.serve(settings, http_app.create_app(settings))


@app.command()
def doctor() -> None:
    """Check the configuration, the platform, the migrations and Realtime; say what to fix.

    Reads what `serve` reads (environment, .env), and for what they leave unset the local
    stack's settings (.hitl/devstack.env, .hitl/relay.env) as `stats` and `answer` do. One line
    per check; exit 0 when all pass.
    """
    from functools import partial

    from hitl_relay.config import load_settings
    from hitl_relay.doctor import run
    from hitl_relay.logs import LogOptions, configure_logging

    configure_logging(LogOptions(level="ERROR"))  # the checks' lines say it all
    local, sources = _local_stack_settings()
    if local:
        typer.echo(f"reading the local stack's settings ({', '.join(sources)}) for what is unset")
    try:
        lines, code = run(partial(load_settings, **local))
    except Exception as e:  # the process boundary: a line, never a stack trace
        lines, code = [f"FAIL doctor — unexpected error: {type(e).__name__}: {e}"], 1
    for line in lines:
        if line.startswith("FAIL"):
            typer.secho(line, fg=typer.colors.RED)
        else:
            typer.echo(line)
    raise typer.Exit(code)


@app.command()
def stdio() -> None:
    """Serve MCP over stdin/stdout (for agents that launch the relay as a subprocess)."""
    import anyio

    from hitl_relay.logs import configure_logging
    from hitl_relay.mcp_server import serve_stdio

    settings = _relay_settings()
    configure_logging(settings)  # stderr only: stdout is the MCP stream
    anyio.run(serve_stdio, settings)


@app.command()
def ask(
    question: str = typer.Argument(
        ..., help="The question for the operator (with --case-id: the caller's reply)."
    ),
    timeout: int = typer.Option(
        None, "--timeout", min=TIMEOUT_MIN, max=TIMEOUT_MAX, help="Seconds to wait."
    ),
    call_id: str = typer.Option(
        None, "--call-id", help="Call id (default: a new one; with --case-id: the case's call)."
    ),
    case_id: str = typer.Option(
        None,
        "--case-id",
        help="Follow-up after needs_info: the case the operator asked back on.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the raw result as JSON."),
) -> None:
    """Ask a human through the running relay, over MCP like an agent; wait for the answer.

    The answer goes to stdout, the status to stderr; exit 0 when answered, 3 otherwise. When the
    operator asks back (needs_info), reply with `ask --case-id <case> "<reply>"`.
    """
    import json
    import uuid

    import anyio
    from rich.console import Console

    from hitl_relay.mcp_client import RelayCallError, ask_human, client_env

    url, key = client_env()
    if not url or not key:
        _fail(
            "set HITL_MCP_URL and HITL_API_KEY (or run scripts/dev, which writes .hitl/relay.env)"
        )
    asked = _AskedCalls(Path(os.environ.get("HITL_HOME", ".hitl")) / "asked-calls.json")
    if case_id is not None:
        try:
            case_id = str(uuid.UUID(case_id))
        except ValueError:
            _fail(f"--case-id: must be a case id (a UUID), got {case_id!r}")
        remembered = call_id or asked.call_of(case_id)
        if remembered is None:
            _fail(
                f"--case-id: case {case_id} was not asked from here; pass --call-id with the "
                "call id that asked it (the platform accepts a follow-up only from that call)"
            )
        call_id = remembered
    call_id = call_id or f"cli-{uuid.uuid4().hex[:12]}"
    console = Console(stderr=True)

    async def run() -> dict[str, object]:
        with console.status("Asking a colleague...") as status:

            async def progress(progress: float, total: float | None, message: str | None) -> None:
                status.update(message or f"Waiting for a colleague ({progress:.0f} s)")

            return await ask_human(
                url,
                key,
                question,
                timeout_seconds=timeout,
                call_id=call_id,
                progress=progress,
                case_id=case_id,
            )

    try:
        result = anyio.run(run)
    except RelayCallError as e:
        _fail(str(e))
    if isinstance(result.get("case_id"), str):
        asked.remember(str(result["case_id"]), call_id)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_ask_result(result, call_id)
    raise typer.Exit(0 if result.get("status") == "answered" else 3)


def _print_ask_result(result: dict[str, object], call_id: str) -> None:
    """What an agent would say on stdout; the status and what to do next on stderr."""
    status = result.get("status")
    case = result.get("case_id")
    if status == "answered":
        typer.echo(str(result.get("answer")))
    elif status == "needs_info":
        typer.echo(f"Your colleague asks: {result.get('clarification')}")
    else:
        typer.echo(str(result.get("message")))
    deadline = result.get("deadline_s")
    of_deadline = f" of {deadline} s" if deadline is not None else ""
    waited = f"{result.get('waited_ms')} ms{of_deadline}"
    line = f"status: {status}  case: {case or '-'}  waited: {waited}  call: {call_id}"
    typer.echo(line, err=True)
    if status == "needs_info" and case:
        typer.echo(f'reply with: hitl-relay ask --case-id {case} "<the caller\'s reply>"', err=True)
    elif status in ("timeout", "unclear_answer") and case:
        typer.echo(f"the case stays open for operators: hitl-relay answer {case} ...", err=True)
    elif status == "no_operator" and case:
        typer.echo(
            f"nobody was on duty; the question is recorded in the operators' queue: "
            f"hitl-relay answer {case} ...",
            err=True,
        )


class _AskedCalls:
    """case id → the call id that asked it, for `ask --case-id` (the last 200 asks)."""

    LIMIT = 200

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        import json

        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def call_of(self, case_id: str) -> str | None:
        return self._load().get(case_id)

    def remember(self, case_id: str, call_id: str) -> None:
        import json

        calls = self._load()
        calls.pop(case_id, None)
        calls[case_id] = call_id
        kept = dict(list(calls.items())[-self.LIMIT :])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(kept))
        except OSError:
            pass  # only a convenience: --call-id still works


@app.command()
def keygen(
    hashed: bool = typer.Option(
        False, "--hash", help="Also print the .env line that stores only the key's SHA-256."
    ),
) -> None:
    """Print a new random API key and the line that adds it to .env."""
    from hitl_relay.security import env_lines, generate_key

    key = generate_key()
    plain, hash_line = env_lines(key)
    typer.echo(key)
    typer.echo(plain)
    if hashed:
        typer.echo(hash_line)


def _local_stack_settings() -> tuple[dict[str, object], list[str]]:
    """Settings of the local stack (`scripts/dev`) for what neither the environment nor .env
    sets, as `stats` and `answer` read them: Supabase's from HITL_HOME/devstack.env, the
    relay's API key from HITL_HOME/relay.env. Returns the overrides and the files used."""
    home = Path(os.environ.get("HITL_HOME", ".hitl"))
    dotenv = _env_file(Path(".env"))

    def unset(*names: str) -> bool:
        return not any(os.environ.get(n) or dotenv.get(n) for n in names)

    overrides: dict[str, object] = {}
    sources: list[str] = []
    stack = _env_file(home / "devstack.env")
    for name, field in (
        ("SUPABASE_URL", "supabase_url"),
        ("SUPABASE_SERVICE_ROLE_KEY", "supabase_service_role_key"),
        ("SUPABASE_ANON_KEY", "supabase_anon_key"),
    ):
        if stack.get(name) and unset(name, f"HITL_{name}"):
            overrides[field] = stack[name]
    if overrides:
        sources.append(str(home / "devstack.env"))
    relay_key = _env_file(home / "relay.env").get("HITL_API_KEY")
    if relay_key and unset("HITL_API_KEYS"):
        overrides["api_keys"] = [relay_key]
        sources.append(str(home / "relay.env"))
    return overrides, sources


def _local_env() -> dict[str, str]:
    """Environment, completed from .hitl/devstack.env for local use."""
    values = _env_file(Path(os.environ.get("HITL_HOME", ".hitl")) / "devstack.env")
    values.update({k: v for k, v in os.environ.items() if k.startswith(("SUPABASE_", "HITL_"))})
    return values


# What `answer` prints for each kind: what was actually sent.
SENT_WORDS = {
    "answer": "answered case {case_id}",
    "cannot_answer": (
        "sent cannot_answer on case {case_id} (the caller hears the unclear-answer fallback)"
    ),
    "clarification": (
        "sent a clarification on case {case_id} (a question back; the case stays open until "
        "the caller's reply is answered)"
    ),
}


@app.command()
def answer(
    case_id: str = typer.Argument(..., help="The case to answer (printed by ask / the console)."),
    text: str = typer.Argument(..., help="The answer, as the operator would type it."),
    kind: str = typer.Option(
        "answer", "--kind", help="answer, cannot_answer or clarification (ask back)."
    ),
) -> None:
    """Answer a case as the local operator (supabase-py, operator's token: RLS applies)."""
    import uuid

    from postgrest.exceptions import APIError

    try:
        uuid.UUID(case_id)
    except ValueError:
        _fail(f"case_id: must be a UUID, got {case_id!r}")
    if kind not in ("answer", "cannot_answer", "clarification"):
        _fail("--kind: must be answer, cannot_answer or clarification")
    env = _local_env()
    missing = [
        k
        for k in ("SUPABASE_URL", "SUPABASE_ANON_KEY", "HITL_OPERATOR_TOKEN", "HITL_OPERATOR_ID")
        if not env.get(k)
    ]
    if missing:
        _fail(f"{', '.join(missing)} not set: start the local stack (scripts/dev) first")

    async def run() -> None:
        from supabase import AsyncClientOptions, acreate_client

        client = await acreate_client(
            env["SUPABASE_URL"],
            env["SUPABASE_ANON_KEY"],
            options=AsyncClientOptions(
                headers={"Authorization": f"Bearer {env['HITL_OPERATOR_TOKEN']}"}
            ),
        )
        await (
            client.table("messages")
            .insert(
                {
                    "case_id": case_id,
                    "sender_type": "human",
                    "sender_id": env["HITL_OPERATOR_ID"],
                    "content": text,
                    "kind": kind,
                }
            )
            .execute()
        )

    try:
        asyncio.run(run())
    except APIError as e:
        _fail(f"the platform refused the answer: {e.message}")
    except OSError as e:
        _fail(f"cannot reach {env['SUPABASE_URL']}: {e}")
    typer.echo(SENT_WORDS[kind].format(case_id=case_id))


def _devstack_commands() -> ModuleType | None:
    """The local stack's commands (`devstack`, `dev`, `db`): the product's one import of the
    devstack, which a checkout installs beside it (scripts/setup) and the image does not."""
    try:
        from hitl_devstack import cli as devstack_cli
    except ModuleNotFoundError as e:
        if e.name != "hitl_devstack":
            raise
        return None
    return devstack_cli


def _configure_default_logging() -> None:
    from hitl_relay.logs import configure_logging

    configure_logging()


if (_stack := _devstack_commands()) is not None:
    _stack.register(app, _configure_default_logging)


def main() -> None:
    os.environ.setdefault("HITL_HOME", str(Path.cwd() / ".hitl"))
    app(prog_name="hitl-relay")


if __name__ == "__main__":
    main()
