"""The deployment files, checked offline: the Kubernetes manifests against the API schema
(kubernetes-validate) and against each other, checkov on the Containerfile and the manifests
(every skipped check documented), the systemd unit with `systemd-analyze verify`, and the drain
timeout the same everywhere (the relay's setting, the grace period, TimeoutStopSec)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hitl_relay.config import Settings
from hitl_relay.security.settings import SecuritySettings

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "hitl-relay.service"
CHECKOV = ROOT / ".hitl" / "tools" / "checkov" / "bin" / "checkov"
# The checks skipped on purpose; each has its reason next to the skip and in docs/deployment.md.
SKIPPED = {"CKV_DOCKER_7", "CKV_K8S_43", "CKV_K8S_35"}


def manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(spec) == 1
    result: dict[str, Any] = spec[0]
    return result


def test_every_manifest_validates_against_the_kubernetes_api_schema() -> None:
    paths = sorted(KUBE.glob("*.yaml"))
    kinds = set()
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            # strict: an unknown or misspelt field is an error, not ignored
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            kinds.add(doc["kind"])
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "Ingress", "Secret"}


def test_a_misspelt_field_is_refused_by_the_validation() -> None:
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 20
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_probes_drain_and_identity_fit_the_relay() -> None:
    docs = manifests()
    deployment, relay = docs["Deployment"], container(docs)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert relay["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert relay["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in relay["env"]}
    assert env["HITL_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"secretRef": {"name": docs["Secret"]["metadata"]["name"]}} in relay["envFrom"]
    # every name the ConfigMap and the Secret set is a setting the relay reads
    fields = {**Settings.model_fields, **SecuritySettings.model_fields}  # the settings' parts
    known = {f.upper() for f in fields} | {
        (info.validation_alias or "").upper()
        for info in fields.values()
        if isinstance(info.validation_alias, str)
    }
    prefix = Settings.model_config.get("env_prefix", "").upper()
    for name in [*docs["ConfigMap"]["data"], *docs["Secret"]["stringData"], *env]:
        assert name in known or name.removeprefix(prefix).lower() in fields, name

    # preStop wait + the drain bound + a margin for writing results, all inside the grace period
    drain_s = float(docs["ConfigMap"]["data"]["HITL_DRAIN_TIMEOUT_SECONDS"])
    # one bound everywhere: the image and the systemd unit run with the relay's default
    assert drain_s == Settings.model_fields["drain_timeout_seconds"].default
    assert "HITL_DRAIN_TIMEOUT_SECONDS" not in (ROOT / "Containerfile").read_text()
    pre_stop = relay["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain_s + 5

    # the restricted profile, and the image's own user
    security = relay["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    user = re.search(r"^USER (\d+)", (ROOT / "Containerfile").read_text(), re.M)
    assert user is not None
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))

    # the resources are the ones docs/deployment.md derives from its sizing
    sizing = (ROOT / "docs" / "deployment.md").read_text()
    wanted = relay["resources"]
    stated = (
        f"requests `cpu: {wanted['requests']['cpu']}, memory: {wanted['requests']['memory']}`",
        f"limits `cpu: {wanted['limits']['cpu']}`",
        f"`memory: {wanted['limits']['memory']}`",
    )
    for text in stated:
        assert text in sizing, text

    # the disruption budget and the Service select the Deployment's pods
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()


def test_the_relay_accepts_the_settings_the_manifests_give_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = manifests()
    env = {**docs["ConfigMap"]["data"], **docs["Secret"]["stringData"]}
    for item in container(docs)["env"]:
        env[item["name"]] = item.get("value", "relay-7d9f8-abcde")  # the pod name, as resolved
    for name in [n for n in os.environ if n.startswith(("HITL_", "SUPABASE_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.instance_id == "relay-7d9f8-abcde"
    assert settings.drain_timeout_seconds == float(env["HITL_DRAIN_TIMEOUT_SECONDS"])


def test_the_ingress_example_streams_sse_longer_than_the_longest_wait() -> None:
    notes = manifests()["Ingress"]["metadata"]["annotations"]
    longest = Settings.model_fields["max_timeout_seconds"].default
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > longest
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > longest


@pytest.mark.timeout(300)
def test_checkov_finds_nothing_in_the_containerfile_and_the_manifests(tmp_path: Path) -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run scripts/setup (it installs checkov there)")
    # checkov knows a Dockerfile by its name only
    shutil.copy(ROOT / "Containerfile", tmp_path / "Dockerfile")
    argv = [str(CHECKOV), "--skip-download", "-o", "json", "--framework", "dockerfile"]
    done = subprocess.run(
        [*argv, "kubernetes", "-d", str(tmp_path), "-d", str(KUBE)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    reports = []
    decoder, text, at = json.JSONDecoder(), done.stdout.strip(), 0
    while at < len(text):  # one JSON document per directory or a list of them, by version
        doc, at = decoder.raw_decode(text, at)
        reports += doc if isinstance(doc, list) else [doc]
        at = len(text) - len(text[at:].lstrip())
    by_type = {r["check_type"]: r for r in reports}
    assert set(by_type) == {"dockerfile", "kubernetes"}, done.stderr[-2000:]
    failed = [
        (c["check_id"], c["file_path"], c["check_name"])
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    skipped = {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]}
    passed = sum(r["summary"]["passed"] for r in reports)
    print(f"\ncheckov: {passed} passed, {len(failed)} failed, skipped {sorted(skipped)}")
    assert failed == []
    assert skipped == SKIPPED
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert all(check in doc for check in SKIPPED)


def test_the_systemd_unit_verifies_and_drains_like_the_relay(tmp_path: Path) -> None:
    unit = UNIT.read_text()
    values = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    drain_s = Settings.model_fields["drain_timeout_seconds"].default
    assert values["KillSignal"] == "SIGTERM"
    assert int(values["TimeoutStopSec"]) >= drain_s + 5
    assert values["Restart"] == "on-failure"
    assert values["EnvironmentFile"].startswith("/etc/")
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine (no systemd)")
    # verify checks that ExecStart exists: point it at this checkout's hitl-relay
    relay = ROOT / ".venv" / "bin" / "hitl-relay"
    copy = tmp_path / UNIT.name
    copy.write_text(unit.replace("/opt/hitl-relay/bin/hitl-relay", str(relay)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # an unknown key or section is only a warning (exit 0): any output is a failure
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert level is not None, security.stdout[-500:] + security.stderr
    print(f"\nsystemd-analyze security: exposure {level.group(1)} (0 safest, 10 unsafe)")
