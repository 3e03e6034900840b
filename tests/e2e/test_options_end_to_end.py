"""`options` through the whole product: an MCP client calls ask_human with options, the case on
the devstack carries them, an operator answers with one tap (an option index under RLS), and the
agent's structured result names the option's index and text and who answered."""

from __future__ import annotations

import asyncio
import uuid

from conftest import API_KEY, Stack

from hitl_relay.mcp_client import connect

OPTIONS = ["approve", "deny", "approve up to 50 euros"]


async def test_an_option_tapped_by_the_operator_reaches_the_agent_with_its_index(
    stack: Stack,
) -> None:
    operator = stack.operator(auto_answer=False)
    await operator.start()
    call = f"e2e-options-{uuid.uuid4().hex[:8]}"
    arguments = {
        "question": "Refund 30 euros for order 4411?",
        "session_id": call,
        "call_id": call,
        "agent_id": "e2e-agent",
        "timeout_seconds": 20,
        "options": OPTIONS,
    }
    try:
        async with connect(stack.mcp_url, API_KEY) as client:
            asking = asyncio.ensure_future(client.call_tool("ask_human", arguments))
            case = await operator.next_case(timeout_s=15)
            await operator.answer(str(case["case_id"]), "", option_index=2)
            result = await asyncio.wait_for(asking, 20)
    finally:
        await operator.stop()
    assert not result.is_error
    structured = result.structured_content
    assert structured is not None
    assert structured["status"] == "answered"
    assert (structured["option_index"], structured["option"]) == (2, "approve up to 50 euros")
    assert structured["answer"] == "approve up to 50 euros"
    assert structured["answered_by"] == operator.operator_id


async def test_bad_options_are_a_tool_error_naming_the_field(stack: Stack) -> None:
    arguments = {
        "question": "Refund?",
        "session_id": "s",
        "call_id": "c",
        "agent_id": "a",
        "options": ["yes", "Yes"],
    }
    async with connect(stack.mcp_url, API_KEY) as client:
        result = await client.call_tool("ask_human", arguments)
    assert result.is_error
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert "options: item 1 repeats an earlier option" in text
