"""Apply the SQL schema: `supabase/local/` (bare Postgres only) then `supabase/migrations/`.

Migrations are recorded in `supabase_migrations.schema_migrations` exactly as the Supabase CLI
records them (version, name, statements), so a project managed by the CLI sees one history.
Each file runs in its own transaction, as `supabase db push` runs each file (supabase/cli
pkg/migration/file.go ExecBatch: one batch, one transaction per file); an advisory lock keeps
two migrators from racing. Every database notice and warning goes to `on_notice`.

On a hosted project the migrations run as the non-superuser `postgres` (or the CLI's temporary
`cli_login_postgres` acting as it). Two things can then go wrong that the caller must hear:
- a file that creates policies on `realtime.messages` (owned by `supabase_realtime_admin`) is
  refused with "must be owner" where supautils' `policy_grants` does not apply (the CLI's
  `db push`, supabase/cli issue 6116): `PolicyRefused` carries the exact SQL to run in the
  dashboard's SQL editor instead (the file, then its row in the migration history);
- pg_cron is missing, so the expiry and purge jobs are not scheduled: `Outcome.cron_scheduled`.

`local=True` is for the local stack only: the URL is its superuser's, `supabase/local/` runs as
that superuser, and the migrations run as the non-superuser `postgres` of the same database.

`schema_snapshot(url)` is the normalised `pg_dump --schema-only` that
`supabase/schema.snapshot.sql` holds; `scripts/pgtap --update-snapshot` rewrites that file.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

SUPABASE_DIR = Path(__file__).resolve().parents[1] / "supabase"
SNAPSHOT = SUPABASE_DIR / "schema.snapshot.sql"
SNAPSHOT_SCHEMAS = ("public", "auth", "realtime", "supabase_migrations")
MIGRATION_NAME = re.compile(r"^([0-9]+)_(.*)\.sql$")  # the Supabase CLI's own pattern
LOCK_KEY = 0x48_49_54_4C  # "HITL"
MIGRATION_ROLE = "postgres"  # the role hosted projects apply migrations as
# The pg_cron jobs 20261125000500_hitl_cron.sql schedules; `migrate` checks they exist.
CRON_JOBS = ("hitl-expire-sessions", "hitl-purge")
NO_CRON_CONSEQUENCE = (
    "without pg_cron the expiry and purge jobs do not run: sessions then expire only through "
    "the relay (its own deadline and its recovery sweep), and nothing purges old cases"
)

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


class PolicyRefused(MigrationError):
    """Postgres refused policy DDL on a table the migration role does not own.

    `sql` is what to run in the dashboard's SQL editor, where supautils lets `postgres` manage
    policies on `realtime.messages`: the migration file, then its row in the history, so the
    next `migrate` or `db push` sees it applied.
    """

    def __init__(self, message: str, migration: Migration, sql: str) -> None:
        super().__init__(message)
        self.migration = migration
        self.sql = sql


@dataclass
class Outcome:
    """What one `run` did: the versions it applied, and whether pg_cron's jobs exist."""

    applied: list[str] = field(default_factory=list)
    cron_scheduled: bool = False
    cron_detail: str = ""


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
    except asyncpg.InsufficientPrivilegeError as e:
        if isinstance(target, Migration) and _refused_policy_grant(sql, str(e)):
            raise PolicyRefused(_describe(path, sql, e), target, sql_editor_step(target)) from e
        raise MigrationError(_describe(path, sql, e)) from e
    except asyncpg.PostgresError as e:
        raise MigrationError(_describe(path, sql, e)) from e


def _refused_policy_grant(sql: str, error: str) -> bool:
    """Whether `error` refused policy DDL in `sql` on a table supautils' policy_grants names:
    the one refusal the SQL editor can overcome. Anything else is a plain failure."""
    m = re.match(r"must be owner of (?:table|relation) (\S+)$", error)
    if m is None:
        return False
    granted = set(POLICY_GRANTS[MIGRATION_ROLE])
    return any(
        (target := policy_target(st)) in granted and target.rsplit(".", 1)[-1] == m.group(1)
        for st in split_statements(sql)
    )


def sql_editor_step(m: Migration) -> str:
    """The SQL to paste into the SQL editor when `m` is refused: the file, then its history row
    (what `supabase migration repair --status applied <version>` would record)."""
    literal = "$hitl_migration$"
    body = m.sql.rstrip()
    return (
        f"-- {m.path.name}\n{body}\n\n"
        "-- record it as applied, so `hitl-relay migrate` and `supabase db push` skip it\n"
        "insert into supabase_migrations.schema_migrations (version, name, statements)\n"
        f"values ('{m.version}', '{m.name}', array[{literal}{m.sql}{literal}])\n"
        "on conflict (version) do nothing;\n"
    )


def as_role(database_url: str, role: str) -> str:
    """The same database URL with another user name (the local stack shares one password)."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    password = parts.password
    auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


# supautils.policy_grants on hosted projects (supabase/postgres
# ansible/files/postgresql_config/supautils.conf.j2): the tables whose policies `postgres` may
# create, alter, drop and comment on without owning them.
POLICY_GRANTS = {
    "postgres": (
        "auth.audit_log_entries",
        "auth.identities",
        "auth.refresh_tokens",
        "auth.sessions",
        "auth.users",
        "realtime.messages",
        "storage.buckets",
        "storage.migrations",
        "storage.objects",
        "storage.s3_multipart_uploads",
        "storage.s3_multipart_uploads_parts",
    )
}
_POLICY_DDL = re.compile(
    r"^\s*(?:(?:create|alter|drop)\s+policy|comment\s+on\s+policy)\b.*?\bon\s+"
    r'("?[a-z_][a-z0-9_]*"?\s*\.\s*"?[a-z_][a-z0-9_]*"?)',
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$[a-z_0-9]*\$)|;", re.I | re.S
)


def split_statements(sql: str) -> list[str]:
    """Top-level statements of a script: semicolons outside quotes, comments and $$ bodies."""
    out: list[str] = []
    start = pos = 0
    while (m := _TOKEN.search(sql, pos)) is not None:
        if m.group(1):  # a dollar quote: skip to its closing tag
            close = sql.find(m.group(1), m.end())
            pos = len(sql) if close < 0 else close + len(m.group(1))
            continue
        pos = m.end()
        if m.group(0) == ";":
            out.append(sql[start : m.start()])
            start = pos
    out.append(sql[start:])
    return [s for s in (st.strip() for st in out) if _TOKEN.sub("", s).strip()]


def policy_target(statement: str) -> str | None:
    """`schema.table` of a CREATE/ALTER/DROP/COMMENT ON POLICY statement, else None."""
    body = re.sub(r"^(\s*--[^\n]*\n|\s*/\*.*?\*/)*", "", statement, flags=re.S)
    m = _POLICY_DDL.match(body)
    return re.sub(r'[\s"]', "", m.group(1)).lower() if m else None


async def local_sql_editor(admin_url: str, sql: str, role: str = MIGRATION_ROLE) -> None:
    """Run `sql` as the dashboard's SQL editor would on a hosted project, on the local stack.

    Every statement runs as `role`, in one transaction, except policy DDL on a table that
    supautils' `policy_grants` lists for that role: supautils runs those as its superuser, so
    here they run with the superuser's own rights (`reset role`). Nothing else is lifted.
    """
    granted = set(POLICY_GRANTS.get(role, ()))
    conn = await _connect(admin_url)
    try:
        async with conn.transaction():
            for statement in split_statements(sql):
                lifted = policy_target(statement) in granted
                await conn.execute("reset role" if lifted else f'set role "{role}"')
                await conn.execute(statement)
            await conn.execute("reset role")
    finally:
        await conn.close()


async def _connect(database_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(database_url)
    except (TimeoutError, OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise MigrationError(f"cannot connect to the database: {e}") from e


def _listener(on_notice: Callable[[str], None] | None) -> Callable[..., None]:
    def listen(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        if on_notice is not None:
            severity = getattr(message, "severity", None) or "NOTICE"
            text = getattr(message, "message", None) or str(message)
            on_notice(f"{severity}: {text}")

    return listen


async def _cron_jobs(conn: asyncpg.Connection) -> tuple[bool, str]:
    """Whether every job of CRON_JOBS exists in this database's pg_cron, and why not."""
    ext = await conn.fetchrow(
        "select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
        " where e.extname = 'pg_cron'"
    )
    if ext is None:
        return False, f"pg_cron is not installed in database {await _dbname(conn)}"
    try:
        found = {
            r["jobname"]
            for r in await conn.fetch(
                "select jobname from cron.job where jobname = any($1::text[])", list(CRON_JOBS)
            )
        }
    except asyncpg.PostgresError as e:
        return False, f"cron.job cannot be read: {e}"
    missing = [j for j in CRON_JOBS if j not in found]
    if missing:
        return False, f"pg_cron jobs missing: {', '.join(missing)}"
    return True, f"pg_cron jobs scheduled: {', '.join(CRON_JOBS)}"


async def _dbname(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("select current_database()"))


async def run(
    database_url: str,
    *,
    local: bool = False,
    supabase_dir: Path | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Outcome:
    """Apply what is missing; say what was applied and whether the cron jobs exist.

    `supabase_dir` (default: the repository's `supabase/`) holds `local/` and `migrations/`.
    Raises `PolicyRefused` (with the SQL-editor step) or `MigrationError`; files before the
    failing one stay applied, each in its own committed transaction.
    """
    root = supabase_dir or SUPABASE_DIR
    found = migrations(root / "migrations")
    listen = _listener(on_notice)
    admin_url = database_url
    if local:
        admin = await _connect(database_url)
        try:
            admin.add_log_listener(listen)
            await admin.execute("select pg_advisory_lock($1)", LOCK_KEY)
            for path in local_files(root / "local"):
                await _run_file(admin, path, path.read_text())
        finally:
            await admin.close()
        database_url = as_role(database_url, MIGRATION_ROLE)
    conn = await _connect(database_url)
    outcome = Outcome()
    try:
        conn.add_log_listener(listen)
        await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
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
            try:
                await _run_file(conn, m, m.sql)
            except PolicyRefused as refused:
                if not local:
                    raise
                if on_notice is not None:
                    on_notice(
                        f"NOTICE: {m.path.name} was refused to `{MIGRATION_ROLE}` as `db push` "
                        f"is on hosted ({refused}); the local stack runs it through its SQL-editor "
                        "stand-in (supautils policy_grants)"
                    )
                await local_sql_editor(admin_url, refused.sql)
            outcome.applied.append(m.version)
        outcome.cron_scheduled, outcome.cron_detail = await _cron_jobs(conn)
    finally:
        await conn.close()
    return outcome


async def apply(
    database_url: str,
    *,
    local: bool = False,
    supabase_dir: Path | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply what is missing; return the versions applied by this call (see `run`)."""
    outcome = await run(database_url, local=local, supabase_dir=supabase_dir, on_notice=on_notice)
    return outcome.applied


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
    # Realtime's daily partitions are named after dates: left out so the snapshot is stable.
    argv = [_pg_dump(), "--schema-only", "--no-owner", "--no-comments"]
    argv += ["--exclude-table", "realtime.messages_[0-9]*"]
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
