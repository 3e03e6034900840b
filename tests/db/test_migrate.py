"""`hitl_relay.migrate.apply`: additive, re-runnable migrations recorded like the Supabase CLI."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from hitl_devstack.cluster import Cluster, free_port
from hitl_relay import migrate

ALL_VERSIONS = [m.version for m in migrate.migrations()]


@pytest.fixture
async def empty_db_url(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A fresh database with nothing applied (not cloned from the migrated template)."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"create database {name}")
    finally:
        await admin.close()
    yield pg_cluster.url(name)
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


async def lay_out(admin_url: str) -> None:
    """The hosted-shaped layout (supabase/local/) without any migration."""
    admin = await asyncpg.connect(admin_url)
    try:
        admin.add_log_listener(lambda *_: None)
        for path in migrate.local_files():
            await admin.execute(path.read_text())
    finally:
        await admin.close()


async def history(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        )
    finally:
        await conn.close()


async def test_a_fresh_database_gets_every_migration_in_order_recorded_like_the_cli(
    empty_db_url: str,
) -> None:
    applied = await migrate.apply(empty_db_url, local=True)

    assert applied == ALL_VERSIONS
    assert applied == sorted(applied, key=int)
    rows = await history(empty_db_url)
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in migrate.migrations()
    ]
    assert all(r["statements"] == [m.sql] for r, m in zip(rows, migrate.migrations(), strict=True))


async def test_applying_twice_is_a_no_op(db_url: str) -> None:
    before = await migrate.schema_snapshot(db_url)

    assert await migrate.apply(db_url, local=True) == []

    assert await migrate.schema_snapshot(db_url) == before
    assert len(await history(db_url)) == len(ALL_VERSIONS)


async def test_every_file_runs_again_without_its_history_and_changes_nothing(
    db: asyncpg.Connection, db_url: str
) -> None:
    """Additive to the letter: `if not exists`, `or replace`, guarded constraints and policies."""
    before = await migrate.schema_snapshot(db_url)
    db.add_log_listener(lambda *_: None)

    for path in migrate.local_files():
        await db.execute(path.read_text())
    for m in migrate.migrations():
        async with db.transaction():
            await db.execute(m.sql)

    assert await migrate.schema_snapshot(db_url) == before


PLATFORM_SCHEMA = """
create table public.cases (
  id uuid primary key default gen_random_uuid(),
  title text not null,
  status text not null default 'new',
  customer_email text,
  assigned_to text
);
create table public.messages (
  id uuid primary key default gen_random_uuid(),
  case_id uuid not null references public.cases (id),
  body text,
  author text
);
insert into public.cases (id, title, status, customer_email, assigned_to) values
  ('00000000-0000-0000-0000-0000000000a1', 'Printer on fire', 'new', 'ada@example.test', 'bob'),
  ('00000000-0000-0000-0000-0000000000a2', 'Refund', 'pending_customer', null, null);
insert into public.messages (case_id, body, author) values
  ('00000000-0000-0000-0000-0000000000a1', 'It is still burning', 'ada');
"""


async def test_a_platform_with_its_own_cases_and_messages_keeps_its_rows_and_columns(
    empty_db_url: str,
) -> None:
    # As on a hosted project: the platform's tables were made by `postgres`, not a superuser.
    await lay_out(empty_db_url)
    conn = await asyncpg.connect(migrate.as_role(empty_db_url, "postgres"))
    try:
        await conn.execute(PLATFORM_SCHEMA)

        assert await migrate.apply(empty_db_url, local=True) == ALL_VERSIONS

        rows = await conn.fetch(
            "select id::text, title, status, customer_email, assigned_to, source from public.cases"
            " order by id"
        )
        assert [tuple(r) for r in rows] == [
            ("00000000-0000-0000-0000-0000000000a1", "Printer on fire", "new", "ada@example.test",
             "bob", None),
            ("00000000-0000-0000-0000-0000000000a2", "Refund", "pending_customer", None, None,
             None),
        ]  # fmt: skip
        assert await conn.fetchval("select body from public.messages") == "It is still burning"
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "select column_name from information_schema.columns"
                " where table_schema = 'public' and table_name = 'cases'"
            )
        }
        assert {"customer_email", "assigned_to", "source", "metadata", "expires_at"} <= columns

        # the platform keeps writing its own statuses; the relay's functions work alongside
        await conn.execute("insert into public.cases (title, status) values ('New one', 'new')")
        opened = await conn.fetchval(
            "select public.hitl_open_case($1::jsonb)",
            '{"question": "Q?", "mcp_session_id": "m", "retell_call_id": "c",'
            ' "retell_agent_id": "a"}',
        )
        assert '"existed": false' in opened
        await conn.execute(
            "insert into public.messages (case_id, sender_type, sender_id, content)"
            " select id, 'human', gen_random_uuid(), 'Yes' from public.cases"
            " where source = 'mcp_voice'"
        )
        assert await conn.fetchval("select count(*) from public.cases") == 4
        assert (
            await conn.fetchval("select count(*) from public.cases where status = 'answered'") == 1
        )

        # applying again over the platform's database changes nothing
        assert await migrate.apply(empty_db_url, local=True) == []
    finally:
        await conn.close()


async def test_a_failing_migration_names_the_file_and_the_error_and_leaves_nothing_behind(
    empty_db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "local").mkdir()
    good = tmp_path / "migrations" / "20990101000000_first.sql"
    good.write_text("create table public.t1 (id int);\n")
    bad = tmp_path / "migrations" / "20990101000100_second.sql"
    bad.write_text("create table public.t2 (id int);\nselect no_such_column from public.t1;\n")

    with pytest.raises(migrate.MigrationError) as failed:
        await migrate.apply(empty_db_url, supabase_dir=tmp_path)

    message = str(failed.value)
    assert message.startswith("20990101000100_second.sql (line 2): UndefinedColumnError [42703]")
    assert 'column "no_such_column" does not exist' in message
    assert [r["version"] for r in await history(empty_db_url)] == ["20990101000000"]
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("select to_regclass('public.t2')") is None
    finally:
        await conn.close()

    bad.write_text("create table public.t2 (id int);\n")
    assert await migrate.apply(empty_db_url, supabase_dir=tmp_path) == ["20990101000100"]


async def test_a_file_not_named_like_a_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "add_cases.sql").write_text("select 1;")

    with pytest.raises(migrate.MigrationError, match=r"add_cases\.sql: not named"):
        await migrate.apply("postgresql://unused", supabase_dir=tmp_path)


async def test_an_unreachable_database_is_a_migration_error() -> None:
    url = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/postgres"

    with pytest.raises(migrate.MigrationError, match="cannot connect to the database"):
        await migrate.apply(url)


async def test_a_history_table_made_by_an_older_cli_gains_the_newer_columns(
    empty_db_url: str,
) -> None:
    await lay_out(empty_db_url)  # the older CLI made it as `postgres`, as on a hosted project
    conn = await asyncpg.connect(migrate.as_role(empty_db_url, "postgres"))
    try:
        await conn.execute(
            "create schema supabase_migrations;"
            "create table supabase_migrations.schema_migrations (version text primary key);"
            "insert into supabase_migrations.schema_migrations values ('20200101000000');"
        )
    finally:
        await conn.close()

    assert await migrate.apply(empty_db_url, local=True) == ALL_VERSIONS

    rows = await history(empty_db_url)
    assert rows[0]["version"] == "20200101000000"
    assert rows[0]["name"] is None
    assert rows[-1]["name"] == migrate.migrations()[-1].name


async def test_two_migrators_at_once_apply_each_file_once(empty_db_url: str) -> None:
    first, second = await asyncio.gather(
        migrate.apply(empty_db_url, local=True), migrate.apply(empty_db_url, local=True)
    )

    assert sorted([*first, *second]) == ALL_VERSIONS
    assert [] in (first, second)
