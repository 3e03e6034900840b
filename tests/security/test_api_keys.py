"""Bearer API keys: accepted forms, refusals that say nothing, rotation, revocation, compromised
keys and no keys at start, key generation."""

from __future__ import annotations

import hashlib
import re

import pytest
from security_support import KEY_A, KEY_B, bearer, guarded_app, make_settings, relay_app
from typer.testing import CliRunner

from hitl_relay.cli import app as cli
from hitl_relay.config import load_settings
from hitl_relay.errors import ConfigError
from hitl_relay.http_app import create_app
from hitl_relay.security import SecurityLayer, env_lines, generate_key
from hitl_relay.security.keys import COMPROMISED_SHA256, KeyRing

PUBLISHED_DIGEST = "0955bb026c7699bd76e7daecf0993d6401e6bbebf06c1b7b64b543ad26aa2c16"


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def test_a_listed_key_passes_and_is_known_by_its_fingerprint_only() -> None:
    guarded = guarded_app(make_settings())
    with guarded.client() as client:
        response = client.get("/mcp", headers=bearer(KEY_A))
    assert response.status_code == 200
    fingerprint = response.json()["key"]
    assert fingerprint == "key:" + hashlib.sha256(KEY_A.encode()).hexdigest()[:12]
    assert KEY_A not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("test-key-alpha-0123456789abcdeX"),
        bearer(KEY_A[:-1]),
        bearer(KEY_A + "0"),
        bearer(""),
        {"authorization": f"Basic {KEY_A}"},
        {"authorization": KEY_A},
        {"authorization": f"Bearer {sha(KEY_A)}"},
    ],
    ids=["missing", "wrong", "prefix", "longer", "empty", "basic", "no-scheme", "the-hash"],
)
def test_missing_or_wrong_keys_get_the_same_bare_401(headers: dict[str, str]) -> None:
    guarded = guarded_app(make_settings())
    with guarded.client() as client:
        response = client.post("/mcp", headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert guarded.audit.actions()[-1] == ("auth_failed", "refused")


def test_the_bearer_scheme_is_case_insensitive_and_spacing_is_ignored() -> None:
    guarded = guarded_app(make_settings())
    with guarded.client() as client:
        assert client.get("/mcp", headers={"authorization": f"bearer {KEY_A}"}).status_code == 200
        assert client.get("/mcp", headers={"authorization": f"Bearer  {KEY_A}"}).status_code == 200


def test_refusals_for_missing_and_wrong_keys_are_byte_identical() -> None:
    guarded = guarded_app(make_settings())
    with guarded.client() as client:
        missing = client.get("/mcp")
        wrong = client.get("/mcp", headers=bearer("nope-nope-nope-nope-nope"))
        short = client.get("/mcp", headers=bearer("x"))
    assert missing.content == wrong.content == short.content
    assert dict(missing.headers) == dict(wrong.headers) == dict(short.headers)


def test_keys_may_be_configured_as_sha256_hashes() -> None:
    guarded = guarded_app(make_settings(api_keys=f"{sha(KEY_A)}"))
    with guarded.client() as client:
        assert client.get("/mcp", headers=bearer(KEY_A)).status_code == 200
        assert client.get("/mcp", headers=bearer(KEY_B)).status_code == 401


def test_two_live_keys_rotate_without_downtime() -> None:
    old, new = KEY_A, KEY_B
    both = guarded_app(make_settings(api_keys=f"{old},{new}"))
    with both.client() as client:
        assert client.get("/mcp", headers=bearer(old)).status_code == 200
        assert client.get("/mcp", headers=bearer(new)).status_code == 200
        fingerprints = {client.get("/mcp", headers=bearer(k)).json()["key"] for k in (old, new)}
    assert len(fingerprints) == 2  # audited and rate limited separately
    after = guarded_app(make_settings(api_keys=new))
    with after.client() as client:
        assert client.get("/mcp", headers=bearer(old)).status_code == 401
        assert client.get("/mcp", headers=bearer(new)).status_code == 200


def test_a_revoked_key_is_refused_even_while_still_listed() -> None:
    guarded = guarded_app(make_settings(revoked_keys=sha(KEY_A)))
    with guarded.client() as client:
        assert client.get("/mcp", headers=bearer(KEY_A)).status_code == 401
        assert client.get("/mcp", headers=bearer(KEY_B)).status_code == 200


def test_the_published_plan_key_is_built_in_as_compromised() -> None:
    assert PUBLISHED_DIGEST in COMPROMISED_SHA256
    ring = KeyRing([f"sha256:{PUBLISHED_DIGEST}", KEY_A])
    assert ring.size == 1
    assert "compromised" in ring.problems[0]


def test_the_relay_refuses_to_start_with_a_compromised_key() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(backend="memory", api_keys=f"{KEY_A},sha256:{PUBLISHED_DIGEST}")
    message = str(refused.value)
    assert "HITL_API_KEYS: entry #2" in message
    assert "compromised" in message
    assert "hitl-relay keygen" in message


def test_keys_marked_compromised_by_configuration_stop_the_start_too() -> None:
    with pytest.raises(ConfigError, match="compromised"):
        load_settings(backend="memory", api_keys=KEY_A, compromised_keys=sha(KEY_A))


def test_serve_refuses_a_compromised_key_with_a_clear_message() -> None:
    result = CliRunner().invoke(
        cli,
        ["serve"],
        env={"HITL_BACKEND": "memory", "HITL_API_KEYS": f"sha256:{PUBLISHED_DIGEST}"},
    )
    assert result.exit_code == 2
    assert "compromised key" in result.output


def test_the_http_app_refuses_to_start_without_any_key() -> None:
    with pytest.raises(ConfigError, match="HITL_API_KEYS: is required"):
        create_app(make_settings(api_keys=""))


def test_every_listed_key_revoked_counts_as_no_key() -> None:
    with pytest.raises(ConfigError, match="every listed key is revoked"):
        SecurityLayer(make_settings(api_keys=KEY_A, revoked_keys=sha(KEY_A)))


def test_short_plain_keys_are_refused_by_the_server() -> None:
    with pytest.raises(ConfigError, match="too short"):
        SecurityLayer(make_settings(api_keys="short-key"))


def test_insecure_local_serves_without_keys_on_loopback_only() -> None:
    guarded = guarded_app(make_settings(api_keys="", insecure_local=True))
    with guarded.client() as client:
        assert client.get("/mcp").json()["key"] == "insecure-local"
    with pytest.raises(ConfigError, match="HITL_INSECURE_LOCAL"):
        load_settings(backend="memory", insecure_local=True, host="0.0.0.0")


def test_insecure_local_with_keys_still_requires_them() -> None:
    guarded = guarded_app(make_settings(api_keys=KEY_A, insecure_local=True))
    with guarded.client() as client:
        assert client.get("/mcp").status_code == 401
        assert client.get("/mcp", headers=bearer(KEY_A)).status_code == 200


def test_the_real_mcp_endpoint_answers_401_json_and_counts_the_failure() -> None:
    from hitl_relay import metrics

    before = metrics.auth_failures._value.get()
    with relay_app(make_settings()) as relay:
        response = relay.client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={**bearer("wrong-key-wrong-key"), "accept": "application/json"},
        )
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert metrics.auth_failures._value.get() == before + 1
    assert relay.audit.events[-1].action == "auth_failed"
    assert relay.audit.events[-1].detail["reason"] == "wrong"


def test_generated_keys_are_long_random_and_come_with_their_env_lines() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert re.fullmatch(r"hitl_[A-Za-z0-9_-]{43}", key)
    key = next(iter(keys))
    plain, hashed = env_lines(key)
    assert plain == f"HITL_API_KEYS={key}"
    assert hashed == f"HITL_API_KEYS={sha(key)}"
    assert KeyRing([hashed.partition("=")[2]]).identify(key) is not None


def test_keygen_prints_a_new_key_and_its_env_line_and_on_request_the_hashed_one() -> None:
    result = CliRunner().invoke(cli, ["keygen", "--hash"])
    assert result.exit_code == 0
    key, plain, hashed = result.output.splitlines()
    assert re.fullmatch(r"hitl_[A-Za-z0-9_-]{43}", key)
    assert plain == f"HITL_API_KEYS={key}"
    assert hashed == f"HITL_API_KEYS={sha(key)}"
