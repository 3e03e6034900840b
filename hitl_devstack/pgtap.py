"""Run the pgTAP suite (`supabase/tests/*.sql`) with pg_prove against fresh migrated databases.

Each run builds a new database on the test cluster (`.hitl/test-pg`) from `supabase/local/` and
the migrations, installs pgTAP into it and runs the test files there as the non-superuser
`postgres` role, except those whose name ends in `_cron.sql` (that database has no pg_cron). Then
it runs every file, those included, in the cluster's `postgres` database, the one pg_cron lives
in, exactly as `supabase test db` runs them on a hosted-shaped stack (supabase/cli
`internal/db/test/test.go`: pg_prove on the whole folder, in the one database, as `postgres`).
Every file must therefore roll back what it changes. Exit status is pg_prove's.

Arguments ending in `.sql` choose test files (default: all); the others go to pg_prove.
`--update-snapshot` instead rewrites `supabase/schema.snapshot.sql` from a fresh database built
the same way (what `tests/db/test_snapshot.py` compares against).

The cluster is stopped at the end unless another run still uses it or HITL_KEEP_TEST_PG=1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import asyncpg

from hitl_devstack.cluster import Cluster, end_with_parent
from hitl_relay import migrate

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "supabase" / "tests"


async def _recreate(cluster: Cluster, name: str) -> None:
    """An empty database `name` (dropped first if it exists)."""
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()


async def prepare(cluster: Cluster, name: str) -> None:
    await _recreate(cluster, name)
    for db in (name, "postgres"):
        await migrate.apply(cluster.url(db), local=True)
        conn = await asyncpg.connect(cluster.url(db))
        try:
            await conn.execute("create extension if not exists pgtap with schema extensions")
        finally:
            await conn.close()


async def drop(cluster: Cluster, name: str) -> None:
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


def prove(cluster: Cluster, dbname: str, files: list[Path], extra: list[str]) -> int:
    if not files:
        return 0
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        print(
            "pgtap: pg_prove not found; run scripts/setup"
            " (apt: libtap-parser-sourcehandler-pgtap-perl)",
            file=sys.stderr,
        )
        return 2
    # No search_path option: `postgres`' own ("$user", public, extensions) finds pgTAP, as there.
    env = {**os.environ, "PGPASSWORD": "postgres"}
    argv = [
        pg_prove,
        "-h",
        "127.0.0.1",
        "-p",
        str(cluster.port),
        "-U",
        "postgres",
        "-d",
        dbname,
        *extra,
        *map(str, files),
    ]
    return subprocess.run(argv, env=env, check=False).returncode


async def update_snapshot(cluster: Cluster, name: str) -> Path:
    await _recreate(cluster, name)
    try:
        await migrate.apply(cluster.url(name), local=True)
        migrate.SNAPSHOT.write_text(await migrate.schema_snapshot(cluster.url(name)))
    finally:
        await drop(cluster, name)
    return migrate.SNAPSHOT


# The databases a run of the suites keeps on the test cluster while it runs, named after the
# run's process id (pytest's template, pg_prove's database, the snapshot's).
RUN_DATABASE_PREFIXES = ("hitl_tpl_", "pgtap_", "snapshot_")


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def runs_using(cluster: Cluster) -> list[int]:
    """Process ids of other live runs (pytest, pgtap) with a database on the cluster."""
    conn = await asyncpg.connect(cluster.url())
    try:
        names = [r["datname"] for r in await conn.fetch("select datname from pg_database")]
    finally:
        await conn.close()
    pids = []
    for name in names:
        for prefix in RUN_DATABASE_PREFIXES:
            suffix = name.removeprefix(prefix)
            if name.startswith(prefix) and suffix.isdigit():
                pid = int(suffix)
                if pid != os.getpid() and process_alive(pid):
                    pids.append(pid)
    return pids


def stop_unless_in_use(cluster: Cluster) -> str:
    """Stop the test cluster at the end of a run, unless HITL_KEEP_TEST_PG=1 or another live
    run still has a database on it; returns what was done, for the log."""
    if os.environ.get("HITL_KEEP_TEST_PG", "") in ("1", "true"):
        return "kept (HITL_KEEP_TEST_PG=1)"
    if not cluster.status().running:
        return "not running"
    others = asyncio.run(runs_using(cluster))
    if others:
        return f"kept: in use by run(s) {', '.join(map(str, others))}"
    cluster.stop()
    return "stopped"


def as_ctrl_c(_signum: int, frame: FrameType | None) -> None:
    """SIGTERM handled as Ctrl-C is at that moment: inside `asyncio.run` by its runner, which
    cancels the main task (asyncpg then ends its query and closes its connection), elsewhere
    by KeyboardInterrupt. Raising KeyboardInterrupt at any point inside the event loop instead
    (`default_int_handler`) can leave the run waiting on a connection left half-way: a run was
    once seen not to end within 60 s of SIGTERM, while Ctrl-C's runs always ended."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    cluster = Cluster(home / "test-pg", port=None)
    # SIGTERM ends the run as Ctrl-C does, through the `finally` that stops the cluster
    # (Python's default for SIGTERM ends the process at once and leaves Postgres running).
    signal.signal(signal.SIGTERM, as_ctrl_c)
    end_with_parent()
    try:
        cluster.start()
        return _main(cluster, argv)
    finally:
        stop_unless_in_use(cluster)


def _main(cluster: Cluster, argv: list[str]) -> int:
    if "--update-snapshot" in argv:
        path = asyncio.run(update_snapshot(cluster, f"snapshot_{os.getpid()}"))
        print(f"pgtap: wrote {path.relative_to(ROOT)}")
        return 0
    chosen = [Path(a).resolve() for a in argv if a.endswith(".sql")]
    argv = [a for a in argv if not a.endswith(".sql")]
    files = chosen or sorted(TESTS.glob("*.sql"))
    db_files = [f for f in files if not f.name.endswith("_cron.sql")]
    name = f"pgtap_{os.getpid()}"
    asyncio.run(prepare(cluster, name))
    try:
        code = prove(cluster, name, db_files, argv)
        code = prove(cluster, "postgres", files, argv) or code
    finally:
        asyncio.run(drop(cluster, name))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
