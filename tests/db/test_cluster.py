"""The local Postgres helper (`hitl_devstack.cluster`): create, start, reuse, stop, and clear
errors for a taken port or missing binaries. Uses its own data directory under tmp_path."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from hitl_devstack import cluster as cluster_module
from hitl_devstack.cluster import Cluster, ClusterError, free_port


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "pg", port=None)
    try:
        yield made
    finally:
        made.destroy()


def postmaster_pid(c: Cluster) -> int:
    return int((c.datadir / "postmaster.pid").read_text().splitlines()[0])


async def test_the_cluster_starts_is_reused_and_stops_keeping_its_data(scratch: Cluster) -> None:
    url = scratch.start()
    pid = postmaster_pid(scratch)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create table kept (v text); insert into kept values ('still here')")
        settings = dict(
            await conn.fetch(
                "select name, setting from pg_settings where name in"
                " ('shared_preload_libraries', 'cron.database_name', 'wal_level',"
                " 'listen_addresses')"
            )
        )
    finally:
        await conn.close()
    assert "pg_cron" in settings["shared_preload_libraries"]
    assert settings["cron.database_name"] == "postgres"
    assert settings["wal_level"] == "logical"
    assert settings["listen_addresses"] == "127.0.0.1"
    assert scratch.status().running

    again = Cluster(scratch.datadir, port=None)
    assert again.start() == url
    assert postmaster_pid(again) == pid

    scratch.stop()
    assert not scratch.status().running
    assert str(scratch.status()).startswith("stopped")
    scratch.stop()  # stopping a stopped cluster is fine

    assert scratch.start() == url  # the same port again
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("select v from kept") == "still here"
    finally:
        await conn.close()


def test_a_taken_port_is_a_clear_error(scratch: Cluster) -> None:
    scratch.start()
    scratch.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]

        with pytest.raises(ClusterError, match=f"port {taken} on 127.0.0.1 is taken"):
            Cluster(scratch.datadir, port=taken).start()
    assert not scratch.status().running


def test_missing_binaries_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "PG_BIN", tmp_path / "no-postgres-here")

    with pytest.raises(ClusterError, match=r"binaries not found .* scripts/setup"):
        Cluster(tmp_path / "pg", port=free_port()).start()
    assert not (tmp_path / "pg").exists()
