"""`hitl-relay ask` as a person at a terminal uses it, against the devstack and a relay process:
the operator asks back (needs_info), `ask --case-id` carries the caller's reply into the same
case, and the operator's answer comes back."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from conftest import API_KEY, Stack
from waiting import wait_until

from hitl_devstack.operator_sim import SimulatedOperator

HITL_RELAY = str(Path(sys.executable).parent / "hitl-relay")


def cli_env(stack: Stack, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SUPABASE_"))}
    env.update(HITL_MCP_URL=stack.mcp_url, HITL_API_KEY=API_KEY, HITL_HOME=str(home))
    return env


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        HITL_RELAY,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def caller_reply_recorded(db_url: str, case_id: str, reply: str) -> bool:
    conn = await asyncpg.connect(db_url)
    try:
        found = await conn.fetchval(
            "select count(*) from messages where case_id = $1::uuid and sender_type = 'ai'"
            " and content = $2",
            case_id,
            reply,
        )
        return bool(found)
    finally:
        await conn.close()


@asynccontextmanager
async def an_operator(stack: Stack) -> AsyncIterator[SimulatedOperator]:
    """A signed-in operator on the `operators` channel who answers only when told."""
    operator = stack.operator(auto_answer=False)
    await operator.start()
    try:
        yield operator
    finally:
        await operator.stop()


async def asked_back(
    env: dict[str, str], operator: SimulatedOperator, question: str, clarification: str
) -> tuple[str, tuple[int, str, str]]:
    """`hitl-relay ask question`, and the operator asks back: the case id and what ask did."""
    first = asyncio.create_task(run_cli(env, "ask", question, "--timeout", "30"))
    case_id = str((await operator.next_case(timeout_s=30))["case_id"])
    await operator.answer(case_id, clarification, kind="clarification")
    return case_id, await first


async def test_ask_then_follow_up_with_case_id_after_the_operator_asks_back(
    stack: Stack, tmp_path: Path
) -> None:
    env = cli_env(stack, tmp_path)
    async with an_operator(stack) as operator:
        case_id, (code, out, err) = await asked_back(
            env, operator, "Can I offer the caller a discount?", "Which order is it about?"
        )

        assert code == 3, err
        assert out.strip() == "Your colleague asks: Which order is it about?"
        assert f"status: needs_info  case: {case_id}" in err
        assert f"reply with: hitl-relay ask --case-id {case_id}" in err

        # The follow-up: no --call-id needed, the CLI remembers which call asked the case.
        follow_up = asyncio.create_task(
            run_cli(env, "ask", "--case-id", case_id, "Order 4411", "--timeout", "30")
        )
        await wait_until(
            lambda: caller_reply_recorded(stack.db_url, case_id, "Order 4411"),
            "the caller's reply in the case",
            timeout_s=30,
        )
        await operator.answer(case_id, "Yes, 10 percent on order 4411.")
        code, out, err = await follow_up

    assert code == 0, err
    assert out.strip() == "Yes, 10 percent on order 4411."
    assert f"status: answered  case: {case_id}" in err


async def test_a_follow_up_from_another_call_is_refused_with_the_rule(
    stack: Stack, tmp_path: Path
) -> None:
    env = cli_env(stack, tmp_path)
    async with an_operator(stack) as operator:
        case_id, (code, _, _) = await asked_back(env, operator, "Refund?", "Which amount?")
    assert code == 3

    code, out, err = await run_cli(
        env, "ask", "--case-id", case_id, "--call-id", "someone-else", "42 euros"
    )
    assert code == 1
    assert out == ""
    assert "case_id: belongs to another call" in err
    assert "Traceback" not in err


async def test_follow_up_of_a_case_not_asked_from_here_says_to_pass_the_call_id(
    stack: Stack, tmp_path: Path
) -> None:
    code, _, err = await run_cli(
        cli_env(stack, tmp_path), "ask", "--case-id", "5f0c6f8e-0000-4000-8000-000000000001", "Hi"
    )
    assert code == 1
    assert "was not asked from here; pass --call-id" in err
    code, _, err = await run_cli(cli_env(stack, tmp_path), "ask", "--case-id", "nope", "Hi")
    assert code == 1
    assert "--case-id: must be a case id (a UUID)" in err


async def test_ask_with_nobody_on_duty_names_the_recorded_case_and_answer_says_what_it_sent(
    stack: Stack, tmp_path: Path
) -> None:
    """Nobody on duty: `ask` prints the case recorded in the queue; `answer --kind ...` prints
    what was actually sent (a clarification is not an answer)."""
    env = cli_env(stack, tmp_path)
    code, out, err = await run_cli(env, "ask", "Is the shop open on Sunday?", "--timeout", "30")
    assert code == 3
    status_line = next(line for line in err.splitlines() if line.startswith("status:"))
    assert status_line.startswith("status: no_operator  case: ")
    case_id = status_line.split()[3]
    assert f"recorded in the operators' queue: hitl-relay answer {case_id}" in err

    devstack = stack.devstack.env
    operator_env = {
        **env,
        **{k: devstack[k] for k in ("SUPABASE_URL", "SUPABASE_ANON_KEY")},
        **{k: devstack[k] for k in ("HITL_OPERATOR_TOKEN", "HITL_OPERATOR_ID")},
    }
    sent = {}
    for kind in ("clarification", "cannot_answer", "answer"):
        code, out, err = await run_cli(operator_env, "answer", case_id, f"a {kind}", "--kind", kind)
        assert (code, err) == (0, "")
        sent[kind] = out.strip()
    assert sent["clarification"].startswith(f"sent a clarification on case {case_id}")
    assert sent["cannot_answer"].startswith(f"sent cannot_answer on case {case_id}")
    assert sent["answer"] == f"answered case {case_id}"
