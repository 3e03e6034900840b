"""The schema built from the migrations is the checked-in `supabase/schema.snapshot.sql`."""

from __future__ import annotations

import difflib

from hitl_relay import migrate

REGENERATE = "scripts/pgtap --update-snapshot"


async def test_schema_built_from_migrations_matches_the_checked_in_snapshot(db_url: str) -> None:
    built = await migrate.schema_snapshot(db_url)
    checked_in = migrate.SNAPSHOT.read_text()

    if built != checked_in:
        diff = "".join(
            difflib.unified_diff(
                checked_in.splitlines(keepends=True),
                built.splitlines(keepends=True),
                "supabase/schema.snapshot.sql (checked in)",
                "schema built from supabase/migrations",
                n=2,
            )
        )
        lines = diff.splitlines()
        shown = "\n".join(lines[:80]) + (
            f"\n... {len(lines) - 80} more lines" if len(lines) > 80 else ""
        )
        raise AssertionError(
            "the schema drifted from supabase/schema.snapshot.sql. If the change is intended, "
            f"regenerate the snapshot with `{REGENERATE}` and commit it.\n{shown}"
        )


def test_the_snapshot_leaves_out_comments_settings_and_blank_runs() -> None:
    dump = (
        "--\n-- PostgreSQL database dump\n--\n\n"
        "SET statement_timeout = 0;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "\\restrict abc\n\n\n\n"
        "CREATE TABLE public.t (\n    id integer\n);   \n\n\n"
        "\\unrestrict abc\n"
    )

    assert migrate.normalise_dump(dump) == "CREATE TABLE public.t (\n    id integer\n);\n"
