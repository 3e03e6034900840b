"""Table reads and writes through the devstack's PostgREST subset with the unmodified supabase-py.

Expected headers and status codes are PostgREST's (src/PostgREST/Response.hs): GET 200, or 206
when `count=exact` shows more rows than returned, `Content-Range: first-last/total`; POST 201;
PATCH/DELETE 200 with a representation, 204 without.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from rest_support import SUPABASE_TIMEOUT_WARNING, Clients

from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)

TODOS = """
create table public.todos (
  id integer primary key,
  title text not null,
  done boolean not null default false,
  rank integer,
  tags text[] default '{}',
  meta jsonb default '{}'::jsonb,
  created_at timestamptz not null default '2026-01-01T00:00:00Z'
);
grant select, insert, update, delete on public.todos to anon;
insert into public.todos (id, title, done, rank, meta) values
  (1, 'Buy milk', false, 3, '{"owner": "ada"}'),
  (2, 'Call Bob', true, null, '{"owner": "bob"}'),
  (3, 'buy bread', false, 1, '{"owner": "ada"}'),
  (4, 'Write report (draft, v2)', true, 2, '{}'),
  (5, 'Walk dog', false, null, '{}');
"""


@pytest.fixture
async def todos(db: asyncpg.Connection) -> asyncpg.Connection:
    """The test database with a `todos` table anon may read and write (no RLS)."""
    await db.execute(TODOS)
    return db


@pytest.fixture
async def clients(devstack: Devstack, todos: asyncpg.Connection) -> AsyncIterator[Clients]:
    made = Clients(devstack)
    yield made
    await made.close()


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["id"] for r in rows]


async def test_select_star_and_named_columns(clients: Clients) -> None:
    sb = await clients.anon()

    everything = await sb.table("todos").select("*").order("id").execute()
    named = await sb.table("todos").select("id, title").eq("id", 1).execute()
    aliased = await sb.table("todos").select("key:id,owner:meta->>owner").eq("id", 2).execute()

    assert len(everything.data) == 5
    assert everything.data[0] == {
        "id": 1,
        "title": "Buy milk",
        "done": False,
        "rank": 3,
        "tags": [],
        "meta": {"owner": "ada"},
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    assert named.data == [{"id": 1, "title": "Buy milk"}]
    assert aliased.data == [{"key": 2, "owner": "bob"}]


async def test_comparison_filters(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    assert ids((await t.select("id").eq("done", True).order("id").execute()).data) == [2, 4]
    assert ids((await t.select("id").neq("done", True).order("id").execute()).data) == [1, 3, 5]
    assert ids((await t.select("id").gt("id", 3).order("id").execute()).data) == [4, 5]
    assert ids((await t.select("id").gte("id", 4).order("id").execute()).data) == [4, 5]
    assert ids((await t.select("id").lt("rank", 3).order("id").execute()).data) == [3, 4]
    assert ids((await t.select("id").lte("rank", 3).order("id").execute()).data) == [1, 3, 4]


async def test_in_is_like_ilike_and_not(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    in_ = await t.select("id").in_("id", [1, 3, 9]).order("id").execute()
    quoted_in = await t.select("id").in_("title", ["Write report (draft, v2)", "x"]).execute()
    is_null = await t.select("id").is_("rank", None).order("id").execute()
    not_null = await t.select("id").not_.is_("rank", None).order("id").execute()
    like = await t.select("id").like("title", "%milk").execute()
    ilike = await t.select("id").ilike("title", "buy%").order("id").execute()
    not_in = await t.select("id").not_.in_("id", [1, 2, 3]).order("id").execute()
    or_ = await t.select("id").or_("id.eq.1,rank.eq.1").order("id").execute()

    assert ids(in_.data) == [1, 3]
    assert ids(quoted_in.data) == [4]
    assert ids(is_null.data) == [2, 5]
    assert ids(not_null.data) == [1, 3, 4]
    assert ids(like.data) == [1]
    assert ids(ilike.data) == [1, 3]
    assert ids(not_in.data) == [4, 5]
    assert ids(or_.data) == [1, 3]


async def test_order_by_several_columns_with_nulls_placement(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    nulls_first = await t.select("id").order("rank", nullsfirst=True).order("id").execute()
    by_done_then_rank = (
        await t.select("id").order("done", desc=True).order("rank", desc=True).execute()
    )

    assert ids(nulls_first.data) == [2, 5, 3, 4, 1]
    # desc puts nulls first in Postgres unless told otherwise
    assert ids(by_done_then_rank.data) == [2, 4, 5, 1, 3]


async def test_limit_offset_and_exact_count(devstack: Devstack, clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    page = await t.select("id", count="exact").order("id").limit(2).offset(2).execute()
    head = await t.select("*", count="exact", head=True).eq("done", False).execute()
    async with httpx.AsyncClient() as http:
        raw = await http.get(
            f"{devstack.url}/rest/v1/todos?select=id&order=id&limit=2&offset=2",
            headers={"apikey": devstack.keys.anon_key, "Prefer": "count=exact"},
        )
        plain = await http.get(
            f"{devstack.url}/rest/v1/todos?select=id&order=id",
            headers={"apikey": devstack.keys.anon_key},
        )

    assert ids(page.data) == [3, 4]
    assert page.count == 5
    assert head.count == 3
    assert raw.status_code == 206
    assert raw.headers["content-range"] == "2-3/5"
    assert plain.status_code == 200
    assert plain.headers["content-range"] == "0-4/*"


async def test_single_returns_one_object_or_pgrst116(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    one = await t.select("id, title").eq("id", 3).single().execute()
    with pytest.raises(APIError) as many:
        await t.select("id").eq("done", False).single().execute()
    with pytest.raises(APIError) as none:
        await t.select("id").eq("id", 99).single().execute()

    assert one.data == {"id": 3, "title": "buy bread"}
    assert many.value.code == "PGRST116"
    assert many.value.message == "Cannot coerce the result to a single JSON object"
    assert many.value.details == "The result contains 3 rows"
    assert none.value.details == "The result contains 0 rows"


async def test_insert_returns_the_row_with_defaults(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    inserted = await t.insert({"id": 10, "title": "New", "tags": ["a", "b"]}).execute()

    assert inserted.data == [
        {
            "id": 10,
            "title": "New",
            "done": False,
            "rank": None,
            "tags": ["a", "b"],
            "meta": {},
            "created_at": "2026-01-01T00:00:00+00:00",
        }
    ]


async def test_bulk_insert_with_different_keys_uses_the_columns_parameter(
    clients: Clients, db: asyncpg.Connection
) -> None:
    t = (await clients.anon()).table("todos")

    rows = await t.insert(
        [{"id": 11, "title": "A", "rank": 7}, {"id": 12, "title": "B", "meta": {"x": 1}}]
    ).execute()

    assert sorted(ids(rows.data)) == [11, 12]
    stored = await db.fetch(
        "select id, rank, meta::text from public.todos where id > 10 order by id"
    )
    # columns missing from a row are null (supabase-py's default_to_null), not their default
    assert [tuple(r) for r in stored] == [(11, 7, None), (12, None, '{"x": 1}')]


async def test_insert_with_return_minimal_is_201_without_body(
    devstack: Devstack, todos: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{devstack.url}/rest/v1/todos",
            json={"id": 20, "title": "quiet"},
            headers={"apikey": devstack.keys.anon_key, "Prefer": "return=minimal"},
        )

    assert r.status_code == 201
    assert r.content == b""
    assert await todos.fetchval("select title from public.todos where id = 20") == "quiet"


async def test_upsert_merges_on_the_primary_key(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    merged = await t.upsert({"id": 1, "title": "Buy oat milk", "done": True}).execute()
    added = await t.upsert({"id": 30, "title": "Fresh"}).execute()

    assert merged.data[0]["title"] == "Buy oat milk"
    assert merged.data[0]["rank"] == 3
    assert added.data[0]["id"] == 30


async def test_update_with_filters_returns_the_changed_rows(
    clients: Clients, db: asyncpg.Connection
) -> None:
    t = (await clients.anon()).table("todos")

    changed = await t.update({"done": True, "rank": 9}).eq("done", False).lt("id", 4).execute()

    assert sorted(ids(changed.data)) == [1, 3]
    assert all(r["done"] is True and r["rank"] == 9 for r in changed.data)
    assert await db.fetchval("select count(*) from public.todos where done") == 4


async def test_delete_with_filters_and_count(clients: Clients, db: asyncpg.Connection) -> None:
    t = (await clients.anon()).table("todos")

    deleted = await t.delete(count="exact").eq("done", True).execute()

    assert sorted(ids(deleted.data)) == [2, 4]
    assert deleted.count == 2
    assert await db.fetchval("select count(*) from public.todos") == 3


async def test_patch_and_delete_without_representation_are_204(
    devstack: Devstack, todos: asyncpg.Connection
) -> None:
    headers = {"apikey": devstack.keys.anon_key, "Prefer": "return=minimal"}
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1") as http:
        patched = await http.patch("/todos?id=eq.1", json={"title": "x"}, headers=headers)
        deleted = await http.request("DELETE", "/todos?id=eq.2", json={}, headers=headers)

    assert (patched.status_code, patched.content) == (204, b"")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert await todos.fetchval("select title from public.todos where id = 1") == "x"
    assert await todos.fetchval("select count(*) from public.todos where id = 2") == 0


async def test_single_on_a_write_touching_several_rows_rolls_back(
    devstack: Devstack, todos: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.patch(
            f"{devstack.url}/rest/v1/todos?done=eq.false",
            json={"title": "same"},
            headers={
                "apikey": devstack.keys.anon_key,
                "Prefer": "return=representation",
                "Accept": "application/vnd.pgrst.object+json",
            },
        )

    assert r.status_code == 406
    assert r.json()["code"] == "PGRST116"
    assert await todos.fetchval("select count(*) from public.todos where title = 'same'") == 0


async def test_filters_on_jsonb_paths(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    ada = await t.select("id").eq("meta->>owner", "ada").order("id").execute()

    assert ids(ada.data) == [1, 3]


async def test_values_are_typed_by_the_column(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    with pytest.raises(APIError) as e:
        await t.select("id").eq("id", "not-a-number").execute()

    assert e.value.code == "22P02"
    assert e.value.message == 'invalid input syntax for type integer: "not-a-number"'


async def test_strip_nulls_drops_null_fields(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    rows = await t.select("id, rank").in_("id", [1, 2]).order("id").strip_nulls().execute()

    assert rows.data == [{"id": 1, "rank": 3}, {"id": 2}]


async def test_an_unavailable_media_type_is_pgrst107(clients: Clients) -> None:
    t = (await clients.anon()).table("todos")

    with pytest.raises(APIError) as e:
        await t.select("id").csv().execute()

    assert e.value.code == "PGRST107"
    assert e.value.message == "None of these media types are available: text/csv"


async def test_the_root_lists_tables_and_functions(devstack: Devstack, todos: object) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{devstack.url}/rest/v1/", headers={"apikey": devstack.keys.anon_key})

    assert r.status_code == 200
    assert {"/todos", "/cases", "/rpc/hitl_open_case"} <= set(r.json()["paths"])


async def test_in_list_values_reach_postgres_unchanged(db: asyncpg.Connection) -> None:
    """A request's parameters travel as one text array (rest.Params): every `in.(...)` value
    comes out of Postgres' array parser as sent, whatever characters it holds."""
    from hitl_devstack.rest import Params

    values: list[str | None] = [
        'say "hi"',
        "back\\slash",
        "NULL",
        "a,b",
        "{braces}",
        " padded ",
        "",
        "é",
        None,
    ]
    params = Params()
    placeholder = params.add(values)
    assert placeholder == "($1[1])"
    # as in pg_temp.devstack_request: $1 is the request's text[] of parameters
    typed = placeholder.replace("$1", "($1::text[])")
    got = await db.fetchval(f"select {typed}::text[]", params.values)
    assert got == values
