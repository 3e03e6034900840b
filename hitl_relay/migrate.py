"""Apply the SQL schema: `supabase/local/` (bare Postgres only) then `supabase/migrations/`.

Migrations are recorded in `supabase_migrations.schema_migrations` exactly as the Supabase CLI
records them (version, name, statements), so a project managed by the CLI sees one history.
Each file runs in its own transaction; an advisory lock keeps two migrators from racing.

`schema_snapshot(url)` is the normalised `pg_dump --schema-only` that
`supabase/schema.snapshot.sql` holds; `scripts/pgtap --update-snapshot` rewrites that file.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import asyncpg

SUPABASE_DIR = Path(__file__).resolve().parents[1] / "supabase"
SNAPSHOT = SUPABASE_DIR / "schema.snapshot.sql"
SNAPSHOT_SCHEMAS = ("public", "auth", "realtime", "supabase_migrations")
MIGRATION_NAME = re.compile(r"^([0-9]+)_(.*)\.sql$")  # the Supabase CLI's own pattern
LOCK_KEY = 0x48_49_54_4C  # "HITL"

# The history table as the Supabase CLI creates it (pkg/migration/history.go), column by column,
# so a table made by an older CLI (version only) gains the newer columns.
HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
"""


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


def _describe(path: Path, sql: str, e: asyncpg.PostgresError) -> str:
    where = ""
    position = getattr(e, "position", None)
    if position:
        line = sql.count("\n", 0, int(position) - 1) + 1
        where = f" (line {line})"
    detail = "".join(
        f"\n  {label}: {value}"
        for label, value in (("DETAIL", e.detail), ("HINT", e.hint), ("WHERE", e.context))
        if value
    )
    return f"{path.name}{where}: {e.__class__.__name__} [{e.sqlstate}]: {e}{detail}"


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
        raise MigrationError(_describe(path, sql, e)) from e


async def apply(
    database_url: str, *, local: bool = False, supabase_dir: Path | None = None
) -> list[str]:
    """Apply what is missing; return the versions applied by this call.

    `supabase_dir` (default: the repository's `supabase/`) holds `local/` and `migrations/`.
    """
    root = supabase_dir or SUPABASE_DIR
    found = migrations(root / "migrations")
    try:
        conn = await asyncpg.connect(database_url)
    except (TimeoutError, OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise MigrationError(f"cannot connect to the database: {e}") from e
    applied: list[str] = []
    try:
        await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
        # Notices (e.g. "pg_cron not available here") are expected and not errors.
        conn.add_log_listener(lambda *_: None)
        if local:
            for path in local_files(root / "local"):
                await _run_file(conn, path, path.read_text())
        try:
            await conn.execute(HISTORY_DDL)
        except asyncpg.PostgresError as e:
            raise MigrationError(f"supabase_migrations.schema_migrations: {e}") from e
        done = {
            r["version"]
            for r in await conn.fetch("select version from supabase_migrations.schema_migrations")
        }
        for m in found:
            if m.version in done:
                continue
            await _run_file(conn, m, m.sql)
            applied.append(m.version)
    finally:
        await conn.close()
    return applied


# ---- schema snapshot ---------------------------------------------------------------------------
_DROPPED_LINE = re.compile(r"^(--|SET |SELECT pg_catalog\.set_config\(|\\(un)?restrict )")


def normalise_dump(dump: str) -> str:
    """pg_dump output without comments, session settings, version lines and blank runs."""
    kept = [line.rstrip() for line in dump.splitlines() if not _DROPPED_LINE.match(line)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return text + "\n"


def _pg_dump() -> str:
    candidates = [Path(os.environ.get("HITL_PG_BIN", "/usr/lib/postgresql/15/bin")) / "pg_dump"]
    found = shutil.which("pg_dump")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise MigrationError("pg_dump not found: run scripts/setup (apt: postgresql-15)")


async def schema_snapshot(database_url: str) -> str:
    """The normalised schema-only dump of the hitl schemas of a database."""
    argv = [_pg_dump(), "--schema-only", "--no-owner", "--no-comments"]
    for schema in SNAPSHOT_SCHEMAS:
        argv += ["--schema", schema]
    argv += ["--dbname", database_url]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise MigrationError(f"pg_dump failed: {err.decode(errors='replace').strip()}")
    return normalise_dump(out.decode())
