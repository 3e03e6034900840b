"""RPC through the devstack's PostgREST subset, driven by the unmodified supabase-py client.

Response shapes follow PostgREST (docs/references/api/functions.rst, test/spec/Feature/Query/
RpcSpec.hs): scalar → bare JSON, json → that value, SETOF → array, composite → object,
void → 204 without a body (which supabase-py reads as `[]`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from rest_support import SUPABASE_TIMEOUT_WARNING, Clients, case_input

from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)

TEST_FUNCTIONS = """
create function public.add_numbers(a integer, b integer default 10) returns integer
  language sql immutable as 'select a + b';
create function public.greet(name text) returns text
  language sql immutable as $$ select 'Hello ' || name || '!' $$;
create function public.note_call(msg text) returns void
  language plpgsql as $$ begin perform set_config('test.msg', msg, true); end $$;
create function public.countdown(n integer) returns setof integer
  language sql immutable as 'select generate_series(n, 1, -1)';
create function public.squares(n integer) returns table (x integer, square integer)
  language sql immutable as 'select i, i * i from generate_series(1, n) i';
create function public.pair(a integer) returns table (x integer, doubled integer)
  language sql immutable as 'select a, 2 * a';
create type public.point_pair as (x integer, y integer);
create function public.make_pair(x integer, y integer) returns public.point_pair
  language sql immutable as 'select row(x, y)::public.point_pair';
create function public.echo_body(jsonb) returns jsonb language sql immutable as 'select $1';
create function public.sum_array(xs integer[]) returns integer
  language sql immutable as 'select sum(v)::integer from unnest(xs) v';
create table public.rpc_writes (v text);
grant insert on public.rpc_writes to service_role;
create function public.write_row(v text) returns integer language plpgsql as $$
begin
  insert into public.rpc_writes values (v);
  return 1;
end $$;
"""


@pytest.fixture
async def clients(devstack: Devstack, db: asyncpg.Connection) -> AsyncIterator[Clients]:
    await db.execute(TEST_FUNCTIONS)
    made = Clients(devstack)
    yield made
    await made.close()


async def test_open_case_returns_the_contract_object_and_a_retry_joins_the_same_case(
    clients: Clients,
) -> None:
    sb = await clients.service()
    p = case_input()

    first = (await sb.rpc("hitl_open_case", {"p": p}).execute()).data
    retry = await sb.rpc("hitl_open_case", {"p": {**p, "case_id": str(uuid.uuid4())}}).execute()

    assert set(first) == {"case_id", "session_id", "expires_at", "existed", "status"}
    assert first["case_id"] == p["case_id"]
    assert first["existed"] is False
    assert first["status"] == "waiting"
    assert retry.data["case_id"] == p["case_id"]
    assert retry.data["existed"] is True


async def test_answer_is_null_until_a_human_answers_then_the_message(
    clients: Clients, db: asyncpg.Connection
) -> None:
    sb = await clients.service()
    case_id = (await sb.rpc("hitl_open_case", {"p": case_input()}).execute()).data["case_id"]

    before = await sb.rpc("hitl_answer", {"p_case_id": case_id}).execute()
    operator = str(uuid.uuid4())
    await db.execute(
        "insert into public.messages (case_id, sender_type, sender_id, content) "
        "values ($1, 'human', $2, 'Yes, waive it.')",
        uuid.UUID(case_id),
        uuid.UUID(operator),
    )
    after = await sb.rpc("hitl_answer", {"p_case_id": case_id}).execute()

    # a JSON null body: supabase-py decodes it to None
    assert before.data is None
    assert after.data["content"] == "Yes, waive it."
    assert after.data["sender_id"] == operator
    assert after.data["kind"] == "answer"


async def test_scalar_function_returns_a_bare_value_and_defaults_apply(clients: Clients) -> None:
    sb = await clients.anon()

    both = await sb.rpc("add_numbers", {"a": 2, "b": 3}).execute()
    defaulted = await sb.rpc("add_numbers", {"a": 2}).execute()
    text = await sb.rpc("greet", {"name": "Ada"}).execute()

    assert both.data == 5
    assert defaulted.data == 12
    assert text.data == "Hello Ada!"


async def test_void_function_answers_204_without_body(devstack: Devstack, clients: Clients) -> None:
    sb = await clients.anon()

    via_client = await sb.rpc("note_call", {"msg": "hi"}).execute()
    async with httpx.AsyncClient() as http:
        raw = await http.post(
            f"{devstack.url}/rest/v1/rpc/note_call",
            json={"msg": "hi"},
            headers={"apikey": devstack.keys.anon_key},
        )

    assert via_client.data == []
    assert raw.status_code == 204
    assert raw.content == b""
    assert "content-type" not in raw.headers


async def test_setof_functions_return_arrays_that_filters_order_and_limit_apply_to(
    clients: Clients,
) -> None:
    sb = await clients.anon()

    scalars = await sb.rpc("countdown", {"n": 3}).execute()
    table = await sb.rpc("squares", {"n": 5}).gt("x", 1).order("x", desc=True).limit(2).execute()
    picked = await sb.rpc("squares", {"n": 3}).select("square").eq("x", 2).execute()

    assert scalars.data == [3, 2, 1]
    assert table.data == [{"x": 5, "square": 25}, {"x": 4, "square": 16}]
    assert picked.data == [{"square": 4}]


async def test_composite_function_returns_an_object(clients: Clients) -> None:
    sb = await clients.anon()

    pair = await sb.rpc("make_pair", {"x": 1, "y": 2}).execute()
    one_row_table = await sb.rpc("pair", {"a": 4}).single().execute()

    assert pair.data == {"x": 1, "y": 2}
    assert one_row_table.data == {"x": 4, "doubled": 8}


async def test_single_unnamed_jsonb_parameter_receives_the_whole_body(clients: Clients) -> None:
    sb = await clients.anon()

    echoed = await sb.rpc("echo_body", {"anything": [1, {"nested": True}], "n": None}).execute()

    assert echoed.data == {"anything": [1, {"nested": True}], "n": None}


async def test_json_arrays_convert_to_postgres_arrays(clients: Clients) -> None:
    sb = await clients.anon()

    total = await sb.rpc("sum_array", {"xs": [1, 2, 3, 4]}).execute()

    assert total.data == 10


async def test_get_rpc_takes_arguments_from_the_query_string(clients: Clients) -> None:
    sb = await clients.anon()

    got = await sb.rpc("add_numbers", {"a": 40, "b": 2}, get=True).execute()
    rows = await sb.rpc("squares", {"n": 4}, get=True).gte("square", 9).execute()

    assert got.data == 42
    assert rows.data == [{"x": 3, "square": 9}, {"x": 4, "square": 16}]


async def test_get_rpc_runs_read_only_so_a_writing_function_gets_405(clients: Clients) -> None:
    sb = await clients.service()

    with pytest.raises(APIError) as refused:
        await sb.rpc("write_row", {"v": "x"}, get=True).execute()
    written = await sb.rpc("write_row", {"v": "x"}).execute()

    assert refused.value.code == "25006"
    assert refused.value.message == "cannot execute INSERT in a read-only transaction"
    assert written.data == 1


async def test_count_exact_on_a_setof_function(clients: Clients) -> None:
    sb = await clients.anon()

    counted = await sb.rpc("squares", {"n": 7}, count="exact").limit(2).execute()

    assert counted.count == 7
    assert len(counted.data) == 2


async def test_invalid_open_case_input_is_a_400_with_the_raise_fields(clients: Clients) -> None:
    sb = await clients.service()

    with pytest.raises(APIError) as e:
        await sb.rpc("hitl_open_case", {"p": case_input(priority=9)}).execute()

    assert e.value.code == "P0001"
    assert e.value.message == "invalid priority: must be an integer from 1 to 5"
    assert e.value.details == "priority"
    assert e.value.hint == "must be an integer from 1 to 5"


async def test_invalid_input_answers_http_400(devstack: Devstack) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{devstack.url}/rest/v1/rpc/hitl_open_case",
            json={"p": case_input(question="")},
            headers={
                "apikey": devstack.keys.service_role_key,
                "Authorization": f"Bearer {devstack.keys.service_role_key}",
            },
        )

    assert r.status_code == 400
    assert r.json() == {
        "code": "P0001",
        "details": "question",
        "hint": "must not be empty",
        "message": "invalid question: must not be empty",
    }


async def test_unknown_function_is_pgrst202_with_postgrest_wording(devstack: Devstack) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{devstack.url}/rest/v1/rpc/no_such_fn",
            json={"b": 1, "a": 2},
            headers={"apikey": devstack.keys.anon_key},
        )
        none = await http.post(
            f"{devstack.url}/rest/v1/rpc/no_such_fn", headers={"apikey": devstack.keys.anon_key}
        )

    assert r.status_code == 404
    assert r.json() == {
        "code": "PGRST202",
        "details": "Searched for the function public.no_such_fn with parameters a, b or with a "
        "single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
        "hint": None,
        "message": "Could not find the function public.no_such_fn(a, b) in the schema cache",
    }
    assert none.json()["message"] == (
        "Could not find the function public.no_such_fn without parameters in the schema cache"
    )


async def test_wrong_argument_names_hint_at_the_real_signature(clients: Clients) -> None:
    sb = await clients.anon()

    with pytest.raises(APIError) as e:
        await sb.rpc("add_numbers", {"a": 1, "c": 2}).execute()

    assert e.value.code == "PGRST202"
    assert e.value.hint == "Perhaps you meant to call the function public.add_numbers(a, b)"


async def test_anon_may_not_call_the_relay_functions(clients: Clients) -> None:
    sb = await clients.anon()

    with pytest.raises(APIError) as e:
        await sb.rpc("hitl_open_case", {"p": case_input()}).execute()

    assert e.value.code == "42501"
    assert e.value.message == "permission denied for function hitl_open_case"


async def test_function_created_after_start_is_found_without_a_restart(
    clients: Clients, db: asyncpg.Connection
) -> None:
    sb = await clients.anon()
    assert (await sb.rpc("greet", {"name": "x"}).execute()).data == "Hello x!"

    await db.execute("create function public.late_fn() returns integer language sql as 'select 7'")

    assert (await sb.rpc("late_fn", {}).execute()).data == 7
