"""The local stack's KEY=value files (`.hitl/devstack.env`, `.hitl/relay.env`): read with
python-dotenv, written with mode 0600 (they hold keys) and replaced atomically, so a reader
waiting for the file never sees it half written."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values


def read_env_file(path: Path) -> dict[str, str]:
    """The values the file sets ({} when there is no such file)."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def write_env_file(path: Path, values: dict[str, str], header: str | None = None) -> None:
    """KEY=value lines (after `# header` when given), mode 0600, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if header is not None:
            f.write(f"# {header}\n")
        f.writelines(f"{k}={v}\n" for k, v in values.items())
    os.chmod(tmp, 0o600)  # a umask cannot widen it, but an existing .tmp could be wider
    os.replace(tmp, path)
