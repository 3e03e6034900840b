"""The adapter contract suite's fixture: the same tests run against every implementation of the
ports. Each harness yields `ContractPorts`: the three ports, the operators' side, and the
connection faults the suite needs.

To add an adapter, add its name to `HARNESSES` and a branch in `ports` (the Supabase adapter runs
against the `devstack` fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from contract_support import ContractPorts, memory_ports

HARNESSES = ["memory", "supabase"]


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest) -> tuple[str, object]:
    """The harness name and what it runs on (a sync fixture, so it may request the async
    `devstack` fixture only for the harness that needs one)."""
    if request.param == "supabase":
        # the forged-broadcast contract test needs an operator allowed to write on `case:`
        return request.param, request.getfixturevalue("app_case_topic_writes")
    return request.param, None


@pytest.fixture
async def ports(harness: tuple[str, object]) -> AsyncIterator[ContractPorts]:
    name, platform = harness
    if name == "memory":
        async for p in memory_ports():
            yield p
    elif name == "supabase":
        from supabase_harness import supabase_ports

        async for p in supabase_ports(platform):  # type: ignore[arg-type]
            yield p
    else:  # pragma: no cover - a harness listed without a branch is a suite bug
        raise AssertionError(f"no harness branch for {name!r}")
