"""The relay's edges under hostile input, each as it was found against a running relay: forwarded
headers from loopback, a stranger locking out a shared address, endless or huge headers, values
no depth or number form lets through, a call id read two ways, hash-shaped keys, IPv6 forms that
embed a private IPv4 address, an open redirect, host checks on /metrics and /readyz, the
Postgres log's mode."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from security_support import (
    KEY_A,
    KEY_B,
    RETELL_KEY,
    RetellSigner,
    bearer,
    guarded_app,
    make_settings,
    memory_backend,
    relay_app,
    relay_breaker,
    retell_body,
)

from hitl_devstack.cluster import Cluster
from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.callbacks import vet_callback_url
from hitl_relay.config import Settings
from hitl_relay.errors import InvalidRequest
from hitl_relay.http_app import create_app, running
from hitl_relay.models import parse_ask_request
from hitl_relay.retell import PATH
from hitl_relay.security import MemoryAuditSink, SecurityLayer
from hitl_relay.security.keys import KeyRing, key_digest
from hitl_relay.security.middleware import tool_call_ids

MCP_HEADERS = {
    **bearer(KEY_A),
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}
ASK = {"question": "May I refund?", "session_id": "s", "call_id": "call-1", "agent_id": "a"}


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[str, MemorySink]]:
    """The real relay app on uvicorn (as `serve` configures it), on the memory twin."""
    audit = MemorySink()
    layer = SecurityLayer(settings, audit=audit)
    platform = MemoryPlatform()
    app = create_app(settings, backend=memory_backend(platform, "Yes."), security=layer)
    async with running(app) as url:
        yield url, audit


MemorySink = MemoryAuditSink


def tool_call(arguments: Any, name: str = "ask_human") -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
    )


def rpc_result(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text.partition("data: ")[2] or text)
    return data


# ---------------------------------------------------------------- forwarded headers


async def test_forwarded_headers_from_loopback_are_ignored_without_trusted_proxies() -> None:
    settings = make_settings(ip_allowlist="100.20.5.228/32", https_mode="reject")
    spoof = {"x-forwarded-for": "100.20.5.228", "x-forwarded-proto": "https"}
    async with served(settings) as (url, audit), httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/mcp", headers={**bearer(KEY_A), **spoof})
    assert response.status_code == 403
    # The audit names the real peer, never the address the client wrote.
    assert all("100.20.5.228" not in e.actor for e in audit.events)
    assert any(e.actor == "ip:127.0.0.1" for e in audit.events)


async def test_varying_forwarded_for_does_not_escape_the_failed_auth_budget() -> None:
    settings = make_settings(rate_limit_auth_failures_per_ip="3/minute")
    wrong = bearer("wrong-key-wrong-key-0123")
    async with served(settings) as (url, audit), httpx.AsyncClient(base_url=url) as http:
        codes = [
            (
                await http.get("/mcp", headers={**wrong, "x-forwarded-for": f"198.51.100.{i}"})
            ).status_code
            for i in range(5)
        ]
    # Every attempt is counted against the real peer, whatever address each one claims.
    assert codes == [401, 401, 401, 429, 429]
    assert audit.events
    assert {e.actor for e in audit.events} == {"ip:127.0.0.1"}


def test_serve_runs_uvicorn_without_proxy_headers_and_with_the_guarded_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from hitl_relay import gc_tuning
    from hitl_relay.http_app import RelayServer, serve
    from hitl_relay.security.http_limits import GuardedHttpProtocol

    configs = []
    monkeypatch.setattr(RelayServer, "run", lambda self, *_a, **_k: configs.append(self.config))
    monkeypatch.setattr(gc_tuning, "tune", lambda *_a, **_k: None)  # leave this process's gc be
    serve(make_settings(), create_app(make_settings(), backend=memory_backend(MemoryPlatform())))
    [config] = configs
    config.load()
    # What `hitl-relay serve` runs: uvicorn's proxy-header rewriting would otherwise believe
    # X-Forwarded-For/-Proto from 127.0.0.1 before any of the relay's checks.
    assert config.proxy_headers is False
    assert config.http_protocol_class is GuardedHttpProtocol
    app: Any = config.loaded_app
    while app is not None:
        assert not isinstance(app, ProxyHeadersMiddleware)
        app = getattr(app, "app", None)


# ---------------------------------------------------------------- lock-out by a stranger


def test_a_stranger_failing_retell_signatures_does_not_lock_out_retell() -> None:
    config = make_settings(retell_api_key=RETELL_KEY, rate_limit_auth_failures_per_ip="20/minute")
    with relay_app(config, auto_answer="Yes.") as relay:
        body = retell_body()
        bad = {"x-retell-signature": "v=1,d=" + "0" * 64}
        codes = [relay.client.post(PATH, content=body, headers=bad).status_code for _ in range(21)]
        good = relay.client.post(PATH, content=body, headers=RetellSigner().headers(body))
        key = relay.client.post("/mcp", content=tool_call(ASK), headers=MCP_HEADERS)
    assert codes[-1] == 429
    assert good.status_code == 200
    assert key.status_code == 200


# ---------------------------------------------------------------- header limits


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_oversized_headers_get_431_and_are_never_buffered_whole() -> None:
    async with served(make_settings()) as (url, _), connection(url) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: " + b"a" * 40000)
        await writer.drain()  # headers over the limit, never finished
        reply = await asyncio.wait_for(reader.read(), 10)
    assert reply.startswith(b"HTTP/1.1 431 ")


async def test_headers_that_never_end_are_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from hitl_relay.security.http_limits import GuardedHttpProtocol

    monkeypatch.setattr(GuardedHttpProtocol, "header_timeout_s", 0.3)
    async with served(make_settings()) as (url, _), connection(url) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        await writer.drain()
        # Server closes the connection: EOF, without a response.
        assert await asyncio.wait_for(reader.read(), 10) == b""


async def one_past_the_cap_is_refused(url: str, pending: int, unfinished: bytes) -> None:
    """`pending` connections each send `unfinished` and hold; one more is closed without a
    response; once they are gone the relay serves again."""
    async with contextlib.AsyncExitStack() as held:
        for _ in range(pending):
            _reader, writer = await held.enter_async_context(connection(url))
            writer.write(unfinished)
            await writer.drain()
        async with connection(url) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            refused = await asyncio.wait_for(reader.read(), 10)
    async with httpx.AsyncClient(base_url=url) as http:
        after = await http.get("/healthz")
    assert refused == b""
    assert after.status_code == 200


async def test_connections_waiting_for_headers_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from hitl_relay.security.http_limits import GuardedHttpProtocol

    monkeypatch.setattr(GuardedHttpProtocol, "max_pending", 3)
    async with served(make_settings()) as (url, _):
        await one_past_the_cap_is_refused(url, 3, b"GET /healthz HTTP/1.1\r\n")


UNFINISHED_BODY = (
    b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer wrong-key-wrong-key-0123\r\n"
    b"content-type: application/json\r\ncontent-length: 4000\r\n\r\n{"
)


async def test_a_body_that_never_ends_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from hitl_relay.security.http_limits import GuardedHttpProtocol

    # The whole body is read before the key is checked (a Retell signature covers it), so a
    # stranger sending it a byte at a time must not hold the connection for ever.
    monkeypatch.setattr(GuardedHttpProtocol, "body_timeout_s", 0.3)
    async with served(make_settings()) as (url, _), connection(url) as (reader, writer):
        writer.write(UNFINISHED_BODY)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""


async def test_connections_still_sending_a_body_count_against_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hitl_relay.security.http_limits import GuardedHttpProtocol

    monkeypatch.setattr(GuardedHttpProtocol, "max_pending", 2)
    async with served(make_settings()) as (url, _):
        await one_past_the_cap_is_refused(url, 2, UNFINISHED_BODY)


# ---------------------------------------------------------------- values at any depth


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("caller_info", "rule"),
    [
        (nested(70, "x\x00y"), "levels deep"),
        (nested(20, "x\x00y"), "NUL"),
        ({"score": float("nan")}, "finite"),
        ({"score": float("inf")}, "finite"),
        ({"list": [1.0, float("-inf")]}, "finite"),
        (nested(40, "deep"), "levels deep"),
    ],
)
def test_values_no_depth_or_number_form_escapes_are_refused_naming_the_field(
    caller_info: Any, rule: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_ask_request({**ASK, "caller_info": caller_info})
    assert refused.value.field == "caller_info"
    assert rule in refused.value.rule


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_over_mcp_are_a_tool_error_naming_the_field(number: str) -> None:
    body = tool_call({**ASK, "caller_info": {"score": 0}}).replace(
        '"score": 0', f'"score": {number}'
    )
    with relay_app(make_settings(), auto_answer="Yes.", raise_server_exceptions=False) as relay:
        response = relay.client.post("/mcp", content=body, headers=MCP_HEADERS)
        breaker = relay_breaker(relay)
    assert response.status_code == 200, response.text
    data = rpc_result(response.text)
    assert "error" not in data, data  # never a JSON-RPC error (code 0 "unhandled errors")
    assert data["result"]["isError"] is True
    assert "caller_info" in data["result"]["content"][0]["text"]
    assert relay.platform.cases == {}
    assert breaker.last_error is None


def test_a_nul_seventy_levels_deep_does_not_open_the_breaker() -> None:
    arguments = {**ASK, "caller_info": nested(70, "x\x00y")}
    with relay_app(make_settings(), auto_answer="Yes.", raise_server_exceptions=False) as relay:
        for i in range(6):
            response = relay.client.post(
                "/mcp", content=tool_call({**arguments, "call_id": f"c{i}"}), headers=MCP_HEADERS
            )
            assert rpc_result(response.text)["result"]["isError"] is True
        breaker = relay_breaker(relay)
        ready = relay.client.get("/readyz")
    assert breaker.last_error is None
    assert ready.status_code == 200


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_non_finite_numbers_on_the_retell_endpoint_are_refused_naming_the_field(
    number: str,
) -> None:
    body = retell_body(caller_info={"score": 0}).replace(
        b'"score": 0', f'"score": {number}'.encode()
    )
    with relay_app(
        make_settings(retell_api_key=RETELL_KEY),
        auto_answer="Yes.",
        raise_server_exceptions=False,
    ) as relay:
        response = relay.client.post(PATH, content=body, headers=RetellSigner().headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["error"] == "invalid_request"
    assert any(p["field"] == "caller_info" for p in response.json()["problems"]), response.json()
    assert relay.platform.cases == {}


# ---------------------------------------------------------------- one reading of a call id


def test_a_call_id_given_as_call_id_and_callid_is_refused_by_the_tool() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_ask_request({**ASK, "call_id": "random-1", "callId": "victim"})
    assert refused.value.field == "call_id"
    assert "given twice" in refused.value.rule
    # ... and the limiter counts no call id for it (the tool runs nothing).
    assert (
        list(tool_call_ids(tool_call({**ASK, "call_id": "r", "callId": "victim"}).encode())) == []
    )


def test_the_per_call_limit_cannot_be_escaped_with_an_alias() -> None:
    settings = make_settings(rate_limit_per_call="2/minute")
    with relay_app(settings, auto_answer="Yes.") as relay:
        codes = []
        for i in range(4):
            arguments = {**ASK, "call_id": f"random-{i}", "callId": "victim"}
            response = relay.client.post("/mcp", content=tool_call(arguments), headers=MCP_HEADERS)
            codes.append(response.status_code)
            if response.status_code == 200:
                assert rpc_result(response.text)["result"]["isError"] is True
    # Each is the tool's refusal: the limiter counts no call id for it, so nobody's budget moves.
    assert codes == [200, 200, 200, 200]
    assert relay.platform.cases == {}  # nothing ran as the victim's call


def test_duplicate_keys_are_refused_on_mcp_and_retell() -> None:
    mcp_body = tool_call(ASK).replace('"call_id": "call-1"', '"call_id": "a", "call_id": "b"')
    retell = retell_body().replace(b'"name": "ask_human"', b'"name": "x", "name": "ask_human"')
    with relay_app(make_settings(retell_api_key=RETELL_KEY), auto_answer="Yes.") as relay:
        mcp = relay.client.post("/mcp", content=mcp_body, headers=MCP_HEADERS)
        hook = relay.client.post(PATH, content=retell, headers=RetellSigner().headers(retell))
    assert mcp.status_code == 400
    assert "duplicate key" in mcp.json()["error"]["message"]
    assert hook.status_code == 400
    assert "duplicate key" in hook.json()["detail"]
    assert relay.platform.cases == {}


# ---------------------------------------------------------------- key formats


def test_a_hash_prefix_in_any_case_is_a_hash_never_a_plain_key() -> None:
    key = "test-key-charlie-0123456789abcdef"
    digest = key_digest(key).hex()
    for prefix in ("sha256:", "SHA256:", "Sha256:"):
        ring = KeyRing([prefix + digest])
        assert ring.problems == []
        assert ring.identify(key) is not None
        assert ring.identify(prefix + digest) is None
        assert ring.identify(digest) is None


def test_a_bare_64_hex_entry_is_refused_with_a_clear_message() -> None:
    ring = KeyRing([key_digest("anything-at-all-long").hex()])
    assert ring.size == 0
    assert "reads as a SHA-256 hash" in ring.problems[0]


def test_the_published_keys_hash_never_authenticates() -> None:
    published = "0955bb026c7699bd76e7daecf0993d6401e6bbebf06c1b7b64b543ad26aa2c16"
    for entry in (published, "SHA256:" + published):
        ring = KeyRing([entry])
        assert ring.identify(published) is None
        assert ring.problems


# ---------------------------------------------------------------- callback guard


@pytest.mark.parametrize(
    "host",
    [
        "[::127.0.0.1]",
        "[::a9fe:a9fe]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b:1::a00:1]",
        "[2002:a9fe:a9fe::1]",
        "[2002:7f00:1::1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
        "[::ffff:169.254.169.254]",
        "[::]",
    ],
)
async def test_the_callback_guard_refuses_private_ipv4_inside_any_ipv6_form(host: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await vet_callback_url(f"https://{host}/hook", allow_private=False)
    assert refused.value.field == "callback_url"


async def test_the_callback_guard_checks_what_a_name_resolves_to_in_every_ipv6_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def resolves_to(host: str, port: int, **_kw: Any) -> list[Any]:
        address = {"nat64.example": "64:ff9b::a9fe:a9fe", "sixtofour.example": "2002:a00:1::1"}
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address[host], port, 0, 0))]

    # vet_callback_url resolves through anyio: the name points at an embedded-IPv4 form.
    monkeypatch.setattr(anyio, "getaddrinfo", resolves_to)
    for host in ("nat64.example", "sixtofour.example"):
        with pytest.raises(InvalidRequest) as refused:
            await vet_callback_url(f"https://{host}/hook", allow_private=False)
        assert refused.value.field == "callback_url"


async def test_public_ipv6_and_its_nat64_form_of_a_public_ipv4_pass() -> None:
    for host in ("[2606:4700:4700::1111]", "[64:ff9b::808:808]", "[2002:808:808::1]"):
        target = await vet_callback_url(f"https://{host}/hook", allow_private=False)
        assert all(isinstance(a, ipaddress.IPv6Address) for a in target.addresses)


# ---------------------------------------------------------------- redirects and hosts


def test_no_redirect_without_configured_hosts() -> None:
    guarded = guarded_app(make_settings(https_mode="redirect"))
    with guarded.client(base_url="http://evil.example") as client:
        response = client.get("/mcp", headers=bearer(KEY_A), follow_redirects=False)
    assert response.status_code == 403
    assert "location" not in response.headers


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_metrics_and_readyz_refuse_a_host_the_relay_does_not_serve(path: str) -> None:
    with relay_app(make_settings()) as relay:
        foreign = relay.client.get(path, headers={"host": "evil.example"})
        own = relay.client.get(path, headers={"host": "127.0.0.1:8080"})
    assert foreign.status_code == 421
    assert own.status_code in (200, 503)


# ---------------------------------------------------------------- local files


def test_the_postgres_log_is_readable_by_its_owner_only(pg_cluster: Cluster) -> None:
    log = pg_cluster.datadir.parent / f"{pg_cluster.datadir.name}.log"
    assert log.exists()
    assert os.stat(log).st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- keys read only their own cases


def test_a_key_reads_and_continues_only_the_cases_it_opened() -> None:
    def call_as(relay: Any, key: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        headers = {**MCP_HEADERS, **bearer(key)}
        response = relay.client.post("/mcp", content=tool_call(arguments, name), headers=headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = rpc_result(response.text)["result"]
        return result

    with relay_app(make_settings(), auto_answer="Yes.") as relay:
        asked = call_as(relay, KEY_A, "ask_human", ASK)
        case_id = asked["structuredContent"]["case_id"]
        own = call_as(relay, KEY_A, "get_human_answer", {"case_id": case_id})
        foreign = call_as(relay, KEY_B, "get_human_answer", {"case_id": case_id})
        unknown = call_as(
            relay, KEY_B, "get_human_answer", {"case_id": "00000000-0000-4000-8000-000000000001"}
        )
        follow_up = call_as(
            relay, KEY_B, "ask_human", {**ASK, "question": "And Sunday?", "case_id": case_id}
        )
    assert asked["structuredContent"]["status"] == "answered"
    assert own["structuredContent"]["status"] == "answered"
    for refused in (foreign, unknown, follow_up):
        assert refused["isError"] is True
        assert refused["structuredContent"]["problems"] == [
            {"field": "case_id", "rule": "no such case"}
        ]
    # A foreign case reads exactly like an unknown one.
    assert foreign["content"] == unknown["content"]
