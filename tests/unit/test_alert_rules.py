"""The Prometheus alert rules (deploy/prometheus/alerts.yml): valid for promtool, each alert
with a unit test that fires and one that stays quiet (deploy/prometheus/alerts.test.yml), every
metric they read exported by the relay, every runbook link a section of the troubleshooting
guide."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hitl_relay import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
GUIDE = ROOT / "docs" / "troubleshooting.md"
EXPECTED_ALERTS = {
    "HitlBreakerOpen",
    "HitlFallbackRateHigh",
    "HitlTimeoutRateHigh",
    "HitlNoOperatorOnDuty",
    "HitlExpiryJobStale",
    "HitlEventLoopPaused",
    "HitlNotReady",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run scripts/setup (apt package prometheus)")
    return subprocess.run(
        [binary, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )


def alerts() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M)


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout.strip())


def test_promtool_runs_the_rules_unit_tests() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_cover_what_must_page() -> None:
    assert set(alerts()) == EXPECTED_ALERTS


def test_every_alert_has_a_test_that_fires_and_one_that_stays_quiet() -> None:
    # Each `alertname:` of the test file, and whether its `exp_alerts` is empty (quiet).
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text(), re.M)
    fires = {name for name, quiet in cases if not quiet}
    quiet = {name for name, quiet in cases if quiet}
    assert fires == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_every_metric_the_rules_read_is_exported_by_the_relay() -> None:
    exported = set()
    for family in metrics.REGISTRY.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    rules = "\n".join(line.split("#")[0] for line in RULES.read_text().splitlines())
    used = set(re.findall(r"\b(hitl_[a-z_]+)\b", rules))
    missing = sorted(used - exported)
    assert missing == [], f"alerts.yml reads metrics the relay does not export: {missing}"


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_runbook_link_is_a_section_of_the_troubleshooting_guide() -> None:
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", GUIDE.read_text(), re.M)}
    links = re.findall(r"runbook_url: docs/troubleshooting\.md#([\w-]+)", RULES.read_text())
    assert len(links) == len(alerts())
    assert sorted(set(links) - headings) == []
