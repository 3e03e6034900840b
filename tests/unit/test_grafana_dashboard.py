"""deploy/grafana/hitl-relay.json queries only series the relay exports (metrics.py's contract
with the dashboard), and draws the plan's four figures against their targets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hitl_relay import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "hitl-relay.json"
# A metric name, optionally followed by its label matchers: `hitl_x{a="b", c=~"d"}`.
SELECTOR = re.compile(r"\b(hitl_[a-z0-9_]+)\b(\{[^}]*\})?")
EQUALS = re.compile(r'([a-z_]+)\s*=\s*"([^"]*)"')


def panels() -> list[dict[str, Any]]:
    data = json.loads(DASHBOARD.read_text())
    out: list[dict[str, Any]] = []
    for panel in data["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside a collapsed row
    return out


def expressions() -> Iterator[tuple[str, str]]:
    for panel in panels():
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def exported() -> dict[str, list[dict[str, str]]]:
    """Every sample name in the registry (with `_total`, `_bucket`, ...) → its label sets."""
    samples: dict[str, list[dict[str, str]]] = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def test_every_series_the_dashboard_queries_exists_in_the_registry() -> None:
    samples = exported()
    queried = 0
    for title, expr in expressions():
        for name, matchers in SELECTOR.findall(expr):
            queried += 1
            assert name in samples, f"panel {title!r} queries {name}, which the relay never exports"
            for label, value in EQUALS.findall(matchers):
                assert any(labels.get(label) == value for labels in samples[name]), (
                    f"panel {title!r} selects {name}{{{label}={value!r}}}, which never exists"
                )
    assert queried >= 20, "the dashboard's queries were not found"


def test_the_four_figures_are_drawn_against_their_targets() -> None:
    exprs = [expr for _, expr in expressions()]
    for gauge, figure in (
        ("hitl_response_seconds_avg", "response_seconds_avg"),
        ("hitl_success_rate", "success_rate"),
        ("hitl_timeout_rate", "timeout_rate"),
        ("hitl_operator_utilisation", "operator_utilisation"),
    ):
        assert any(gauge in e for e in exprs), f"no panel shows {gauge}"
        assert any(f'hitl_target{{figure="{figure}"}}' in e for e in exprs), (
            f"no target line for {figure}"
        )
        assert figure in metrics.TARGETS


def test_the_stat_thresholds_turn_green_at_the_targets() -> None:
    by_expr = {
        target["expr"]: panel
        for panel in panels()
        if panel["type"] == "stat"
        for target in panel.get("targets", [])
    }
    for figure, value in metrics.TARGETS.items():
        panel = by_expr[f"max(hitl_{figure})"]
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        green = [s["value"] for s in steps if s["color"] == "green"]
        # Above-targets are green from the target up; below-targets are green from the bottom.
        assert green == ([value] if figure in ("success_rate", "operator_utilisation") else [None])
        assert value in [s["value"] for s in steps], f"{figure}: no step at its target"
