"""The API gateway as hosted Supabase's behaves, with the unmodified supabase-py 2.34 clients.

Sources (cited per test): supabase/supabase docker/volumes/api/kong.yml (key-auth on rest, auth
and realtime) and kong-entrypoint.sh (LUA_AUTH_EXPR / LUA_RT_WS_EXPR: the new API keys swapped
for the anon / service_role JWT); supabase/cli apps/cli-go/internal/start/start.go (the same
expressions for the local stack); supabase/supabase apps/docs/content/guides/api/api-keys.mdx
(publishable ≈ anon, secret ≈ service_role; a new key is not a JWT). The 401 bodies are hosted's
own as its users report them (`{"message":"No API key found in request","hint":...}` with
`sb-error-code: UNAUTHORIZED_MISSING_API_KEY`; `{"message":"Invalid API key","hint":...}`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError
from realtime import AsyncRealtimeChannel, RealtimeSubscribeStates
from rest_support import SUPABASE_TIMEOUT_WARNING, Clients, case_input
from supabase import acreate_client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hitl_devstack.keys import (
    PROJECT_REF,
    make_keys,
    opaque_key,
    opaque_key_is_well_formed,
)
from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)

NO_KEY = {
    "message": "No API key found in request",
    "hint": "No `apikey` request header or url param was found.",
}
INVALID_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}


@pytest.fixture
async def clients(devstack: Devstack) -> AsyncIterator[Clients]:
    made = Clients(devstack)
    yield made
    await made.close()


# ---- key-auth: no apikey, unknown apikey ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/rest/v1/cases?select=id"),
        ("POST", "/rest/v1/rpc/hitl_open_case"),
        ("GET", "/auth/v1/user"),
        ("POST", "/realtime/v1/api/broadcast"),
    ],
)
async def test_a_request_without_an_apikey_is_refused_by_the_gateway(
    devstack: Devstack, method: str, path: str
) -> None:
    # kong.yml: key-auth on rest-v1, auth-v1, realtime-v1-rest; a bearer alone is not a key
    headers = {"Authorization": f"Bearer {devstack.keys.service_role_key}"}
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.request(method, path, headers=headers, json={})
        empty = await http.request(method, path + ("&" if "?" in path else "?") + "apikey=")

    for refused in (r, empty):  # an empty `apikey` parameter is no key (Kong key-auth)
        assert refused.status_code == 401
        assert refused.json() == NO_KEY
        assert refused.headers["sb-error-code"] == "UNAUTHORIZED_MISSING_API_KEY"


async def test_the_apikey_query_parameter_is_a_key(devstack: Devstack) -> None:
    # kong.yml key-auth: key_names apikey, in a header or the query string; realtime-js puts it
    # in the query of its REST broadcast (notes: "keeps its query string")
    body = {"messages": [{"topic": "room1", "event": "e", "payload": {}}]}
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post(
            f"/realtime/v1/api/broadcast?apikey={devstack.keys.publishable_key}&vsn=2.0.0",
            json=body,
        )

    assert (r.status_code, r.content) == (202, b"")


@pytest.mark.parametrize("apikey", ["sb_publishable_someone_elses_key", "not-a-key-at-all"])
async def test_an_unknown_apikey_is_an_invalid_api_key(devstack: Devstack, apikey: str) -> None:
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get("/rest/v1/cases?select=id", headers={"apikey": apikey})

    assert r.status_code == 401
    assert r.json() == INVALID_KEY


async def test_supabase_py_with_an_unknown_key_meets_the_gateway(devstack: Devstack) -> None:
    # supabase-py 2.34 checks only that the key is a non-empty string
    # (supabase/_async/client.py _validate_str_arg): the gateway is what refuses it
    sb = await acreate_client(
        devstack.url, make_keys("another-project-secret-0123456789").secret_key
    )
    try:
        with pytest.raises(APIError) as e:
            await sb.table("cases").select("id").execute()
    finally:
        await sb.postgrest.aclose()

    assert e.value.message == INVALID_KEY["message"]
    assert e.value.hint == INVALID_KEY["hint"]


async def test_cors_preflight_is_answered_before_key_auth(devstack: Devstack) -> None:
    # Kong runs its cors plugin (priority 2000) before key-auth (1250): a browser's preflight
    # carries no apikey and must still succeed
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.options(
            "/rest/v1/cases",
            headers={
                "Origin": "http://localhost:5173",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "apikey, authorization",
            },
        )

    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "http://localhost:5173")


# ---- the new API keys ---------------------------------------------------------------------


def test_generated_keys_have_supabases_shape_and_checksum(devstack: Devstack) -> None:
    # add-new-auth-keys.sh generateOpaqueKey: prefix + 22 chars + "_" + 8-char sha256 checksum
    keys = devstack.keys
    for key, prefix in ((keys.publishable_key, "sb_publishable_"), (keys.secret_key, "sb_secret_")):
        assert key.startswith(prefix)
        assert len(key) == len(prefix) + 22 + 1 + 8
        assert opaque_key_is_well_formed(key)
    assert keys.publishable_key != keys.secret_key
    assert make_keys(keys.jwt_secret) == keys  # derived from the checkout's secret, not stored
    # the checksum binds the key to its project ref
    assert not opaque_key_is_well_formed(keys.secret_key, project_ref=PROJECT_REF + "-other")
    assert opaque_key("sb_secret_", "N7UND0UgjKTVK-Uodkm0Hg", "x") != opaque_key(
        "sb_secret_", "N7UND0UgjKTVK-Uodkm0Hg", "y"
    )


async def test_a_secret_key_acts_as_the_service_role(devstack: Devstack) -> None:
    # kong-entrypoint.sh LUA_AUTH_EXPR: apikey == secret key → Bearer <service_role JWT>;
    # supabase-py sends the key as apikey and as `Authorization: Bearer sb_secret_…`
    sb = await acreate_client(devstack.url, devstack.keys.secret_key)
    try:
        opened = await sb.rpc("hitl_open_case", {"p": case_input()}).execute()
        rows = await sb.table("cases").select("id").execute()
    finally:
        await sb.postgrest.aclose()

    assert [r["id"] for r in rows.data] == [opened.data["case_id"]]


async def test_a_publishable_key_acts_as_anon(devstack: Devstack, clients: Clients) -> None:
    # LUA_AUTH_EXPR: apikey == publishable key → Bearer <anon JWT>; RLS shows anon nothing
    service = await clients.service()
    await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    sb = await acreate_client(devstack.url, devstack.keys.publishable_key)
    try:
        rows = await sb.table("cases").select("id").execute()
        with pytest.raises(APIError) as e:
            await sb.rpc("hitl_open_case", {"p": case_input()}).execute()
    finally:
        await sb.postgrest.aclose()

    assert rows.data == []
    assert e.value.code == "42501"  # anon may not open cases: 401 as PostgREST maps 42501


async def test_a_session_token_passes_with_a_publishable_key(
    devstack: Devstack, clients: Clients
) -> None:
    # LUA_AUTH_EXPR: an Authorization that is not `Bearer sb_…` (a user's session) passes
    service = await clients.service()
    opened = await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    operator = devstack.keys.user_token(str(uuid.uuid4()), operator=True)
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get(
            "/rest/v1/cases?select=id",
            headers={
                "apikey": devstack.keys.publishable_key,
                "Authorization": f"Bearer {operator}",
            },
        )

    assert [row["id"] for row in r.json()] == [opened.data["case_id"]]


async def test_a_new_key_is_not_a_jwt_for_postgrest(devstack: Devstack) -> None:
    # api-keys.mdx "Known limitations": a new key in the bearer that differs from apikey reaches
    # the service as it is; the devstack's gateway swaps only the apikey's own mapping, so a
    # secret key smuggled as bearer next to the publishable key never gains the service role
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post(
            "/rest/v1/rpc/hitl_open_case",
            json={"p": case_input()},
            headers={
                "apikey": devstack.keys.publishable_key,
                "Authorization": f"Bearer {devstack.keys.secret_key}",
            },
        )

    assert r.status_code == 401
    assert r.json()["code"] == "42501"


async def test_realtime_accepts_a_publishable_key_on_the_socket(devstack: Devstack) -> None:
    # kong-entrypoint.sh LUA_RT_WS_EXPR: the apikey query parameter becomes the anon JWT
    url = devstack.url.replace("http://", "ws://")
    url += f"/realtime/v1/websocket?apikey={devstack.keys.publishable_key}&vsn=2.0.0"
    async with connect(url, open_timeout=5) as ws:
        await ws.send(json.dumps([None, "1", "phoenix", "heartbeat", {}]))
        reply = json.loads(await ws.recv())

    assert reply[3] == "phx_reply"
    assert reply[4]["status"] == "ok"


async def test_realtime_refuses_a_socket_without_an_apikey(devstack: Devstack) -> None:
    # kong.yml realtime-v1-ws: key-auth before the upgrade reaches Realtime
    url = devstack.url.replace("http://", "ws://") + "/realtime/v1/websocket?vsn=2.0.0"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, open_timeout=5)

    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body) == NO_KEY


async def test_realtime_py_joins_a_private_channel_with_a_secret_key(devstack: Devstack) -> None:
    # supabase-py 2.34 gives realtime the key as `apikey` and as the join's access_token; the
    # gateway swaps the apikey for the service_role JWT and Realtime ignores an `sb_` access
    # token in favour of the connect token (realtime_channel.ex assign_access_token)
    sb = await acreate_client(devstack.url, devstack.keys.secret_key)
    joined: asyncio.Future[RealtimeSubscribeStates] = asyncio.get_running_loop().create_future()

    def on_state(state: RealtimeSubscribeStates, _: Exception | None) -> None:
        if not joined.done():
            joined.set_result(state)

    channel: AsyncRealtimeChannel = sb.channel(
        f"case:{uuid.uuid4()}", {"config": {"private": True}}
    )
    try:
        await channel.subscribe(on_state)
        state = await asyncio.wait_for(joined, 10)
    finally:
        await sb.remove_all_channels()
        await sb.postgrest.aclose()

    assert state == RealtimeSubscribeStates.SUBSCRIBED


async def test_rest_broadcast_accepts_a_secret_key_as_apikey_only(devstack: Devstack) -> None:
    # kong.yml realtime-v1-rest: key-auth, then LUA_AUTH_EXPR fills Authorization
    body: dict[str, Any] = {
        "messages": [{"topic": "room1", "event": "e", "payload": {"n": 1}, "private": True}]
    }
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        accepted = await http.post(
            "/realtime/v1/api/broadcast", json=body, headers={"apikey": devstack.keys.secret_key}
        )
        refused = await http.post("/realtime/v1/api/broadcast", json=body)

    assert (accepted.status_code, accepted.content) == (202, b"")
    assert (refused.status_code, refused.json()) == (401, NO_KEY)
