"""The migrations on a hosted-shaped database: applied by the non-superuser `postgres`, one
transaction per file, as `supabase db push` applies them (hitl_devstack/README.md,
"Hosted behaviour: database").

- After every single file, no table of ours is readable or writable by `anon` or by a signed-in
  user who is not an operator.
- The realtime policies are refused to `postgres` (it does not own `realtime.messages`), and
  `hitl-relay migrate` says so, prints the SQL for the dashboard's SQL editor and exits non-zero;
  run there, the migration is recorded and the next `migrate` is a no-op.
- A database without pg_cron makes `migrate` fail loudly unless `--allow-no-cron` is given.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from hitl_devstack.cluster import Cluster
from hitl_relay import migrate
from hitl_relay.cli import app

API_ROLES = ("anon", "authenticated")
# A signed-in user who is not an operator (no app_metadata.hitl_role), and nobody at all.
CLAIMS = {
    "anon": '{"role": "anon"}',
    "authenticated": '{"role": "authenticated", "sub": "0b000000-0000-0000-0000-00000000000b",'
    ' "app_metadata": {}, "user_metadata": {"hitl_role": "operator"}}',
}


@pytest.fixture
async def hosted_db(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A fresh database laid out like a hosted project (supabase/local/), nothing migrated;
    yields its superuser URL (`migrate.as_role(url, "postgres")` is the migration role's)."""
    name = f"h_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"create database {name}")
    finally:
        await admin.close()
    url = pg_cluster.url(name)
    conn = await asyncpg.connect(url)
    try:
        conn.add_log_listener(lambda *_: None)
        for path in migrate.local_files():
            await conn.execute(path.read_text())
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


async def openings(conn: asyncpg.Connection) -> list[str]:
    """Every way `anon` or a non-operator could read or write a table of ours right now."""
    found: list[str] = []
    tables = await conn.fetch(
        "select c.oid::regclass::text as name, c.relkind, c.relrowsecurity"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm')"
    )
    for t in tables:
        for role in API_ROLES:
            # never subject to row-level security
            for priv in ("TRUNCATE", "REFERENCES", "TRIGGER"):
                if await conn.fetchval(
                    "select has_table_privilege($1, $2, $3)", role, t["name"], priv
                ):
                    found.append(f"{role} has {priv} on {t['name']}")
            granted = [
                p
                for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
                if await conn.fetchval("select has_table_privilege($1, $2, $3)", role, t["name"], p)
            ]
            if granted and t["relkind"] in ("v", "m"):
                found.append(f"{role} has {', '.join(granted)} on the view {t['name']}")
            elif granted and not t["relrowsecurity"]:
                found.append(f"{role} has {', '.join(granted)} on {t['name']} without RLS")
    # with RLS on and privileges granted, the policies decide: try them as each role
    for role in API_ROLES:
        async with conn.transaction():
            await conn.execute(
                "select set_config('request.jwt.claims', $1, true),"
                " set_config('request.jwt.claim.sub', coalesce($1::jsonb ->> 'sub', ''), true)",
                CLAIMS[role],
            )
            await conn.execute(f"set local role {role}")
            for t in tables:
                if t["relkind"] != "r":
                    continue
                try:
                    async with conn.transaction():
                        rows = await conn.fetchval(f"select count(*) from {t['name']}")
                except asyncpg.InsufficientPrivilegeError:
                    rows = 0
                if rows:
                    found.append(f"{role} reads {rows} row(s) of {t['name']}")
            await conn.execute("reset role")
    return found


async def seed(conn: asyncpg.Connection) -> None:
    """One row in every table that exists yet (as `postgres`, who bypasses RLS on hosted)."""
    await conn.execute(
        """
        do $$
        begin
          insert into public.cases (id, source, status, description, expires_at)
            values ('a0000000-0000-0000-0000-0000000000c5', 'mcp_voice', 'open', 'q',
                    now() + interval '1 hour') on conflict do nothing;
          insert into public.messages (case_id, sender_type, content, kind)
            values ('a0000000-0000-0000-0000-0000000000c5', 'ai', 'note', 'note');
          insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id,
                                           idempotency_key, expires_at)
            values ('m', 'c', 'a0000000-0000-0000-0000-0000000000c5',
                    gen_random_uuid()::text, now() + interval '1 minute');
          insert into public.hil_case_secrets (case_id, webhook_secret)
            values ('a0000000-0000-0000-0000-0000000000c5', 'whsec') on conflict do nothing;
          insert into public.hil_audit (actor, action) values ('test', 'seed');
        end
        $$
        """
    )


async def writes(conn: asyncpg.Connection) -> list[str]:
    """Inserts `anon` or a non-operator manage, each tried and rolled back."""
    found: list[str] = []
    attempts = {
        "public.cases": "insert into public.cases (source, description) values ('x', 'x')",
        "public.messages": "insert into public.messages (case_id, sender_type, sender_id, content)"
        " values ('a0000000-0000-0000-0000-0000000000c5', 'human',"
        " '0b000000-0000-0000-0000-00000000000b', 'forged')",
        "public.hil_case_secrets": "insert into public.hil_case_secrets (case_id)"
        " values ('a0000000-0000-0000-0000-0000000000c5')",
        "public.hil_audit": "insert into public.hil_audit (actor, action) values ('x', 'x')",
    }
    for role in API_ROLES:
        for table, sql in attempts.items():
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(
                    "select set_config('request.jwt.claims', $1, true),"
                    " set_config('request.jwt.claim.sub', coalesce($1::jsonb ->> 'sub', ''), true)",
                    CLAIMS[role],
                )
                await conn.execute(f"set local role {role}")
                await conn.execute(sql)
                found.append(f"{role} inserted into {table}")
            except asyncpg.PostgresError:
                pass  # refused: what we want (permission or row-level security)
            finally:
                await tx.rollback()
    return found


async def test_every_migration_leaves_every_table_closed_to_anon_and_non_operators(
    hosted_db: str, tmp_path: Path
) -> None:
    """Files applied one at a time, each by `postgres` in its own transaction; after each one
    the tables that exist are closed, with rows in them to see."""
    url = migrate.as_role(hosted_db, "postgres")
    folder = tmp_path / "migrations"
    folder.mkdir()
    conn = await asyncpg.connect(url)
    conn.add_log_listener(lambda *_: None)
    steps: list[str] = []
    try:
        for m in migrate.migrations():
            shutil.copy(m.path, folder / m.path.name)
            try:
                await migrate.run(url, supabase_dir=tmp_path)
            except migrate.PolicyRefused:
                assert m.path.name.endswith("_hitl_realtime_policies.sql")
            steps.append(m.path.name)
            if await conn.fetchval("select to_regclass('public.hil_audit') is not null"):
                await seed(conn)
            problems = await openings(conn) + await writes(conn)
            assert problems == [], f"after {m.path.name}: {problems}"
    finally:
        await conn.close()
    assert steps == [m.path.name for m in migrate.migrations()]


async def test_the_realtime_policies_are_refused_to_postgres_as_on_db_push(hosted_db: str) -> None:
    url = migrate.as_role(hosted_db, "postgres")
    with pytest.raises(migrate.PolicyRefused) as refused:
        await migrate.run(url)

    assert "must be owner of table messages" in str(refused.value)
    assert refused.value.migration.path.name == "20261206900000_hitl_realtime_policies.sql"
    versions = [m.version for m in migrate.migrations()]
    conn = await asyncpg.connect(url)
    try:
        recorded = await conn.fetch(
            "select version from supabase_migrations.schema_migrations order by version"
        )
        assert [r["version"] for r in recorded] == versions[:-1]  # every earlier file applied
        assert await openings(conn) == []
    finally:
        await conn.close()


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, ["migrate", *args])


async def test_migrate_stops_prints_the_sql_editor_step_and_exits_non_zero(hosted_db: str) -> None:
    url = migrate.as_role(hosted_db, "postgres")

    result = await asyncio.to_thread(invoke, ["--database-url", url, "--allow-no-cron"])

    assert result.exit_code == 3
    assert "20261206900000_hitl_realtime_policies.sql was refused" in result.stderr
    assert "SQL editor" in result.stderr
    sql = result.stdout
    assert "create policy hitl_operators_receive on realtime.messages" in sql
    assert "insert into supabase_migrations.schema_migrations" in sql
    assert "Traceback" not in result.output

    # Pasted into the SQL editor (supautils lets postgres manage realtime.messages' policies
    # there), it creates the policies and records the file; the next migrate is a no-op.
    await migrate.local_sql_editor(hosted_db, sql)
    again = await asyncio.to_thread(invoke, ["--database-url", url, "--allow-no-cron"])
    assert again.exit_code == 0, again.output
    assert "applied 0 migration(s)" in again.stdout
    conn = await asyncpg.connect(hosted_db)
    try:
        policies = await conn.fetch(
            "select policyname from pg_policies where schemaname = 'realtime'"
            " and tablename = 'messages' order by 1"
        )
        assert [p["policyname"] for p in policies] == [
            "hitl_operators_receive",
            "hitl_operators_send",
        ]
    finally:
        await conn.close()


async def test_the_sql_editor_stand_in_lifts_only_policy_ddl_on_granted_tables(
    hosted_db: str,
) -> None:
    """supautils' rule, no more: `postgres` may not otherwise touch realtime.messages."""
    for sql in (
        "alter table realtime.messages owner to postgres",
        "alter table realtime.messages disable row level security",
        "delete from realtime.messages",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await migrate.local_sql_editor(hosted_db, sql)
    await migrate.local_sql_editor(
        hosted_db,
        "create policy probe on realtime.messages for select to authenticated using (false);"
        " comment on policy probe on realtime.messages is 'probe';"
        " drop policy probe on realtime.messages",
    )


async def test_a_database_without_pg_cron_makes_migrate_fail_loudly(hosted_db: str) -> None:
    url = migrate.as_role(hosted_db, "postgres")
    first = await asyncio.to_thread(invoke, ["--database-url", url])
    assert first.exit_code == 3  # the realtime policies come first; do the SQL-editor step
    await migrate.local_sql_editor(hosted_db, first.stdout)

    result = await asyncio.to_thread(invoke, ["--database-url", url])

    assert result.exit_code == 4
    assert "pg_cron is not installed in database" in result.stderr
    assert "sessions then expire only through the relay" in result.stderr

    allowed = await asyncio.to_thread(invoke, ["--database-url", url, "--allow-no-cron"])
    assert allowed.exit_code == 0
    assert "allowed by --allow-no-cron" in allowed.stderr
    assert "sessions then expire only through the relay" in allowed.stderr


async def test_migrate_prints_every_database_warning(hosted_db: str) -> None:
    url = migrate.as_role(hosted_db, "postgres")

    result = await asyncio.to_thread(invoke, ["--database-url", url, "--allow-no-cron"])

    assert "WARNING: pg_cron is not available in database" in result.stderr
    assert "NOTICE:" in result.stderr


async def test_in_the_cron_database_the_jobs_are_scheduled_with_pg_cron_in_pg_catalog(
    pg_cluster: Cluster,
) -> None:
    outcome = await migrate.run(pg_cluster.url("postgres"), local=True)

    assert outcome.cron_scheduled, outcome.cron_detail
    conn = await asyncpg.connect(pg_cluster.postgres_url("postgres"))
    try:
        schema = await conn.fetchval(
            "select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
            " where e.extname = 'pg_cron'"
        )
        assert schema == "pg_catalog"
        jobs = await conn.fetch("select jobname, username from cron.job order by jobname")
        assert {(j["jobname"], j["username"]) for j in jobs} >= {
            ("hitl-expire-sessions", "postgres"),
            ("hitl-purge", "postgres"),
        }
    finally:
        await conn.close()
