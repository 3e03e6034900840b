"""The pg_cron expiry test waits for pg_cron 1.4's next minute boundary (up to 60 s, 30 s on
average) and does nothing meanwhile: when the suite runs more than that test, it runs in a
pytest process of its own, started as soon as collection is over, so that wait passes while
the other tests run. The test's item in this run then waits for that process and passes only
if the test passed there (test_cron_expiry.py, `cron_elsewhere`).

Both runs share the session's cluster (pg_cron lives in its `postgres` database): this run
starts it before starting the other, so the two never initialise or start it at once. At the
end of this run the other is stopped if it still runs (SIGTERM: it unwinds as on Ctrl-C)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from own_run import OwnRun

from hitl_devstack.cluster import Cluster
from hitl_devstack.pgtap import stop_unless_in_use

ROOT = Path(__file__).resolve().parents[2]
CRON_TEST = "test_cron_expiry.py::test_an_overdue_session_expired_by_the_job_ends_the_waiting_call"
CRON_ITEM = f"{CRON_TEST}[cron]"
IN_OWN_RUN = "HITL_TEST_CRON_OWN_RUN"  # set in the run that executes the test itself


OWN_RUN = pytest.StashKey[OwnRun]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get(IN_OWN_RUN) or session.config.option.collectonly:
        return
    cron = [i for i in session.items if i.nodeid.endswith(CRON_ITEM)]
    if not cron or len(session.items) == 1:
        return  # alone it gains nothing: it runs here
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    cluster = Cluster(home / "test-pg", port=None)
    cluster.start()  # as the `pg_cluster` fixture would (idempotent), before the other run
    out = tempfile.TemporaryFile()  # noqa: SIM115 (read when the run ends; unlinked, gone with this process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-rP", cron[0].nodeid],
        cwd=session.config.rootpath,
        env={**os.environ, IN_OWN_RUN: "1"},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    session.config.stash[OWN_RUN] = OwnRun(proc, out, cluster)


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(OWN_RUN, None)
    if run is None:
        return
    run.stop()
    # This run started the cluster: stopped as `pg_cluster` would, whichever ends last.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(stop_unless_in_use, run.cluster).result()


@pytest.fixture
def cron_elsewhere(request: pytest.FixtureRequest) -> OwnRun | None:
    """The process running this item's test, if it runs in a process of its own."""
    run = request.config.stash.get(OWN_RUN, None)
    return run if run is not None and request.node.nodeid.endswith(CRON_ITEM) else None
