"""The operator console in a real browser: devstack, relay, cases opened over MCP."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from conftest import ConsolePage, Stack, wait_until
from playwright.async_api import expect

pytestmark = pytest.mark.browser

OpenConsole = Callable[..., Awaitable[ConsolePage]]


async def test_case_asked_over_mcp_appears_in_the_queue_within_a_second_and_the_answer_returns_to_the_agent(  # noqa: E501
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    ada = stack.operators[0]
    await console.sign_in_with_token(ada)
    await wait_until(
        lambda: _online_is(stack, 1), "the relay to count the console's operator as present"
    )

    question = "Caller (order 4411) asks for Saturday delivery to another address. Allowed?"
    ask = await stack.ask(
        question,
        priority=4,
        urgency="high",
        timeout_seconds=60,
        context="Order 4411, paid, ships Friday.",
        caller_info={"name": "Jo Example", "phone": "+44 20 7946 0000"},
        conversation_history=[
            {"role": "user", "content": "Can you deliver on Saturday instead?"},
            {"role": "agent", "content": "Let me check with a colleague."},
        ],
    )
    item = console.case_item(question)
    await expect(item).to_be_visible()
    await expect(item).to_have_class(re.compile(r"\bis-voice\b.*\bwaiting\b"))
    await expect(item.locator(".badge.voice")).to_have_text("☎ Voice")
    await expect(item.locator(".badge.prio")).to_have_text("P4")

    case_id = await item.get_attribute("data-case-id")
    shown_at_ms = int(await item.get_attribute("data-shown-at") or 0)
    row = await stack.db_fetchrow("select created_at from cases where id = $1::uuid", case_id)
    created: datetime = row["created_at"]
    # The page stamps the moment it put the case on screen (same machine, same clock).
    seen_ms = shown_at_ms - ask.sent_wall * 1000
    relay_ms = (created.timestamp() - ask.sent_wall) * 1000
    print(
        f"\nconsole: tool call sent → case on screen {seen_ms:.0f} ms"
        f" (sent → case row {relay_ms:.0f} ms, row → on screen {seen_ms - relay_ms:.0f} ms)"
    )
    assert 0 < seen_ms < 1000

    await item.locator("button").click()
    page = console.page
    await expect(page.locator("#case-question")).to_have_text(question)
    await expect(page.locator("#case-context")).to_have_text("Order 4411, paid, ships Friday.")
    await expect(page.locator("#case-caller")).to_contain_text("Jo Example")
    await expect(page.locator("#case-history li")).to_have_count(2)
    await expect(page.locator("#case-countdown")).to_have_class("countdown waiting")

    answer = "Yes, Saturday delivery to the new address is fine at no extra cost."
    await page.get_by_label("Your answer").fill(answer)
    await page.get_by_role("button", name="Send answer").click()

    result = await ask.result()
    assert result["status"] == "answered"
    assert result["answer"] == answer
    stored = await stack.db_fetchrow(
        "select sender_type, sender_id::text, kind, content from messages where case_id = $1::uuid",
        case_id,
    )
    assert dict(stored) == {
        "sender_type": "human",
        "sender_id": ada.id,
        "kind": "answer",
        "content": answer,
    }
    await expect(item).to_have_count(0)  # answered: it left the queue
    await expect(page.locator("#case-messages .message.is-answer")).to_contain_text(answer)


async def _online_is(stack: Stack, n: int) -> bool:
    return await stack.operators_online() == n
