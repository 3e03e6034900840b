"""`python -m hitl_devstack`: the local Supabase stand-in for the relay and the console.

Starts (or reuses) the Postgres cluster in HITL_HOME (default `.hitl`), applies `supabase/local/`
and the migrations, then serves REST, Realtime and Auth on 127.0.0.1:54321. When ready it writes
`HITL_HOME/devstack.env` (mode 0600) and prints one line starting with `devstack ready`. It stops
cleanly on SIGINT or SIGTERM, Postgres included (unless `--keep-db` or HITL_KEEP_DB=1: then the
cluster keeps running for the next start to reuse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hitl_devstack.envfile import write_env_file

DEFAULT_PORT = 54321  # the Supabase CLI's API port
READY_MARKER = "devstack ready"
OPERATOR_EMAIL = "operator@hitl.local"
OPERATOR_TOKEN_TTL_S = 7 * 24 * 3600

log = logging.getLogger("hitl_devstack")


class StartError(RuntimeError):
    """The devstack cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Options:
    port: int
    db_port: int
    home: Path
    keep_db: bool = False


def home_dir() -> Path:
    return Path(os.environ.get("HITL_HOME", ".hitl")).resolve()


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m hitl_devstack", description=__doc__)
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("HITL_DEVSTACK_PORT", DEFAULT_PORT)),
        help="API port on 127.0.0.1 (default 54321, or HITL_DEVSTACK_PORT)",
    )
    parser.add_argument(
        "--db-port",
        type=int,
        default=int(os.environ.get("HITL_PG_PORT", 54322)),
        help="Postgres port on 127.0.0.1 (default 54322, or HITL_PG_PORT)",
    )
    parser.add_argument(
        "--keep-db",
        action="store_true",
        default=os.environ.get("HITL_KEEP_DB", "") in ("1", "true"),
        help="leave the Postgres cluster running on exit (default: stop it; or HITL_KEEP_DB=1)",
    )
    args = parser.parse_args(argv)
    for name in ("port", "db_port"):
        value = getattr(args, name)
        if not 0 <= value <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be a TCP port from 0 to 65535")
    return Options(port=args.port, db_port=args.db_port, home=home_dir(), keep_db=args.keep_db)


def _check_port_free(port: int) -> None:
    """Fail before the slow steps when the API port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise StartError(
                f"port {port} on 127.0.0.1 is taken ({e.strerror}): another devstack or Supabase "
                f"stack may be running; stop it, or pass --port / set HITL_DEVSTACK_PORT"
            ) from None


def _read_or_create(path: Path, make: str) -> str:
    """A small local secret or id kept in HITL_HOME (mode 0600), made once."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make + "\n")
    return make


async def serve(options: Options) -> None:
    from hitl_devstack.cluster import Cluster, ClusterError

    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    _check_port_free(options.port)
    cluster = Cluster(options.home / "pg", port=options.db_port)
    try:
        db_url = await asyncio.to_thread(cluster.start)
    except ClusterError as e:
        raise StartError(str(e)) from None
    try:
        await _serve_on(options, db_url, stop, started)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if options.keep_db:
            print(f"devstack: Postgres left running ({db_url}; --keep-db)", flush=True)
        else:
            await asyncio.to_thread(cluster.stop)


async def _serve_on(options: Options, db_url: str, stop: asyncio.Event, started: float) -> None:
    """Migrate, serve until `stop`; the caller stops the cluster."""
    from hitl_devstack.context import LocalUser
    from hitl_devstack.keys import load_or_create
    from hitl_devstack.server import Devstack, DevstackError
    from hitl_relay import gc_tuning, migrate

    try:
        await migrate.apply(db_url, local=True)
    except migrate.MigrationError as e:
        raise StartError(f"migrations failed: {e}") from None
    keys = load_or_create(options.home)
    operator_id = _read_or_create(options.home / "operator_id", str(uuid.uuid4()))
    password = _read_or_create(options.home / "operator_password", secrets.token_urlsafe(18))
    operator = LocalUser(email=OPERATOR_EMAIL, password=password, id=operator_id)
    stack = Devstack(db_url, keys, port=options.port, users=[operator])
    try:
        await stack.start()
    except DevstackError as e:
        raise StartError(str(e)) from None
    try:
        env_path = options.home / "devstack.env"
        write_env_file(
            env_path,
            {
                "SUPABASE_URL": stack.url,
                "SUPABASE_ANON_KEY": keys.anon_key,
                "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key,
                # the new API keys, as the dashboard names them (see gateway.py)
                "SUPABASE_PUBLISHABLE_KEY": keys.publishable_key,
                "SUPABASE_SECRET_KEY": keys.secret_key,
                "SUPABASE_JWT_SECRET": keys.jwt_secret,
                "DATABASE_URL": db_url,
                "HITL_OPERATOR_ID": operator_id,
                "HITL_OPERATOR_EMAIL": OPERATOR_EMAIL,
                "HITL_OPERATOR_PASSWORD": password,
                "HITL_OPERATOR_TOKEN": keys.user_token(
                    operator_id, email=OPERATOR_EMAIL, operator=True, ttl_s=OPERATOR_TOKEN_TTL_S
                ),
            },
            header="written by `python -m hitl_devstack`; local secrets, never commit",
        )
        print(
            f"{READY_MARKER} at {stack.url} in {time.monotonic() - started:.1f} s "
            f"(database {db_url}; keys in {env_path})",
            flush=True,
        )
        # Thousands of joined channels: the stand-in's own full collections (seconds of pause)
        # would be measured as the platform's latency, which hosted Realtime (Elixir) has not.
        async with gc_tuning.freezing():
            await stop.wait()
    finally:
        await stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("HITL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = parse_args(argv)
    try:
        asyncio.run(serve(options))
    except StartError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    with contextlib.suppress(BrokenPipeError):
        print("devstack stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
