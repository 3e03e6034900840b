"""Where requests come from and how: IP allowlist, X-Forwarded-For only from trusted proxies,
HTTPS enforcement, body size, CORS and Origin validation, the MCP SDK's DNS-rebinding check."""

from __future__ import annotations

import json

from security_support import KEY_A, bearer, guarded_app, make_settings, relay_app
from starlette.types import Scope

from hitl_relay.security.network import NetworkPolicy

PROXY = "10.0.0.2"


def scope(peer: str, headers: dict[str, str], scheme: str = "http") -> Scope:
    return {
        "type": "http",
        "scheme": scheme,
        "client": (peer, 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


# ---------------------------------------------------------------- client address


def test_an_address_outside_the_allowlist_is_refused_with_403() -> None:
    guarded = guarded_app(make_settings(ip_allowlist="203.0.113.0/24, 2001:db8::/32"))
    with guarded.client(ip="198.51.100.7") as outsider, guarded.client(ip="203.0.113.99") as ok:
        refused = outsider.get("/mcp", headers=bearer(KEY_A))
        allowed = ok.get("/mcp", headers=bearer(KEY_A))
    assert refused.status_code == 403
    assert refused.json() == {"error": "forbidden"}
    assert allowed.status_code == 200
    assert guarded.audit.events[0].action == "ip_refused"
    assert guarded.audit.events[0].actor == "ip:198.51.100.7"


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    guarded = guarded_app(make_settings(ip_allowlist="203.0.113.0/24", trusted_proxies=PROXY))
    with guarded.client(ip="198.51.100.7") as spoofer:
        response = spoofer.get("/mcp", headers={**bearer(KEY_A), "x-forwarded-for": "203.0.113.5"})
    assert response.status_code == 403


def test_a_trusted_proxy_names_the_client_and_the_allowlist_applies_to_it() -> None:
    guarded = guarded_app(
        make_settings(ip_allowlist="203.0.113.0/24", trusted_proxies="10.0.0.0/8")
    )
    with guarded.client(ip=PROXY) as proxy:
        allowed = proxy.get("/mcp", headers={**bearer(KEY_A), "x-forwarded-for": "203.0.113.5"})
        refused = proxy.get("/mcp", headers={**bearer(KEY_A), "x-forwarded-for": "198.51.100.7"})
    assert allowed.status_code == 200
    assert allowed.json()["client"] == "203.0.113.5"
    assert refused.status_code == 403


def test_an_address_a_client_wrote_into_x_forwarded_for_is_never_reached() -> None:
    # The attacker sends "X-Forwarded-For: 203.0.113.5"; its proxy appends the real address.
    guarded = guarded_app(
        make_settings(ip_allowlist="203.0.113.0/24", trusted_proxies="10.0.0.0/8")
    )
    with guarded.client(ip=PROXY) as proxy:
        response = proxy.get(
            "/mcp", headers={**bearer(KEY_A), "x-forwarded-for": "203.0.113.5, 198.51.100.7"}
        )
    assert response.status_code == 403


def test_the_rightmost_untrusted_hop_is_the_client_through_several_proxies() -> None:
    policy = NetworkPolicy(trusted_proxies=["10.0.0.0/8"])
    chain = {"x-forwarded-for": "192.0.2.1, 198.51.100.7, 10.1.1.1, 10.2.2.2"}
    assert str(policy.origin(scope(PROXY, chain)).client) == "198.51.100.7"
    everyone_trusted = {"x-forwarded-for": "10.9.9.9, 10.1.1.1"}
    assert str(policy.origin(scope(PROXY, everyone_trusted)).client) == "10.9.9.9"
    garbage = {"x-forwarded-for": "not-an-ip, 10.1.1.1"}
    assert str(policy.origin(scope(PROXY, garbage)).client) == "10.1.1.1"
    with_ports = {"x-forwarded-for": "[2001:db8::7]:4711"}
    assert str(policy.origin(scope(PROXY, with_ports)).client) == "2001:db8::7"
    split_headers = [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-for", b"10.1.1.1")]
    two = {**scope(PROXY, {}), "headers": split_headers}
    assert str(policy.origin(two).client) == "198.51.100.7"


def test_clients_behind_one_proxy_have_their_own_address_budgets() -> None:
    guarded = guarded_app(make_settings(rate_limit_per_ip="2/minute", trusted_proxies=PROXY))
    with guarded.client(ip=PROXY) as proxy:
        codes_a = [
            proxy.get("/open", headers={"x-forwarded-for": "203.0.113.1"}).status_code
            for _ in range(3)
        ]
        code_b = proxy.get("/open", headers={"x-forwarded-for": "203.0.113.2"}).status_code
    assert codes_a == [200, 200, 429]
    assert code_b == 200


# ---------------------------------------------------------------- HTTPS


def test_plain_http_is_refused_when_https_is_required() -> None:
    guarded = guarded_app(make_settings(https_mode="reject"))
    with guarded.client() as client:
        response = client.get("/mcp", headers=bearer(KEY_A))
    assert response.status_code == 403
    assert response.json() == {"error": "https required"}


def test_https_to_the_process_itself_passes() -> None:
    guarded = guarded_app(make_settings(https_mode="reject"))
    with guarded.client(base_url="https://127.0.0.1:8443") as client:
        response = client.get("/mcp", headers=bearer(KEY_A))
    assert response.status_code == 200
    assert response.json()["https"] is True


def test_a_trusted_proxy_saying_https_is_believed_and_an_untrusted_one_is_not() -> None:
    guarded = guarded_app(make_settings(https_mode="reject", trusted_proxies=PROXY))
    forwarded = {
        **bearer(KEY_A),
        "x-forwarded-proto": "https",
        "x-forwarded-for": "203.0.113.5",
    }
    with guarded.client(ip=PROXY) as proxy, guarded.client(ip="198.51.100.7") as stranger:
        via_proxy = proxy.get("/mcp", headers=forwarded)
        direct = stranger.get("/mcp", headers=forwarded)
    assert via_proxy.status_code == 200
    assert direct.status_code == 403


def test_a_client_cannot_smuggle_https_past_a_proxy_that_appends() -> None:
    policy = NetworkPolicy(trusted_proxies=[PROXY])
    # client sent "X-Forwarded-Proto: https" over plain http; the proxy appended "http"
    smuggled = {"x-forwarded-for": "203.0.113.5", "x-forwarded-proto": "https, http"}
    assert policy.origin(scope(PROXY, smuggled)).https is False
    # a proxy that overwrites the header with one value speaks for the whole chain
    overwritten = {"x-forwarded-for": "203.0.113.5, 10.0.0.9", "x-forwarded-proto": "https"}
    assert NetworkPolicy(["10.0.0.0/8"]).origin(scope(PROXY, overwritten)).https is True


def test_plain_http_is_redirected_to_https_when_so_configured() -> None:
    guarded = guarded_app(make_settings(https_mode="redirect", allowed_hosts="relay.example.com"))
    with guarded.client(base_url="http://relay.example.com") as client:
        response = client.get("/mcp?x=1", headers=bearer(KEY_A), follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "https://relay.example.com/mcp?x=1"


def test_the_https_redirect_never_points_to_a_host_name_the_client_made_up() -> None:
    guarded = guarded_app(make_settings(https_mode="redirect", allowed_hosts="relay.example.com"))
    with guarded.client(base_url="http://evil.example") as client:
        response = client.get("/mcp", headers=bearer(KEY_A), follow_redirects=False)
    assert response.headers["location"] == "https://relay.example.com/mcp"


def test_health_checks_pass_over_plain_http_from_anywhere() -> None:
    guarded = guarded_app(make_settings(https_mode="reject", ip_allowlist="203.0.113.0/24"))
    with guarded.client(ip="10.99.0.1") as probe:
        assert probe.get("/healthz").status_code == 200


# ---------------------------------------------------------------- body size


def test_a_declared_oversized_body_is_refused_with_413() -> None:
    guarded = guarded_app(make_settings(max_body_bytes=1024))
    with guarded.client() as client:
        response = client.post("/mcp", headers=bearer(KEY_A), content=b"x" * 1025)
        fits = client.post("/mcp", headers=bearer(KEY_A), content=b"x" * 1024)
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}
    assert fits.status_code == 200
    assert fits.json()["body_bytes"] == 1024


def test_a_streamed_body_without_length_is_cut_off_at_the_limit() -> None:
    guarded = guarded_app(make_settings(max_body_bytes=1024))

    def chunks() -> object:
        for _ in range(10):
            yield b"y" * 300

    with guarded.client() as client:
        response = client.post("/open", content=chunks())  # type: ignore[arg-type]
    assert response.status_code == 413


def test_the_body_limit_applies_before_authentication() -> None:
    guarded = guarded_app(make_settings(max_body_bytes=1024))
    with guarded.client() as client:
        response = client.post("/mcp", content=b"z" * 5000)
    assert response.status_code == 413


# ---------------------------------------------------------------- CORS and Origin

ALLOWED = "https://console.example.com"


def test_a_cors_preflight_from_a_listed_origin_is_answered() -> None:
    guarded = guarded_app(make_settings(allowed_origins=ALLOWED))
    with guarded.client() as client:
        response = client.options(
            "/mcp",
            headers={
                "origin": ALLOWED,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, mcp-session-id",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "mcp-session-id" in allowed_headers
    assert "POST" in response.headers["access-control-allow-methods"]


def test_a_cors_preflight_from_another_origin_is_refused() -> None:
    guarded = guarded_app(make_settings(allowed_origins=ALLOWED))
    with guarded.client() as client:
        response = client.options(
            "/mcp",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_a_request_from_a_disallowed_origin_is_refused_even_with_a_key() -> None:
    guarded = guarded_app(make_settings(allowed_origins=ALLOWED))
    with guarded.client() as client:
        refused = client.post("/mcp", headers={**bearer(KEY_A), "origin": "https://evil.example"})
        null = client.post("/mcp", headers={**bearer(KEY_A), "origin": "null"})
        listed = client.post("/mcp", headers={**bearer(KEY_A), "origin": ALLOWED})
    assert refused.status_code == 403
    assert refused.json() == {"error": "origin not allowed"}
    assert null.status_code == 403
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == ALLOWED
    assert guarded.audit.events[0].action == "origin_refused"


def test_requests_without_origin_and_same_origin_requests_pass() -> None:
    guarded = guarded_app(make_settings())
    with guarded.client(base_url="http://relay.example.com") as client:
        server_to_server = client.get("/mcp", headers=bearer(KEY_A))
        same = client.get("/mcp", headers={**bearer(KEY_A), "origin": "http://relay.example.com"})
        other_port = client.get(
            "/mcp", headers={**bearer(KEY_A), "origin": "http://relay.example.com:8080"}
        )
    assert server_to_server.status_code == 200
    assert same.status_code == 200
    assert other_port.status_code == 403


def test_an_origin_pattern_allows_any_port_of_that_host() -> None:
    guarded = guarded_app(make_settings(allowed_origins="http://localhost:*"))
    with guarded.client() as client:
        preflight = client.options(
            "/mcp",
            headers={"origin": "http://localhost:5173", "access-control-request-method": "POST"},
        )
        lookalike = client.get(
            "/mcp", headers={**bearer(KEY_A), "origin": "http://localhost.evil.example"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert lookalike.status_code == 403


# ---------------------------------------------------------------- DNS rebinding (MCP SDK)


def mcp_post(host: str | None = None, origin: str | None = None) -> dict[str, str]:
    headers = {
        **bearer(KEY_A),
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2025-06-18",
    }
    if host:
        headers["host"] = host
    if origin:
        headers["origin"] = origin
    return headers


LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()


def test_dns_rebinding_a_foreign_host_name_to_a_loopback_relay_is_refused() -> None:
    with relay_app(make_settings()) as relay:
        rebound = relay.client.post("/mcp", content=LIST, headers=mcp_post(host="evil.example"))
        loopback = relay.client.post("/mcp", content=LIST, headers=mcp_post())
    assert rebound.status_code == 421
    assert loopback.status_code == 200


def test_configured_public_host_names_are_accepted_by_the_mcp_endpoint() -> None:
    settings = make_settings(host="0.0.0.0", allowed_hosts="relay.example.com")
    with relay_app(settings) as relay:
        named = relay.client.post("/mcp", content=LIST, headers=mcp_post("relay.example.com"))
        other = relay.client.post("/mcp", content=LIST, headers=mcp_post("evil.example"))
    assert named.status_code == 200
    assert other.status_code == 421


def test_only_listed_origins_reach_the_mcp_endpoint_even_on_loopback() -> None:
    with relay_app(make_settings(allowed_origins=ALLOWED)) as relay:
        listed = relay.client.post("/mcp", content=LIST, headers=mcp_post(origin=ALLOWED))
        local_page = relay.client.post(
            "/mcp", content=LIST, headers=mcp_post(origin="http://127.0.0.1:3000")
        )
    assert listed.status_code == 200
    assert local_page.status_code == 403
