"""The relay's container image, built from `Containerfile` with `scripts/image` and run with Podman
against the devstack: an agent asks and an operator answers through it, `podman stop` (SIGTERM)
drains the waiting calls as the process does outside a container, it runs as a non-root user,
and nothing of the build (compiler, caches, uv) is left in it.

Slow (a first build takes minutes; later ones reuse the cached layers under .hitl/containers):
run by `scripts/test --all`, which installs Podman with `scripts/setup --containers`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import API_KEY, DevstackProcess, Stack
from waiting import wait_until

from hitl_devstack.cluster import free_port
from hitl_devstack.dev import wait_http_ok
from hitl_relay.mcp_client import ask_human

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
PODMAN = str(ROOT / "scripts" / "podman")
TAG = "localhost/hitl-relay:test"
CALLS = 10


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


async def apodman(*args: str, check: bool = True) -> tuple[int, str, str]:
    """podman without blocking the event loop the devstack's clients run on."""
    proc = await asyncio.create_subprocess_exec(
        PODMAN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    code = proc.returncode if proc.returncode is not None else -1
    if check and code != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {err.decode().strip()}")
    return code, out.decode().strip(), err.decode().strip()


@dataclass
class Image:
    tag: str
    built_s: float  # scripts/image, including the local base when it had to be made
    size_bytes: int


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A figure the suite reports: shown by `scripts/test --all`, not only on a failure."""
    with capsys.disabled():
        print(f"\n{line}")


@pytest.fixture(scope="module")
def image() -> Image:
    """The image, built by scripts/image on a local Debian base (no registry is reachable)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/setup --containers (root)")
    t0 = time.monotonic()
    subprocess.run(
        [str(ROOT / "scripts" / "image"), "--local-base", "--tag", TAG],
        cwd=ROOT,
        env={**os.environ, "CONTAINER_ENGINE": "podman"},
        check=True,
        timeout=1100,
    )
    built_s = time.monotonic() - t0
    # earlier builds' untagged images would pile up in .hitl/containers (about 350 MB a build);
    # the price is that the next build re-runs the dependency stage (about 15 s)
    podman("image", "prune", "-f")
    size = int(podman("image", "inspect", "--format", "{{.Size}}", TAG))
    # the image stays cached for the next run; its containers are removed below
    return Image(TAG, built_s, size)


@dataclass
class Container:
    id: str
    url: str


@asynccontextmanager
async def relay_container(devstack: DevstackProcess, image: Image) -> AsyncIterator[Container]:
    """The image serving on a free port of the host network, configured only by its environment
    (from an env file, as a platform would inject it), under the restrictions of the Kubernetes
    manifests; removed on exit."""
    port = free_port()
    env = devstack.env
    settings = {
        "HITL_BACKEND": "supabase",
        "SUPABASE_URL": env["SUPABASE_URL"],
        "SUPABASE_SERVICE_ROLE_KEY": env["SUPABASE_SERVICE_ROLE_KEY"],
        "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
        "HITL_API_KEYS": API_KEY,
        # the host's network: loopback only, not every interface of a shared machine
        "HITL_HOST": "127.0.0.1",
        "HITL_PORT": str(port),
        "HITL_PROGRESS_INTERVAL_SECONDS": "1.0",
        "HITL_PRESENCE_CACHE_TTL_SECONDS": "0",
        "HITL_PLATFORM_TIMEOUT_SECONDS": "30",
        "HITL_LOG_LEVEL": "INFO",
        "HITL_INSTANCE_ID": f"container-{port}",
    }
    env_file = devstack.home / f"container-{port}.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env_file.chmod(0o600)
    name = f"hitl-relay-test-{uuid.uuid4().hex[:8]}"
    # as deploy/kubernetes runs it: read-only root (tmpfs /tmp), no capabilities, no new privileges
    restricted = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    _, cid, _ = await apodman(
        "run", "-d", "--name", name, *restricted, "--env-file", str(env_file), image.tag
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_http_ok(f"{url}/healthz", timeout_s=60)
        yield Container(cid, url)
    finally:
        await apodman("rm", "-f", "-t", "0", cid, check=False)
        env_file.unlink(missing_ok=True)


async def test_the_image_answers_a_call_runs_as_non_root_and_is_healthy(
    devstack_proc: DevstackProcess, image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    if devstack_proc.child is None:
        await devstack_proc.start()
    operator = Stack(devstack_proc, relay_url="").operator(
        answer_text=lambda case: "Yes, from the container."
    )
    await operator.start()
    try:
        async with relay_container(devstack_proc, image) as relay:
            async with httpx.AsyncClient() as client:

                async def ready() -> bool:
                    return (await client.get(f"{relay.url}/readyz")).status_code == 200

                await wait_until(ready, "the container's /readyz to answer 200", timeout_s=30)
            # the image's own HEALTHCHECK (on /readyz) passes
            health = await apodman("healthcheck", "run", relay.id, check=False)
            assert health[0] == 0, health
            _, uid, _ = await apodman("exec", relay.id, "id", "-u")
            _, user, _ = await apodman("inspect", "--format", "{{.Config.User}}", relay.id)
            result = await ask_human(
                f"{relay.url}/mcp", API_KEY, "May I approve a 42 euro refund?", timeout_seconds=30
            )
    finally:
        await operator.stop()
    report(capsys, f"container runs as uid {uid} (image user {user})")
    assert uid != "0"
    assert user.split(":")[0] == uid
    assert result["status"] == "answered"
    assert result["answer"] == "Yes, from the container."


async def test_stopping_the_container_drains_the_waiting_calls(
    devstack_proc: DevstackProcess, image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    if devstack_proc.child is None:
        await devstack_proc.start()
    operator = Stack(devstack_proc, relay_url="").operator(auto_answer=False)
    await operator.start()
    try:
        async with relay_container(devstack_proc, image) as relay:
            _, stop_signal, _ = await apodman(
                "image", "inspect", "--format", "{{.Config.StopSignal}}", image.tag
            )
            questions = [f"Container shutdown {i} {uuid.uuid4().hex[:6]}" for i in range(CALLS)]
            calls = [
                asyncio.create_task(ask_human(f"{relay.url}/mcp", API_KEY, q, timeout_seconds=120))
                for q in questions
            ]
            cases = set()
            while len(cases) < CALLS:  # every case open: every call is waiting
                case = await operator.next_case(timeout_s=30)
                cases.add(str(case["case_id"]))
            t_stop = time.monotonic()
            # `podman stop` sends the image's STOPSIGNAL, then SIGKILL after -t seconds
            stopping = asyncio.create_task(apodman("stop", "-t", "30", relay.id))
            results = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)
            returned_s = time.monotonic() - t_stop
            await stopping
            exited_s = time.monotonic() - t_stop
            state = json.loads(
                (await apodman("inspect", "--format", "{{json .State}}", relay.id))[1]
            )
            _, out, err = await apodman("logs", relay.id)
            log = out + err
    finally:
        await operator.stop()
    report(
        capsys,
        f"podman stop with {CALLS} waiting calls: all returned in {returned_s * 1000:.0f} ms, "
        f"container exited (code {state['ExitCode']}) in {exited_s * 1000:.0f} ms",
    )
    assert stop_signal in ("SIGTERM", "15", "TERM")
    # uvicorn re-raises SIGTERM once drained: 128 + 15; never SIGKILL's 137 (the drain finished)
    assert state["ExitCode"] in (0, 128 + signal.SIGTERM)
    assert f"shutting down: {CALLS} waiting call(s) answered with the fallback" in log
    assert "Traceback" not in log
    assert [r["status"] for r in results] == ["timeout"] * CALLS
    assert {r["case_id"] for r in results} == cases


def test_the_image_has_no_build_tool_cache_or_devstack_and_has_the_pre_stop_sleep(
    image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = (
        "import importlib.util, json, os, shutil\n"
        "tools = [t for t in ('gcc', 'cc', 'c++', 'make', 'uv') if shutil.which(t)]\n"
        "caches = [p for p in ('/root/.cache', '/opt/uv', '/src', '/app/.venv/bin/uv')"
        " if os.path.exists(p)]\n"
        "pre_stop = shutil.which('sleep') is not None\n"
        "devstack = importlib.util.find_spec('hitl_devstack') is not None\n"
        "print(json.dumps({'tools': tools, 'caches': caches, 'uid': os.getuid(),"
        " 'pre_stop': pre_stop, 'devstack': devstack}))\n"
    )
    size_mb = image.size_bytes / 1e6
    report(capsys, f"image {image.tag}: {size_mb:.0f} MB, scripts/image took {image.built_s:.0f} s")
    found = json.loads(podman("run", "--rm", "--entrypoint", "python3", image.tag, "-c", probe))
    # the Kubernetes preStop hook runs `sleep` in the image; the image ships the product only
    assert found == {
        "tools": [],
        "caches": [],
        "uid": 10001,
        "pre_stop": True,
        "devstack": False,
    }
