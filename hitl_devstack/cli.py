"""The local stack's commands, which `hitl-relay` shows when the devstack is installed (a checkout
after scripts/setup; never the image): `devstack`, `dev`, and `db start|stop|status|url`.

The product's CLI imports this module and nothing else of the devstack (`register`, and
`local_database_url` for `migrate` without a URL). Everything heavier is imported inside the
commands, so `hitl-relay serve` pays only for typer here. The product hands in its logging set-up
(`register(app, configure_logging)`) so that the devstack needs nothing of the product for it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


db_app = typer.Typer(no_args_is_help=True, help="The local Postgres 15 + pg_cron cluster.")


@db_app.command("start")
def db_start() -> None:
    """Create (first time) and start the local cluster; print its URL."""
    from hitl_devstack.cluster import ClusterError, default_cluster

    try:
        typer.echo(default_cluster().start())
    except ClusterError as e:
        _fail(str(e))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local cluster (fast shutdown)."""
    from hitl_devstack.cluster import ClusterError, default_cluster

    try:
        default_cluster().stop()
    except ClusterError as e:
        _fail(str(e))
    typer.echo("stopped")


@db_app.command("status")
def db_status() -> None:
    """Say whether the local cluster runs, and where."""
    from hitl_devstack.cluster import default_cluster

    status = default_cluster().status()
    typer.echo(str(status))
    raise typer.Exit(0 if status.running else 3)


@db_app.command("url")
def db_url() -> None:
    """Print the local cluster's connection URL."""
    typer.echo(local_database_url())


def local_database_url() -> str:
    """The local cluster's URL (`hitl-relay migrate` without --database-url targets it)."""
    from hitl_devstack.cluster import default_cluster

    return default_cluster().url()


def devstack(
    port: int = typer.Option(
        54321, "--port", envvar="HITL_DEVSTACK_PORT", help="API port on 127.0.0.1."
    ),
    db_port: int = typer.Option(
        54322, "--db-port", envvar="HITL_PG_PORT", help="Postgres port on 127.0.0.1."
    ),
    keep_db: bool = typer.Option(
        False, "--keep-db", help="Leave Postgres running on exit (default: stop it)."
    ),
) -> None:
    """Serve the local Supabase stand-in (REST, Realtime, Auth) until Ctrl-C, which stops it
    and its Postgres (unless --keep-db)."""
    from hitl_devstack.__main__ import main as devstack_main

    _configure_logging()
    argv = ["--port", str(port), "--db-port", str(db_port)] + (["--keep-db"] if keep_db else [])
    raise typer.Exit(devstack_main(argv))


def dev(
    once: bool = typer.Option(False, "--once", help="Run the demo escalation, then exit."),
    port: int = typer.Option(8080, "--port", help="Relay port (a free one if taken)."),
    nobody_on_duty: bool = typer.Option(
        False,
        "--nobody-on-duty",
        help="Put no operator on duty: shows the no_operator path (the question is recorded).",
    ),
    keep_db: bool = typer.Option(
        False, "--keep-db", help="Leave Postgres running on exit (faster next start)."
    ),
) -> None:
    """Local stack + relay + console, the local operator on duty, one demo escalation (what
    scripts/dev runs). Ctrl-C or SIGTERM stops everything it started, Postgres included."""
    from hitl_devstack.dev import run_dev

    _configure_logging()
    home = Path(os.environ.get("HITL_HOME", ".hitl")).resolve()
    raise typer.Exit(
        asyncio.run(
            run_dev(
                once=once,
                home=home,
                relay_port=port,
                nobody_on_duty=nobody_on_duty,
                keep_db=keep_db,
            )
        )
    )


def _no_logging_set_up() -> None:
    """Until `register` is given the product's set-up, the stdlib's defaults apply."""


_configure_logging: Callable[[], object] = _no_logging_set_up


def register(app: typer.Typer, configure_logging: Callable[[], object]) -> None:
    """Add the local stack's commands to the `hitl-relay` command; `configure_logging` is run
    before the long-running ones (`devstack`, `dev`) start, as `serve` runs it."""
    global _configure_logging
    _configure_logging = configure_logging
    app.add_typer(db_app, name="db")
    app.command()(devstack)
    app.command()(dev)
