"""PostgREST as hosted Supabase runs it, with the unmodified supabase-py 2.34 clients.

Each test names the source of the behaviour it pins: PostgREST v14.12 (the version the Supabase
CLI ships; hosted runs 13+), pg-safeupdate as supabase/postgres loads it for PostgREST's role,
and Postgres's own row-level security errors passed on with PostgREST's status mapping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import jwt
import pytest
from postgrest.exceptions import APIError
from rest_support import SUPABASE_TIMEOUT_WARNING, Clients, case_input

from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)

SCRATCH = """
create table public.hosted_notes (id uuid primary key default gen_random_uuid(), body text);
alter table public.hosted_notes enable row level security;
-- as hosted's default privileges grant every API role every table right; only RLS holds back
grant select, insert, update, delete on public.hosted_notes to anon, authenticated, service_role;
create policy hosted_notes_read on public.hosted_notes for select to authenticated using (true);

create table public.hosted_inbox (id uuid primary key default gen_random_uuid(), body text);
alter table public.hosted_inbox enable row level security;
grant insert, select on public.hosted_inbox to authenticated;
create policy hosted_inbox_write on public.hosted_inbox for insert to authenticated
  with check (true);

create table public.hosted_closed (id uuid primary key default gen_random_uuid(), body text);
revoke all on public.hosted_closed from anon, authenticated;
"""


@pytest.fixture
async def scratch(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(SCRATCH)
    await db.execute("insert into public.hosted_notes (body) values ('a'), ('b')")
    return db


@pytest.fixture
async def clients(devstack: Devstack) -> AsyncIterator[Clients]:
    made = Clients(devstack)
    yield made
    await made.close()


def headers_for(devstack: Devstack, token: str | None = None, **extra: str) -> dict[str, str]:
    """What supabase-js sends: the project key as apikey, the session (or the key) as bearer."""
    bearer = token or devstack.keys.anon_key
    return {"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {bearer}", **extra}


# ---- pg-safeupdate --------------------------------------------------------------------------
# supabase/postgres migrations/db/migrations/20220224211803_fix-postgrest-supautils.sql:
#   ALTER ROLE authenticator SET session_preload_libraries = supautils, safeupdate;
# eradman/pg-safeupdate safeupdate.c: ERRCODE_CARDINALITY_VIOLATION, "<DELETE|UPDATE> requires a
# WHERE clause"; PostgREST Error.hs pgErrorStatus: 21000 ending so → 400.


async def test_delete_without_a_filter_is_refused_by_safeupdate(
    clients: Clients, scratch: asyncpg.Connection
) -> None:
    sb = await clients.service()

    with pytest.raises(APIError) as e:
        await sb.table("hosted_notes").delete().execute()
    filtered = await sb.table("hosted_notes").delete().eq("body", "a").execute()

    assert (e.value.code, e.value.message) == ("21000", "DELETE requires a WHERE clause")
    assert (e.value.details, e.value.hint) == (None, None)
    assert [row["body"] for row in filtered.data] == ["a"]
    assert await scratch.fetchval("select count(*) from public.hosted_notes") == 1


async def test_update_without_a_filter_is_refused_with_http_400(
    devstack: Devstack, scratch: asyncpg.Connection
) -> None:
    service = devstack.keys.service_role_key
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        r = await http.patch(
            "/hosted_notes",
            json={"body": "z"},
            headers={"apikey": service, "Authorization": f"Bearer {service}"},
        )
        everything = await http.patch(  # any WHERE satisfies safeupdate, as on hosted
            "/hosted_notes?id=not.is.null",
            json={"body": "z"},
            headers={"apikey": service, "Authorization": f"Bearer {service}"},
        )

    assert r.status_code == 400
    assert r.json() == {
        "code": "21000",
        "details": None,
        "hint": None,
        "message": "UPDATE requires a WHERE clause",
    }
    assert everything.status_code == 204
    assert await scratch.fetchval("select count(*) from public.hosted_notes where body = 'z'") == 2


async def test_safeupdate_refuses_before_privileges_are_checked(
    devstack: Devstack, clients: Clients, db: asyncpg.Connection
) -> None:
    # the hook runs at parse analysis, before the executor checks table privileges or RLS:
    # an operator's unfiltered PATCH on cases is 400 whatever the grants say
    service = await clients.service()
    await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    operator = devstack.keys.user_token(str(uuid.uuid4()), operator=True)
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        r = await http.patch(
            "/cases", json={"priority": 1}, headers=headers_for(devstack, operator)
        )

    assert (r.status_code, r.json()["code"]) == (400, "21000")
    assert r.json()["message"] == "UPDATE requires a WHERE clause"
    assert await db.fetchval("select count(*) from public.cases where priority = 1") == 0


# ---- Prefer: tx=rollback ---------------------------------------------------------------------
# PostgREST Preferences.hs fromHeaders: preferTransaction only when db-tx-end allows an override;
# its default is `commit` (docs/references/configuration.rst db-tx-end) and Supabase sets no
# PGRST_DB_TX_END (supabase/cli start.go), so tx=rollback is ignored and not in
# Preference-Applied (prefAppliedHeader).


async def test_tx_rollback_is_ignored_and_not_echoed(
    devstack: Devstack, scratch: asyncpg.Connection
) -> None:
    service = devstack.keys.service_role_key
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        r = await http.post(
            "/hosted_notes",
            json={"body": "kept"},
            headers={
                "apikey": service,
                "Authorization": f"Bearer {service}",
                "Prefer": "return=representation, tx=rollback",
            },
        )

    assert r.status_code == 201
    assert r.json()[0]["body"] == "kept"
    assert r.headers["preference-applied"] == "return=representation"
    assert (
        await scratch.fetchval("select count(*) from public.hosted_notes where body = 'kept'") == 1
    )


async def test_the_first_value_of_a_preference_wins(
    devstack: Devstack, scratch: asyncpg.Connection
) -> None:
    # Preferences.hs parsePrefs: `head $ mapMaybe ... prefs`, in the order sent
    service = devstack.keys.service_role_key
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        r = await http.post(
            "/hosted_notes",
            json={"body": "x"},
            headers={
                "apikey": service,
                "Authorization": f"Bearer {service}",
                "Prefer": "return=minimal, return=representation, count=exact",
            },
        )

    assert (r.status_code, r.content) == (201, b"")
    assert r.headers["preference-applied"] == "return=minimal, count=exact"


# ---- row-level security and grants: Postgres's own messages, PostgREST's status -------------
# Error.hs pgErrorStatus: 42501 → 401 for the anon role, else 403.


async def test_an_rls_denied_insert_says_new_row_violates_the_policy(
    devstack: Devstack, clients: Clients, scratch: asyncpg.Connection
) -> None:
    user = await clients.user(devstack.keys.user_token(str(uuid.uuid4()), operator=False))
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        anon = await http.post("/hosted_notes", json={"body": "x"}, headers=headers_for(devstack))

    with pytest.raises(APIError) as e:
        await user.table("hosted_notes").insert({"body": "x"}).execute()

    message = 'new row violates row-level security policy for table "hosted_notes"'
    assert (e.value.code, e.value.message) == ("42501", message)
    assert anon.status_code == 401
    assert anon.json() == {"code": "42501", "details": None, "hint": None, "message": message}
    assert await scratch.fetchval("select count(*) from public.hosted_notes") == 2


async def test_a_table_without_a_grant_says_permission_denied(
    devstack: Devstack, scratch: asyncpg.Connection
) -> None:
    token = devstack.keys.user_token(str(uuid.uuid4()), operator=True)
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        r = await http.post(
            "/hosted_closed", json={"body": "x"}, headers=headers_for(devstack, token)
        )

    assert r.status_code == 403
    assert r.json()["message"] == "permission denied for table hosted_closed"


async def test_a_minimal_insert_needs_no_select_policy(
    devstack: Devstack, scratch: asyncpg.Connection
) -> None:
    # QueryBuilder.hs returningF: `RETURNING 1` without return=representation, so only the
    # INSERT policy applies; returning the row also meets the (absent) SELECT policy
    token = devstack.keys.user_token(str(uuid.uuid4()), operator=True)
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        minimal = await http.post(
            "/hosted_inbox", json={"body": "in"}, headers=headers_for(devstack, token)
        )
        represented = await http.post(
            "/hosted_inbox",
            json={"body": "out"},
            headers=headers_for(devstack, token, Prefer="return=representation"),
        )

    assert (minimal.status_code, minimal.content) == (201, b"")
    assert represented.status_code == 403
    assert represented.json()["message"] == (
        'new row violates row-level security policy for table "hosted_inbox"'
    )
    assert await scratch.fetchval("select array_agg(body) from public.hosted_inbox") == ["in"]


async def test_a_patch_that_rls_hides_every_row_from_is_200_and_empty(
    devstack: Devstack, clients: Clients, scratch: asyncpg.Connection
) -> None:
    # UPDATE granted (hosted's default privileges), no UPDATE policy: zero rows, no error
    user = await clients.user(devstack.keys.user_token(str(uuid.uuid4()), operator=True))

    updated = await user.table("hosted_notes").update({"body": "z"}).eq("body", "a").execute()

    assert updated.data == []
    assert await scratch.fetchval("select count(*) from public.hosted_notes where body = 'a'") == 1


async def test_an_operator_patch_on_cases_meets_the_claim_rule_not_a_missing_grant(
    devstack: Devstack, clients: Clients, db: asyncpg.Connection
) -> None:
    # Hosted: default privileges grant authenticated UPDATE on cases (supabase/postgres
    # init-scripts/00000000000000-initial-schema.sql `alter default privileges`), and our
    # migrations leave it, so the request is not a "permission denied for table cases". The
    # claim policy lets an operator's UPDATE reach an open relay case, and the claim trigger
    # refuses any column but claimed_by (42501, which PostgREST answers with 403).
    service = await clients.service()
    opened = await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    user = await clients.operator()
    assert await db.fetchval(
        "select has_table_privilege('authenticated', 'public.cases', 'UPDATE')"
    )
    with pytest.raises(APIError) as e:
        await user.table("cases").update({"priority": 1}).eq("id", opened.data["case_id"]).execute()
    assert (e.value.code, e.value.message) == (
        "42501",
        "operators may change only claimed_by of a case",
    )
    assert await db.fetchval("select count(*) from public.cases where priority = 1") == 0


async def test_a_non_operator_message_insert_violates_the_policy(
    devstack: Devstack, clients: Clients, db: asyncpg.Connection
) -> None:
    service = await clients.service()
    opened = await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    viewer_id = str(uuid.uuid4())
    viewer = await clients.user(devstack.keys.user_token(viewer_id, operator=False))

    with pytest.raises(APIError) as e:
        await (
            viewer.table("messages")
            .insert(
                {
                    "case_id": opened.data["case_id"],
                    "sender_type": "human",
                    "sender_id": viewer_id,
                    "content": "not mine to answer",
                }
            )
            .execute()
        )

    assert e.value.code == "42501"
    assert e.value.message == 'new row violates row-level security policy for table "messages"'
    assert await db.fetchval("select count(*) from public.messages") == 0


# ---- bad tokens: PostgREST 13+'s PGRST301/PGRST303 ------------------------------------------
# PostgREST v14.12 src/PostgREST/Auth/Jwt.hs parseToken + Error.hs JwtDecodeError messages;
# test/io/test_auth.py test_jwt_errors pins the same texts; jose-jwt (tekul/jose-jwt)
# Jose/Jwt.hs decode and Jose/Internal/Parser.hs parseJwt say which failure is which.


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signed(secret: str, header: dict[str, str], payload: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}"
    signature = hmac.digest(secret.encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize(
    ("make_token", "code", "message", "details"),
    [
        (  # "complete token but random characters" (test_auth.py)
            lambda s: "quifquirndsjagnrgniur.fonvoienqhhdj.iuqvnvhojah",
            "PGRST301",
            "JWT cryptographic operation failed",
            None,
        ),
        (  # token with algorithm "none" (test_auth.py)
            lambda s: (
                "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.e30."
                "yOBhlOIqn56T-4NvyEXCjfi3UmyQZ-BzXtePMO2NgRI"
            ),
            "PGRST301",
            "Wrong or unsupported encoding algorithm",
            "JWT is unsecured but expected 'alg' was not 'none'",
        ),
        (  # the secret is one key pinned to HS256 (Config.hs parseSecret): HS512 finds no key
            lambda s: _signed(s, {"alg": "HS512", "typ": "JWT"}, b'{"role":"service_role"}'),
            "PGRST301",
            "No suitable key or wrong key type",
            "No suitable key was found to decode the JWT",
        ),
        (  # partial token, no signature (test_auth.py)
            lambda s: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.bm90IGFuIG9iamVjdA",
            "PGRST301",
            "Expected 3 parts in JWT; got 2",
            None,
        ),
        (  # a signed payload that is not a JSON object (Jwt.hs decodeClaims)
            lambda s: _signed(s, {"alg": "HS256", "typ": "JWT"}, b'"not an object"'),
            "PGRST303",
            "Parsing claims failed",
            None,
        ),
        (  # Jwt.hs checkForErrors: aud must be a string or an array of strings
            lambda s: jwt.encode({"role": "anon", "aud": 7}, s, algorithm="HS256"),
            "PGRST303",
            "The JWT 'aud' claim must be a string or an array of strings",
            None,
        ),
        (  # exp in the past beyond the 30 s skew
            lambda s: jwt.encode({"role": "anon", "exp": int(time.time()) - 35}, s, "HS256"),
            "PGRST303",
            "JWT expired",
            None,
        ),
    ],
)
async def test_each_bad_token_gets_postgrests_code_and_message(
    devstack: Devstack,
    make_token: object,
    code: str,
    message: str,
    details: str | None,
) -> None:
    assert callable(make_token)
    token = make_token(devstack.keys.jwt_secret)
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        r = await http.get("/cases?select=id", headers=headers_for(devstack, token))

    assert r.status_code == 401
    assert r.json() == {"code": code, "details": details, "hint": None, "message": message}
    assert r.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", error_description="{message}"'
    )


async def test_supabase_py_raises_the_random_token_error(
    devstack: Devstack, clients: Clients
) -> None:
    sb = await clients.user("quifquirndsjagnrgniur.fonvoienqhhdj.iuqvnvhojah")

    with pytest.raises(APIError) as e:
        await sb.table("cases").select("id").execute()

    assert (e.value.code, e.value.message) == ("PGRST301", "JWT cryptographic operation failed")
