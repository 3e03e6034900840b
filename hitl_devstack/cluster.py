"""A local Postgres 15 cluster with pg_cron under `.hitl/`, run by an unprivileged user.

Postgres refuses to run as root, so when we are root the data directory is owned by the
`postgres` system user (Debian's package creates it) and every server command runs through
`runuser`. As any other user the cluster simply belongs to that user.

The cluster is laid out like a hosted Supabase project (see README.md, "Hosted behaviour:
database"): its bootstrap superuser is `supabase_admin`, and `postgres` is an ordinary role
that `supabase/local/00_roles.sql` creates without SUPERUSER (supabase/postgres
migrations/db/migrations/10000000000000_demote-postgres.sql). `url()` is the superuser's URL
(what the devstack's own services and the tests' fixtures use); `postgres_url()` is the
migration role's, the one `supabase db push` and the SQL editor act as.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("HITL_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEFAULT_PORT = 54322
SUPERUSER = "supabase_admin"
MIGRATION_ROLE = "postgres"
OS_USER = "postgres"
# local-only, loopback-only; every login role of the local stack has it, as in Supabase's CLI
# stack (its `postgres`, `supabase_admin` and `authenticator` share the database password)
PASSWORD = "postgres"
LAYOUT = "hosted-1"  # bumped when the cluster's bootstrap changes, so an old cluster is refused


class ClusterError(RuntimeError):
    """The local cluster could not be created, started or stopped; the message says why."""


@dataclass(frozen=True)
class ClusterStatus:
    running: bool
    port: int | None
    datadir: Path

    def __str__(self) -> str:
        if self.running:
            return f"running on 127.0.0.1:{self.port} ({self.datadir})"
        return f"stopped ({self.datadir})"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One Postgres data directory, started and stopped with pg_ctl.

    `port=None` means: reuse the port of a running cluster, else the one it last ran on,
    else a free port. A fixed port that another process holds is a clear error.
    """

    def __init__(self, datadir: Path | str = ".hitl/pg", port: int | None = DEFAULT_PORT) -> None:
        self.datadir = Path(datadir).resolve()
        self._requested_port = port
        # the OS user that owns the data directory (Debian's `postgres` when we are root)
        self._owner = OS_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    # ---- facts -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        running = self._running_port()
        if running is not None:
            return running
        if self._requested_port is not None:
            return self._requested_port
        recorded = self._recorded_port()
        return recorded if recorded is not None else free_port()

    def url(self, dbname: str = "postgres") -> str:
        """The superuser's (`supabase_admin`) URL: the devstack's services, fixtures, admin."""
        return self.role_url(SUPERUSER, dbname)

    def postgres_url(self, dbname: str = "postgres") -> str:
        """The non-superuser `postgres` role's URL: what migrations and pgTAP run as."""
        return self.role_url(MIGRATION_ROLE, dbname)

    def role_url(self, role: str, dbname: str = "postgres") -> str:
        return f"postgresql://{role}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def status(self) -> ClusterStatus:
        port = self._running_port()
        return ClusterStatus(running=port is not None, port=port, datadir=self.datadir)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, timeout_s: int = 30) -> str:
        """Create the cluster if needed, start it if stopped; return its URL. Idempotent."""
        self._check_binaries()
        if not (self.datadir / "PG_VERSION").exists():
            self._init()
        self._check_layout()
        log = self.datadir.parent / f"{self.datadir.name}.log"
        if log.exists():
            log.chmod(0o600)  # left wider by an older version, whether running or not
        running = self._running_port()
        if running is not None:
            return self.url()
        port = self.port
        if not _port_is_free(port):
            raise ClusterError(
                f"port {port} on 127.0.0.1 is taken by another process; stop it, or set "
                f"HITL_PG_PORT to a free port"
            )
        self._write_port(port)
        log = self.datadir.parent / f"{self.datadir.name}.log"
        self._prepare_log(log)
        proc = self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(log),
                "-w",
                "-t",
                str(timeout_s),
                "-o",
                f"-p {port} -k {self._socket_dir()}",
                "start",
            ],
            check=False,
        )
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            said = (proc.stderr or proc.stdout).strip()
            raise ClusterError(
                f"postgres did not start (pg_ctl exit {proc.returncode}: {said}):\n{tail}"
            )
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        if self._running_port() is None:
            return
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    # ---- internals ---------------------------------------------------------------------
    def _check_binaries(self) -> None:
        missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / b).exists()]
        if missing:
            raise ClusterError(
                f"Postgres 15 binaries not found in {PG_BIN} ({', '.join(missing)} missing). "
                "Run scripts/setup (it installs postgresql-15, postgresql-15-cron and "
                "postgresql-15-pgtap with apt), or set HITL_PG_BIN."
            )
        ext = Path("/usr/share/postgresql/15/extension/pg_cron.control")
        if Path("/usr/lib/postgresql/15/bin") == PG_BIN and not ext.exists():
            raise ClusterError(
                "pg_cron is not installed: run scripts/setup (apt-get install postgresql-15-cron)."
            )

    def _layout_file(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.layout"

    def _check_layout(self) -> None:
        try:
            found = self._layout_file().read_text().strip()
        except FileNotFoundError:
            found = "none (its superuser is `postgres`)"
        if found != LAYOUT:
            raise ClusterError(
                f"the cluster in {self.datadir} was made by an older hitl-relay (layout {found}, "
                f"expected {LAYOUT}: superuser `supabase_admin`, `postgres` not a superuser). "
                f"It holds only local development data: stop it and remove {self.datadir} "
                "(and its .port/.layout files), then start again."
            )

    def _socket_dir(self) -> Path:
        return self.datadir.parent / "run"

    def _init(self) -> None:
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self._make_traversable(self.datadir.parent)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._socket_dir().mkdir(parents=True, exist_ok=True)
        pwfile = self.datadir.parent / ".pgpass-init"
        pwfile.write_text(PASSWORD + "\n")
        for path in (self.datadir, self._socket_dir(), pwfile):
            self._chown(path)
        try:
            self._run(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self._layout_file().write_text(LAYOUT + "\n")
        conf = self.datadir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# hitl-relay local cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                "shared_preload_libraries = 'pg_cron,pg_stat_statements'\n"
                "cron.database_name = 'postgres'\n"
                "cron.use_background_workers = on\n"
                "max_worker_processes = 32\n"
                "wal_level = logical\n"
                # the benchmark measures delivery from the answer's commit
                "track_commit_timestamp = on\n"
                "max_connections = 300\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "log_min_messages = warning\n"
                "timezone = 'UTC'\n"
            )

    def _make_traversable(self, path: Path) -> None:
        """The postgres user must be able to reach the data directory through its parents."""
        if os.geteuid() != 0:
            return
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, user=self._owner, group=None)
            with contextlib.suppress(KeyError):
                shutil.chown(path, group=pwd.getpwnam(self._owner).pw_gid)

    def _prepare_log(self, log: Path) -> None:
        # The server log holds statements and their parameters (answers, caller details):
        # readable by the cluster's owner only, also when an older run left it wider.
        log.touch(mode=0o600, exist_ok=True)
        log.chmod(0o600)
        self._chown(log)

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self._owner, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout}")
        return proc

    def _running_port(self) -> int | None:
        pid_file = self.datadir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4:
            return None
        try:
            os.kill(int(lines[0]), 0)
        except (ProcessLookupError, ValueError):
            return None
        except PermissionError:
            pass  # alive, owned by the postgres user
        return int(lines[3])

    def _port_file(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.port"

    def _recorded_port(self) -> int | None:
        try:
            return int(self._port_file().read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _write_port(self, port: int) -> None:
        self._port_file().write_text(f"{port}\n")


def default_cluster() -> Cluster:
    """The project's cluster: `.hitl/pg` on HITL_PG_PORT (default 54322, Supabase's DB port)."""
    root = Path(os.environ.get("HITL_HOME", ".hitl"))
    return Cluster(root / "pg", port=int(os.environ.get("HITL_PG_PORT", DEFAULT_PORT)))


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent() -> None:
    """Have the kernel send this process SIGTERM when the process that started it dies (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing). `scripts/test` killed with SIGTERM is a shell that dies
    at once and leaves its running step behind; with this, that step (pytest, `scripts/pgtap`)
    gets SIGTERM too and ends as on Ctrl-C, stopping the cluster it started. Call it after
    SIGTERM has a handler that unwinds."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return  # not Linux: no such call
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)
