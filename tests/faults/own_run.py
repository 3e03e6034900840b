"""A test run in a pytest process of its own (conftest.py): the process and its output."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from typing import IO

from hitl_devstack.cluster import Cluster

STOP_WAIT_S = 60


@dataclass
class OwnRun:
    """The pytest process running the cron test, and its output so far (an unlinked temporary
    file: gone with this process)."""

    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    cluster: Cluster

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
