"""`hitl-relay stats`: the four figures, each against its target in the figure's own unit, and
plain errors (never a stack trace) when the platform cannot be used."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console

from hitl_relay.stats import StatsError, fetch_metrics, render

# The shape hitl_success_metrics returns (supabase/migrations/20261125000800_...).
FIGURES: dict[str, Any] = {
    "cases": 5,
    "finished": 4,
    "answered": 1,
    "cannot_answer": 1,
    "timed_out": 1,
    "other": 1,
    "avg_response_s": {
        "value": 12.5,
        "p50": 12.5,
        "p90": 20.0,
        "p99": 22.0,
        "target": "< 30",
        "met": True,
    },
    "success_rate": {"value": 0.25, "target": "> 0.95", "met": False},
    "cannot_answer_rate": {"value": 0.25},
    "timeout_rate": {"value": 0.25, "target": "< 0.05", "met": False},
    "operator_utilisation": {
        "value": None,
        "handled_s": 0,
        "available_s": 0,
        "target": "> 0.70",
        "met": False,
    },
}


def rendered(figures: dict[str, Any]) -> list[str]:
    console = Console(record=True, width=120)
    render(figures, console)
    return console.export_text().splitlines()


def row(lines: list[str], label: str) -> list[str]:
    line = next(line for line in lines if label in line)
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def test_each_figure_is_shown_against_its_target_in_its_unit() -> None:
    lines = rendered(FIGURES)
    assert row(lines, "average response") == ["average response", "12.5 s", "< 30 s", "met"]
    assert row(lines, "success rate") == ["success rate", "25.0 %", "> 95 %", "missed"]
    assert row(lines, "timeout rate") == ["timeout rate", "25.0 %", "< 5 %", "missed"]
    # No availability recorded: no figure, and neither met nor missed.
    assert row(lines, "operator utilisation") == ["operator utilisation", "n/a", "> 70 %", "-"]
    assert any("0.0 s handling cases of 0.0 s available" in line for line in lines)
    # "Cannot answer" is shown apart from success, and the outcomes add up to finished.
    assert any(
        "finished 4: answered 1, cannot answer 1 (25.0 %), timed out 1, other 1" in line
        for line in lines
    )


async def test_an_unreachable_platform_is_a_plain_error() -> None:
    with pytest.raises(StatsError, match=r"cannot reach http://127\.0\.0\.1:9"):
        await fetch_metrics("http://127.0.0.1:9", "key", timedelta(hours=1))


async def test_a_url_that_is_no_url_is_a_plain_error() -> None:
    with pytest.raises(StatsError, match="cannot use 'not a url' with this key: Invalid URL"):
        await fetch_metrics("not a url", "key", timedelta(hours=1))
