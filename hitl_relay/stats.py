"""`hitl-relay stats`: the plan's success metrics from the platform, each against its target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from postgrest.exceptions import APIError
from rich.console import Console
from rich.table import Table
from supabase import AsyncSupabaseException, acreate_client


class StatsError(Exception):
    """The metrics could not be read; the message says why in plain words."""


async def fetch_metrics(url: str, service_key: str, window: timedelta) -> dict[str, Any]:
    """`hitl_success_metrics` over the last `window`, through PostgREST as the service role."""
    now = datetime.now(UTC)
    try:
        client = await acreate_client(url, service_key)
        response = await client.rpc(
            "hitl_success_metrics",
            {"p_from": (now - window).isoformat(), "p_to": now.isoformat()},
        ).execute()
    except APIError as e:
        raise StatsError(f"the platform refused the metrics query: {e.message}") from e
    except AsyncSupabaseException as e:
        raise StatsError(f"cannot use {url!r} with this key: {e.message}") from e
    except (OSError, httpx.HTTPError) as e:
        raise StatsError(f"cannot reach {url}: {e}") from e
    data = response.data
    if not isinstance(data, dict):
        raise StatsError(f"unexpected answer from hitl_success_metrics: {data!r}")
    return data


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{float(value) * 100:.1f} %"
    return f"{float(value):.1f} s"


def _target(target: Any, unit: str) -> str:
    """The SQL's target ("> 0.95", "< 30") in the row's unit ("> 95 %", "< 30 s")."""
    op, _, number = str(target or "").partition(" ")
    try:
        value = float(number)
    except ValueError:
        return str(target or "")
    return f"{op} {value * 100:g} %" if unit == "%" else f"{op} {value:g} s"


def render(metrics: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"hitl-relay: {metrics.get('cases', 0)} case(s) in the window")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    rows = [
        ("average response", "avg_response_s", "s"),
        ("success rate", "success_rate", "%"),
        ("timeout rate", "timeout_rate", "%"),
        ("operator utilisation", "operator_utilisation", "%"),
    ]
    for label, key, unit in rows:
        fig = metrics.get(key) or {}
        value = fig.get("value")
        ok = "[green]met[/]" if fig.get("met") else ("[red]missed[/]" if value is not None else "-")
        table.add_row(label, _fmt(value, unit), _target(fig.get("target"), unit), ok)
    console.print(table)
    use = metrics.get("operator_utilisation") or {}
    if use.get("available_s") is not None:
        console.print(
            f"utilisation: {_fmt(use.get('handled_s'), 's')} handling cases of "
            f"{_fmt(use.get('available_s'), 's')} available (console heartbeats)"
        )
    resp = metrics.get("avg_response_s") or {}
    if resp.get("p50") is not None:
        console.print(
            f"response time p50 {_fmt(resp.get('p50'), 's')}, p90 {_fmt(resp.get('p90'), 's')}, "
            f"p99 {_fmt(resp.get('p99'), 's')} (real answers)"
        )
    if metrics.get("finished") is not None:
        # The outcomes add up to finished; "cannot answer" is not counted as success.
        console.print(
            f"finished {metrics.get('finished')}: answered {metrics.get('answered')}, "
            f"cannot answer {metrics.get('cannot_answer')} "
            f"({_fmt((metrics.get('cannot_answer_rate') or {}).get('value'), '%')}), "
            f"timed out {metrics.get('timed_out')}, other {metrics.get('other')}"
        )
