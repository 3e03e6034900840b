"""Error shapes of the devstack's PostgREST subset, and attempts to inject SQL through it.

Bodies are PostgREST's `{code, details, hint, message}`; codes and wording come from
src/PostgREST/Error.hs (PGRST1xx/2xx/3xx) and from Postgres itself for SQLSTATEs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import httpx
import jwt
import pytest
from postgrest.exceptions import APIError
from rest_support import SUPABASE_TIMEOUT_WARNING, Clients, case_input

from hitl_devstack.rest import tables as rest_tables
from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)


@pytest.fixture
async def clients(devstack: Devstack) -> AsyncIterator[Clients]:
    made = Clients(devstack)
    yield made
    await made.close()


@pytest.fixture
async def http(devstack: Devstack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{devstack.url}/rest/v1",
        headers={"apikey": devstack.keys.service_role_key},
    ) as client:
        yield client


async def test_unknown_table_is_pgrst205_404(http: httpx.AsyncClient) -> None:
    r = await http.get("/casez?select=*")

    assert r.status_code == 404
    assert r.json() == {
        "code": "PGRST205",
        "details": None,
        "hint": "Perhaps you meant the table 'public.cases'",
        "message": "Could not find the table 'public.casez' in the schema cache",
    }
    assert r.headers["proxy-status"] == "PostgREST; error=PGRST205"


async def test_unknown_column_in_select_filter_or_order_is_42703_400(
    http: httpx.AsyncClient,
) -> None:
    in_select = await http.get("/cases?select=id,nope")
    in_filter = await http.get("/cases?nope=eq.1")
    in_order = await http.get("/cases?order=nope.desc")

    for r in (in_select, in_filter, in_order):
        assert r.status_code == 400
        assert r.json() == {
            "code": "42703",
            "details": None,
            "hint": None,
            "message": "column cases.nope does not exist",
        }


async def test_unknown_column_in_a_written_body_is_pgrst204(clients: Clients) -> None:
    sb = await clients.service()

    with pytest.raises(APIError) as e:
        await sb.table("cases").insert({"title": "x", "nope": 1}).execute()

    assert e.value.code == "PGRST204"
    assert e.value.message == "Could not find the 'nope' column of 'cases' in the schema cache"


async def test_unique_violation_is_409_with_postgres_detail(
    http: httpx.AsyncClient, clients: Clients
) -> None:
    sb = await clients.service()
    case_id = (await sb.rpc("hitl_open_case", {"p": case_input()}).execute()).data["case_id"]

    r = await http.post("/cases", json={"id": case_id, "title": "again"})

    assert r.status_code == 409
    assert r.json() == {
        "code": "23505",
        "details": f"Key (id)=({case_id}) already exists.",
        "hint": None,
        "message": 'duplicate key value violates unique constraint "cases_pkey"',
    }


async def test_foreign_key_violation_is_409(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/messages", json={"case_id": str(uuid.uuid4()), "sender_type": "human", "content": "x"}
    )

    assert r.status_code == 409
    assert r.json()["code"] == "23503"


async def test_token_signed_with_another_secret_is_pgrst301(devstack: Devstack) -> None:
    forged = jwt.encode(
        {"role": "service_role", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256"
    )
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{devstack.url}/rest/v1/cases",
            headers={"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {forged}"},
        )

    assert r.status_code == 401
    assert r.json() == {
        "code": "PGRST301",
        "details": "None of the keys was able to decode the JWT",
        "hint": None,
        "message": "No suitable key or wrong key type",
    }
    assert r.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="No suitable key or wrong key type"'
    )


async def test_malformed_token_is_pgrst301(devstack: Devstack) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{devstack.url}/rest/v1/cases",
            headers={"apikey": devstack.keys.anon_key, "Authorization": "Bearer not-a-jwt"},
        )

    assert r.status_code == 401
    assert r.json()["code"] == "PGRST301"
    assert r.json()["message"] == "Expected 3 parts in JWT; got 1"


async def test_expired_token_is_pgrst303_and_the_client_raises(
    devstack: Devstack, clients: Clients
) -> None:
    expired = devstack.keys.user_token(str(uuid.uuid4()), ttl_s=-3600)
    sb = await clients.user(expired)

    with pytest.raises(APIError) as e:
        await sb.table("cases").select("id").execute()
    async with httpx.AsyncClient() as client:
        r = await client.get(
            f"{devstack.url}/rest/v1/cases",
            headers={"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {expired}"},
        )

    assert e.value.code == "PGRST303"
    assert e.value.message == "JWT expired"
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="JWT expired"'
    )


async def test_a_role_outside_the_api_roles_is_refused(devstack: Devstack) -> None:
    as_postgres = devstack.keys.sign({"role": "postgres", "exp": int(time.time()) + 60})
    as_ghost = devstack.keys.sign({"role": "ghost", "exp": int(time.time()) + 60})
    async with httpx.AsyncClient() as client:
        superuser = await client.get(
            f"{devstack.url}/rest/v1/hil_audit",
            headers={"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {as_postgres}"},
        )
        ghost = await client.get(
            f"{devstack.url}/rest/v1/cases",
            headers={"apikey": devstack.keys.anon_key, "Authorization": f"Bearer {as_ghost}"},
        )

    assert superuser.status_code == 403
    assert superuser.json()["message"] == 'permission denied to set role "postgres"'
    assert ghost.status_code == 401
    assert ghost.json()["message"] == 'role "ghost" does not exist'


async def test_only_the_public_schema_is_exposed(clients: Clients) -> None:
    sb = await clients.service()

    with pytest.raises(APIError) as e:
        await sb.schema("auth").table("users").select("*").execute()

    assert e.value.code == "PGRST106"
    assert e.value.message == "Invalid schema: auth"
    assert e.value.hint == "Only the following schemas are exposed: public"


async def test_invalid_json_body_is_pgrst102(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/cases", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert r.status_code == 400
    assert r.json()["code"] == "PGRST102"
    assert r.json()["message"] == "Empty or invalid json"


async def test_unsupported_operator_is_a_parse_error(http: httpx.AsyncClient) -> None:
    r = await http.get("/cases?title=fts.hello")

    assert r.status_code == 400
    assert r.json()["code"] == "PGRST100"
    assert "fts" in r.json()["details"]


async def test_embedding_is_refused_clearly(http: httpx.AsyncClient) -> None:
    r = await http.get("/cases?select=id,messages(content)")

    assert r.status_code == 400
    assert r.json()["code"] == "PGRST100"
    assert "embedded resources" in r.json()["details"]


async def test_unexpected_failure_is_a_generic_500_and_a_logged_traceback(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr(rest_tables, "select_list", broken)
    with caplog.at_level(logging.ERROR, logger="hitl_devstack.rest"):
        r = await http.get("/cases?select=id")

    assert r.status_code == 500
    assert r.json()["code"] == "PGRSTX00"
    assert "internal detail" not in r.text
    assert "Traceback" not in r.text
    assert any(
        rec.exc_info and "internal detail that must not leak" in str(rec.exc_info[1])
        for rec in caplog.records
    )


# ---- injection attempts: a 400, or the text stored verbatim; never executed ------------------
INJECTIONS = [
    "x'); drop table public.cases; --",
    'x"; drop table public.cases; --',
    "1 or 1=1",
    "$1::text; select pg_sleep(1)",
]


async def _cases_table_is_intact(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("select to_regclass('public.cases') is not null"))


@pytest.mark.parametrize("attack", INJECTIONS)
async def test_injection_in_a_column_name_is_a_400(
    http: httpx.AsyncClient, db: asyncpg.Connection, attack: str
) -> None:
    as_select = await http.get(f"/cases?select={quote(attack)}")
    as_filter = await http.get(f"/cases?{quote(attack)}=eq.1")
    as_order = await http.get(f"/cases?order={quote(attack)}")

    assert {as_select.status_code, as_filter.status_code, as_order.status_code} == {400}
    assert await _cases_table_is_intact(db)


@pytest.mark.parametrize("attack", INJECTIONS)
async def test_injection_in_a_value_is_only_ever_data(
    clients: Clients, db: asyncpg.Connection, attack: str
) -> None:
    sb = await clients.service()
    case_id = (await sb.rpc("hitl_open_case", {"p": case_input()}).execute()).data["case_id"]

    matched = await sb.table("cases").select("id").eq("title", attack).execute()
    in_list = await sb.table("cases").select("id").in_("title", [attack, "y"]).execute()
    await (
        sb.table("messages")
        .insert({"case_id": case_id, "sender_type": "system", "content": attack})
        .execute()
    )
    stored = await sb.table("messages").select("content").eq("content", attack).execute()

    assert matched.data == []
    assert in_list.data == []
    assert stored.data == [{"content": attack}]
    assert await _cases_table_is_intact(db)


async def test_injection_in_a_table_or_function_name_is_a_404(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    table = await http.get(f"/{quote('cases; drop table public.cases', safe='')}")
    function = await http.post(f"/rpc/{quote('hitl_answer(null); drop table x', safe='')}")

    assert table.status_code == 404
    assert table.json()["code"] == "PGRST205"
    assert function.status_code == 404
    assert function.json()["code"] == "PGRST202"
    assert await _cases_table_is_intact(db)
