"""The options' bounds have one home (hitl_relay/rules.py); the SQL that checks them again on
the platform (`hitl_option_bounds`, used by `hitl_options`) must agree with it."""

from __future__ import annotations

import json

import asyncpg

from hitl_relay.models import OPTION_MAX_CHARS, OPTIONS_MAX, OPTIONS_MIN


async def test_the_sql_option_bounds_are_the_models(db: asyncpg.Connection) -> None:
    bounds = json.loads(await db.fetchval("select public.hitl_option_bounds()::text"))
    assert bounds == {"min": OPTIONS_MIN, "max": OPTIONS_MAX, "max_chars": OPTION_MAX_CHARS}


async def test_the_sql_accepts_exactly_the_bounds(db: asyncpg.Connection) -> None:
    def check(options: list[str]) -> str:
        return json.dumps({"options": options})

    most = [f"{n}" + "x" * (OPTION_MAX_CHARS - 1) for n in range(OPTIONS_MAX)]
    assert (
        json.loads(await db.fetchval("select public.hitl_options($1::jsonb)::text", check(most)))
        == most
    )
    least = ["a", "b"][:OPTIONS_MIN]
    assert (
        json.loads(await db.fetchval("select public.hitl_options($1::jsonb)::text", check(least)))
        == least
    )
