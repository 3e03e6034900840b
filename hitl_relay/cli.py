"""The `hitl-relay` command: run the relay, the local stack, and the operator's chores."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The local Postgres 15 + pg_cron cluster.")
app.add_typer(db_app, name="db")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@db_app.command("start")
def db_start() -> None:
    """Create (first time) and start the local cluster; print its URL."""
    from hitl_relay.devstack.cluster import ClusterError, default_cluster

    try:
        typer.echo(default_cluster().start())
    except ClusterError as e:
        _fail(str(e))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local cluster (fast shutdown)."""
    from hitl_relay.devstack.cluster import ClusterError, default_cluster

    try:
        default_cluster().stop()
    except ClusterError as e:
        _fail(str(e))
    typer.echo("stopped")


@db_app.command("status")
def db_status() -> None:
    """Say whether the local cluster runs, and where."""
    from hitl_relay.devstack.cluster import default_cluster

    status = default_cluster().status()
    typer.echo(str(status))
    raise typer.Exit(0 if status.running else 3)


@db_app.command("url")
def db_url() -> None:
    """Print the local cluster's connection URL."""
    from hitl_relay.devstack.cluster import default_cluster

    typer.echo(default_cluster().url())


@app.command()
def migrate(
    database_url: str = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="Target database (default: local)."
    ),
    local: bool = typer.Option(
        False, "--local", help="Also apply supabase/local/ (bare Postgres only)."
    ),
) -> None:
    """Apply supabase/migrations in order, recorded as the Supabase CLI records them."""
    from hitl_relay import migrate as migrations

    if database_url is None:
        from hitl_relay.devstack.cluster import default_cluster

        database_url = default_cluster().url()
        local = True
    try:
        applied = asyncio.run(migrations.apply(database_url, local=local))
    except migrations.MigrationError as e:
        _fail(str(e))
    listed = f": {', '.join(applied)}" if applied else ""
    typer.echo(f"applied {len(applied)} migration(s){listed}")


@app.command()
def devstack(
    port: int = typer.Option(
        54321, "--port", envvar="HITL_DEVSTACK_PORT", help="API port on 127.0.0.1."
    ),
    db_port: int = typer.Option(
        54322, "--db-port", envvar="HITL_PG_PORT", help="Postgres port on 127.0.0.1."
    ),
) -> None:
    """Serve the local Supabase stand-in (REST, Realtime, Auth) until Ctrl-C."""
    from hitl_relay.devstack.__main__ import main as devstack_main

    raise typer.Exit(devstack_main(["--port", str(port), "--db-port", str(db_port)]))


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
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    env_file = Path(os.environ.get("HITL_HOME", ".hitl")) / "devstack.env"
    if (not url or not key) and env_file.exists():
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name == "SUPABASE_URL" and not url:
                url = value.strip()
            if name == "SUPABASE_SERVICE_ROLE_KEY" and not key:
                key = value.strip()
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


def main() -> None:
    os.environ.setdefault("HITL_HOME", str(Path.cwd() / ".hitl"))
    app(prog_name="hitl-relay")


if __name__ == "__main__":
    main()
