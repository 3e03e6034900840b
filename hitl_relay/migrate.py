"""Apply the SQL schema: `supabase/local/` (bare Postgres only) then `supabase/migrations/`.

Migrations are recorded in `supabase_migrations.schema_migrations` exactly as the Supabase CLI
records them (version, name, statements), so a project managed by the CLI sees one history.
Each file runs in its own transaction; an advisory lock keeps two migrators from racing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

SUPABASE_DIR = Path(__file__).resolve().parents[1] / "supabase"
MIGRATION_NAME = re.compile(r"^([0-9]+)_(.*)\.sql$")  # the Supabase CLI's own pattern
LOCK_KEY = 0x48_49_54_4C  # "HITL"


class MigrationError(Exception):
    """A migration file failed; the message names the file and Postgres' error."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()


def migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in version order."""
    directory = directory or SUPABASE_DIR / "migrations"
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = MIGRATION_NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path.name}: not named <YYYYMMDDHHMMSS>_<name>.sql")
        found.append(Migration(version=m.group(1), name=m.group(2), path=path))
    return sorted(found, key=lambda m: int(m.version))


def local_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or SUPABASE_DIR / "local").glob("*.sql"))


async def _run_file(conn: asyncpg.Connection, target: Path | Migration, sql: str) -> None:
    """Run one file in its own transaction; a migration is recorded in the same transaction."""
    path = target.path if isinstance(target, Migration) else target
    try:
        async with conn.transaction():
            await conn.execute(sql)
            if isinstance(target, Migration):
                await conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name, statements)"
                    " values ($1, $2, $3)",
                    target.version,
                    target.name,
                    [sql],
                )
    except asyncpg.PostgresError as e:
        where = f" (line {e.position})" if getattr(e, "position", None) else ""
        raise MigrationError(f"{path.name}{where}: {e.__class__.__name__}: {e}") from e


async def apply(database_url: str, *, local: bool = False) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as e:
        raise MigrationError(f"cannot connect to the database: {e}") from e
    applied: list[str] = []
    try:
        await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
        # Notices (e.g. "pg_cron not available here") are expected and not errors.
        conn.add_log_listener(lambda *_: None)
        if local:
            for path in local_files():
                await _run_file(conn, path, path.read_text())
        await conn.execute(
            "create schema if not exists supabase_migrations;"
            "create table if not exists supabase_migrations.schema_migrations ("
            " version text primary key, statements text[], name text)"
        )
        done = {
            r["version"]
            for r in await conn.fetch("select version from supabase_migrations.schema_migrations")
        }
        for m in migrations():
            if m.version in done:
                continue
            await _run_file(conn, m, m.sql)
            applied.append(m.version)
    finally:
        await conn.close()
    return applied
