"""docs/troubleshooting.md names every message a user of the relay can meet.

The messages are extracted from the code, not listed by hand: the rule strings of
`InvalidRequest`, the settings' validation messages and start-up problems, the errors of the CLI,
the devstack, the cluster and the migrations, the JSON errors and status codes of the HTTP guards,
the relay's warnings, the tool statuses and fallback kinds, the `P0001` messages of the SQL
functions and the failures of `scripts/setup`. An f-string counts by its literal parts (the
doc writes `<placeholders>` for the rest). When a message is added to the code, this test fails
until the doc says what it means and what to do.
"""

from __future__ import annotations

import ast
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_relay import metrics
from hitl_relay.models import Status

ROOT = Path(__file__).resolve().parents[2]
# The product and the devstack (its messages meet whoever runs scripts/dev or the tests).
PACKAGES = (ROOT / "hitl_relay", ROOT / "hitl_devstack")
DOC = ROOT / "docs" / "troubleshooting.md"

# Emulations of Supabase's own services (their messages are Supabase's, documented there) and
# the in-memory test twin (it mirrors the SQL rules, which are checked from the migrations).
EXCLUDED = (
    "hitl_relay/adapters/memory.py",
    "hitl_relay/adapters/memory_state.py",
    "hitl_relay/adapters/memory_realtime.py",
    "hitl_relay/adapters/memory_upkeep.py",
    "hitl_devstack/rest/",
    "hitl_devstack/auth.py",
    "hitl_devstack/keys.py",
    "hitl_devstack/realtime/",
    "hitl_devstack/operator_sim.py",
    "hitl_devstack/pgtap.py",
)
# Calls whose string arguments are messages someone reads.
MESSAGE_CALLS = {
    "InvalidRequest",
    "PlatformUnavailable",
    "ConfigError",
    "ClusterError",
    "StartError",
    "MigrationError",
    "DevError",
    "StatsError",
    "RelayCallError",
    "_fail",
}
# Validators' ValueError messages become "<VARIABLE or field>: <message>".
VALUE_ERROR_FILES = {"config.py", "models.py", "rules.py", "security/settings.py"}
# Start-up problems are appended to a list, one line each.
PROBLEM_FILES = {"config.py", "security/settings.py", "security/keys.py"}
LOG_METHODS = {"warning", "error", "exception", "critical"}
# A literal part shorter than this (after trimming punctuation) says nothing on its own.
MIN_FRAGMENT = 8


def normalise(text: str) -> str:
    """Compare text without markdown backticks and with single spaces."""
    return re.sub(r"\s+", " ", text.replace("`", "")).strip()


def fragments(node: ast.expr) -> list[str]:
    """The literal text of a message expression: a string, an f-string's literal parts, or a
    `"%s"`/`"{}"` format string's parts. Empty for anything computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts = re.split(r"\{[^{}]*\}|%[-.\d]*[srdgf]", node.value)
    elif isinstance(node, ast.JoinedStr):
        parts = [
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        ]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return fragments(node.left) + fragments(node.right)
    else:
        return []
    out = []
    for part in parts:
        text = normalise(part).strip(" :;,.()'\"")
        if len(text) >= MIN_FRAGMENT:
            out.append(text)
    return out


def call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def is_loguru_or_log(node: ast.Call) -> bool:
    """`logger.warning(...)`, `logger.bind(...).warning(...)`, `log.warning(...)`."""
    func = node.func
    if not isinstance(func, ast.Attribute) or func.attr not in LOG_METHODS:
        return False
    base = func.value
    while isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute):
        base = base.func.value
    return isinstance(base, ast.Name) and base.id in {"logger", "log"}


def python_messages() -> Iterator[tuple[str, str]]:
    """(where, literal text) for every message in the package."""
    files = [(package, path) for package in PACKAGES for path in sorted(package.rglob("*.py"))]
    for package, path in files:
        rel = path.relative_to(package).as_posix()  # as the file lists above name it
        where_in_repo = path.relative_to(ROOT).as_posix()
        if where_in_repo.startswith(EXCLUDED):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = call_name(node)
            where = f"{where_in_repo}:{node.lineno}"
            args: list[ast.expr] = list(node.args)
            if name == "InvalidRequest" and len(args) == 2:
                field, rule = args
                if isinstance(field, ast.Constant) and isinstance(rule, ast.Constant):
                    yield where, normalise(f"{field.value}: {rule.value}")
                    continue
                args = [rule]
            if name in MESSAGE_CALLS or (name == "ValueError" and rel in VALUE_ERROR_FILES):
                for arg in args:
                    elements = arg.elts if isinstance(arg, ast.List) else [arg]
                    for element in elements:
                        for text in fragments(element):
                            yield where, text
            elif name == "append" and rel in PROBLEM_FILES:
                for arg in args:
                    for text in fragments(arg):
                        yield where, text
            elif is_loguru_or_log(node) and args:
                for text in fragments(args[0]):
                    yield where, text
            elif name in {"error_response", "JSONResponse"}:
                yield from http_errors(where, node)


def http_errors(where: str, node: ast.Call) -> Iterator[tuple[str, str]]:
    """`error_response(403, "forbidden")` and `JSONResponse({"error": ...}, status_code=...)`:
    the status code and the error string."""
    if call_name(node) == "error_response":
        status, error = node.args[0], node.args[1]
        if isinstance(status, ast.Constant) and isinstance(error, ast.Constant):
            yield where, f"{status.value}"
            yield where, f'"error": "{error.value}"'
        return
    body = node.args[0] if node.args else None
    if not isinstance(body, ast.Dict):
        return
    for key, value in zip(body.keys, body.values, strict=True):
        if (
            isinstance(key, ast.Constant)
            and key.value == "error"
            and isinstance(value, ast.Constant)
        ):
            yield where, f'"error": "{value.value}"'
        if isinstance(key, ast.Constant) and key.value == "detail":
            yield from ((where, text) for text in fragments(value))
    for keyword in node.keywords:
        if keyword.arg == "status_code" and isinstance(keyword.value, ast.Constant):
            yield where, str(keyword.value.value)


def sql_messages() -> Iterator[tuple[str, str]]:
    """`hitl_invalid('field', 'rule')` → "field: rule" (as the relay reports it), and the other
    `raise exception ... message = '...'` lines, from the migrations."""
    for path in sorted((ROOT / "supabase" / "migrations").glob("*.sql")):
        sql = path.read_text()
        for match in re.finditer(r"hitl_invalid\('(\w+)',\s*'([^']+)'\)", sql):
            where = f"{path.name}:{sql.count(chr(10), 0, match.start()) + 1}"
            yield where, f"{match.group(1)}: {match.group(2)}"
        for match in re.finditer(
            r"hitl_invalid\('(\w+)',\s*format\('([^']+)'", sql
        ):  # format('must be an integer from %s to %s', ...)
            where = f"{path.name}:{sql.count(chr(10), 0, match.start()) + 1}"
            for part in re.split(r"%s", match.group(2)):
                if len(part.strip()) >= MIN_FRAGMENT:
                    yield where, normalise(part)
        for match in re.finditer(r"message\s*=\s*'([^']+)'", sql):
            where = f"{path.name}:{sql.count(chr(10), 0, match.start()) + 1}"
            yield where, normalise(match.group(1))


def setup_messages() -> Iterator[tuple[str, str]]:
    """The failures `scripts/setup` prints (its `echo ... >&2` lines)."""
    script = (ROOT / "scripts" / "setup").read_text()
    for number, line in enumerate(script.splitlines(), start=1):
        match = re.search(r'echo "setup: (.*)" >&2', line)
        if match:
            for part in re.split(r"\$\{[^}]*\}", match.group(1)):
                text = normalise(part).strip(" :;,.")
                if len(text) >= MIN_FRAGMENT:
                    yield f"scripts/setup:{number}", text


def statuses() -> Iterator[tuple[str, str]]:
    """Every status a tool result can carry, every outcome and fallback kind in the metrics."""
    for status in typing.get_args(Status):
        yield "hitl_relay/results.py Status", f"`{status}`"
    for outcome in (*metrics.OUTCOMES, *metrics.FALLBACK_KINDS):
        yield "hitl_relay/metrics.py", f"`{outcome}`"


def all_messages() -> list[tuple[str, str]]:
    return sorted(
        set(python_messages()) | set(sql_messages()) | set(setup_messages()) | set(statuses())
    )


def test_the_extraction_finds_the_messages_it_is_meant_to_find() -> None:
    found = {text for _, text in all_messages()}
    # One of each kind, so a broken extractor cannot pass the test below by finding nothing.
    for expected in (
        "case_id: belongs to another call",  # InvalidRequest / P0001
        "HITL_API_KEYS: is required (make one with hitl-relay keygen); --insecure-local serves "
        "without keys on loopback only",  # a start-up problem
        "must start with http:// or https://",  # a settings validator
        '"error": "unauthorized"',  # the HTTP guard
        "413",
        "on 127.0.0.1 is taken by another process; stop it, or set HITL_PG_PORT to a free port",
        "platform unavailable",  # the relay's warning
        "missing Debian packages",  # scripts/setup
        "`platform_unreachable`",  # a tool status
    ):
        assert expected in found, expected
    assert len(found) > 100


def test_every_message_is_in_the_troubleshooting_guide() -> None:
    doc = normalise(DOC.read_text())
    missing = [f"{where}: {text}" for where, text in all_messages() if normalise(text) not in doc]
    if missing:
        pytest.fail(
            f"{len(missing)} message(s) not in docs/troubleshooting.md (say what each means and "
            "what to do):\n" + "\n".join(missing)
        )


def test_the_guide_is_linked_from_the_readme_and_the_docs() -> None:
    assert "docs/troubleshooting.md" in (ROOT / "README.md").read_text()
    linked = [p.name for p in (ROOT / "docs").glob("*.md") if "troubleshooting.md" in p.read_text()]
    assert linked, "no page in docs/ links troubleshooting.md"
