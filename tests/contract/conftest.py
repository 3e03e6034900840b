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

HARNESSES = ["memory"]


@pytest.fixture(params=HARNESSES)
async def ports(request: pytest.FixtureRequest) -> AsyncIterator[ContractPorts]:
    if request.param == "memory":
        async for p in memory_ports():
            yield p
    else:  # pragma: no cover - a harness listed without a branch is a suite bug
        raise AssertionError(f"no harness branch for {request.param!r}")
