"""The devstack's Auth subset with the unmodified supabase-py auth client (supabase_auth 2.34).

Shapes follow GoTrue: a password grant returns a session (access_token, token_type, expires_in,
expires_at, refresh_token, user); errors are `{code, message}` with `X-Supabase-Api-Version`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from rest_support import SUPABASE_TIMEOUT_WARNING, case_input
from supabase import AsyncClient, acreate_client
from supabase_auth.errors import AuthApiError

from hitl_devstack.context import LocalUser
from hitl_devstack.keys import make_keys
from hitl_devstack.server import Devstack

pytestmark = pytest.mark.filterwarnings(SUPABASE_TIMEOUT_WARNING)

OPERATOR = LocalUser(email="operator@hitl.local", password="correct horse battery")
VIEWER = LocalUser(email="viewer@hitl.local", password="another one", operator=False)


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Devstack]:
    async with Devstack(
        db_url, make_keys(secrets.token_urlsafe(32)), users=[OPERATOR, VIEWER]
    ) as started:
        yield started


@pytest.fixture
async def sb(stack: Devstack) -> AsyncIterator[AsyncClient]:
    client = await acreate_client(stack.url, stack.keys.anon_key)
    yield client
    await client.postgrest.aclose()  # first: an auth event replaces the client's postgrest
    await client.auth.sign_out()  # stops the client's refresh timer
    await client.auth.close()


async def test_password_sign_in_returns_a_gotrue_session(sb: AsyncClient) -> None:
    signed = await sb.auth.sign_in_with_password(
        {"email": OPERATOR.email, "password": OPERATOR.password}
    )

    assert signed.session is not None
    assert signed.session.token_type == "bearer"
    assert signed.session.expires_in == 3600
    assert signed.user is not None
    assert signed.user.id == OPERATOR.id
    assert signed.user.email == OPERATOR.email
    assert signed.user.app_metadata["hitl_role"] == "operator"


async def test_signed_in_operator_reads_cases_through_rls(stack: Devstack, sb: AsyncClient) -> None:
    service = await acreate_client(stack.url, stack.keys.service_role_key)
    opened = await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    await service.postgrest.aclose()

    await sb.auth.sign_in_with_password({"email": OPERATOR.email, "password": OPERATOR.password})
    rows = await sb.table("cases").select("id").execute()

    assert [r["id"] for r in rows.data] == [opened.data["case_id"]]


async def test_signed_in_non_operator_reads_nothing(stack: Devstack, sb: AsyncClient) -> None:
    service = await acreate_client(stack.url, stack.keys.service_role_key)
    await service.rpc("hitl_open_case", {"p": case_input()}).execute()
    await service.postgrest.aclose()

    await sb.auth.sign_in_with_password({"email": VIEWER.email, "password": VIEWER.password})
    rows = await sb.table("cases").select("id").execute()

    assert rows.data == []


async def test_get_user_and_refresh_session(sb: AsyncClient) -> None:
    await sb.auth.sign_in_with_password({"email": OPERATOR.email, "password": OPERATOR.password})

    me = await sb.auth.get_user()
    refreshed = await sb.auth.refresh_session()

    assert me is not None
    assert me.user.email == OPERATOR.email
    assert refreshed.session is not None
    assert refreshed.user is not None
    assert refreshed.user.id == OPERATOR.id


async def test_wrong_password_is_invalid_credentials(sb: AsyncClient) -> None:
    with pytest.raises(AuthApiError) as e:
        await sb.auth.sign_in_with_password({"email": OPERATOR.email, "password": "wrong"})

    assert e.value.status == 400
    assert e.value.code == "invalid_credentials"
    assert e.value.message == "Invalid login credentials"


async def test_a_refresh_token_works_once(stack: Devstack) -> None:
    async with httpx.AsyncClient(base_url=f"{stack.url}/auth/v1") as http:
        session = (
            await http.post(
                "/token?grant_type=password",
                json={"email": OPERATOR.email, "password": OPERATOR.password},
                headers={"apikey": stack.keys.anon_key},
            )
        ).json()
        first = await http.post(
            "/token?grant_type=refresh_token",
            json={"refresh_token": session["refresh_token"]},
            headers={"apikey": stack.keys.anon_key},
        )
        replay = await http.post(
            "/token?grant_type=refresh_token",
            json={"refresh_token": session["refresh_token"]},
            headers={"apikey": stack.keys.anon_key},
        )

    assert set(session) == {
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "refresh_token",
        "user",
    }
    assert first.status_code == 200
    assert replay.status_code == 400
    assert replay.json()["code"] == "refresh_token_not_found"
