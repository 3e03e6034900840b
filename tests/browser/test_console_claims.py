"""Claims and one-tap answers in the console, two operators at once: one claims a case and the
other sees it claimed at once (a database broadcast on `operators`) and cannot answer it; the
holder answers with one tap and the agent gets the option's index. Screenshots for the operator
guide go to tests/artifacts/ (copied into docs/ by hand)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from conftest import ConsolePage, Stack
from playwright.async_api import expect
from waiting import wait_until

pytestmark = pytest.mark.browser

OpenConsole = Callable[..., Awaitable[ConsolePage]]


async def _online_is(stack: Stack, n: int) -> bool:
    return await stack.operators_online() == n


async def test_one_operator_claims_the_other_sees_it_at_once_and_the_holder_answers_with_one_tap(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada, grace = stack.operators
    first, second = await open_console(), await open_console()
    await first.sign_in_with_token(ada)
    await second.sign_in_with_token(grace)
    await wait_until(lambda: _online_is(stack, 2), "the relay to see both operators")
    ask = await stack.ask(
        "Refund 30 euros for the broken kettle?",
        options=["approve", "deny", "approve up to 50 euros"],
        timeout_seconds=60,
    )
    for console in (first, second):
        item = console.case_item("broken kettle")
        await expect(item).to_have_attribute("data-claim", "unclaimed")
        await expect(item.locator(".badge.claim")).to_have_text("unclaimed")
        await item.locator("button").click()
        await expect(console.page.locator("#answer-options .option")).to_have_text(
            ["approve", "deny", "approve up to 50 euros"]
        )
    await first.screenshot("console-options-unclaimed")

    await first.page.get_by_role("button", name="Claim", exact=True).click()
    await expect(first.page.locator("#claim-state")).to_contain_text("You hold this case")
    # The other console hears the claim from the database and locks its answer box.
    other_item = second.case_item("broken kettle")
    await expect(other_item).to_have_attribute("data-claim", "other")
    await expect(other_item.locator(".badge.claim")).to_contain_text(
        f"claimed by operator {ada.id[:8]}"
    )
    await expect(second.page.locator("#claim-state")).to_contain_text("Claimed by operator")
    await expect(second.page.locator("#answer-options .option").first).to_be_disabled()
    await expect(second.page.get_by_role("button", name="Send answer")).to_be_disabled()
    await second.screenshot("console-claimed-by-another")

    await first.page.locator("#answer-options .option", has_text="approve up to 50 euros").click()
    result = await ask.result()
    assert result["status"] == "answered"
    assert (result["option_index"], result["option"]) == (2, "approve up to 50 euros")
    assert result["answered_by"] == str(ada.id)
    row = await stack.db_fetchrow(
        "select actor, detail ->> 'claimed_by' as holder from hil_audit"
        " where action = 'answer' and case_id = $1::uuid",
        result["case_id"],
    )
    assert (row["actor"], row["holder"]) == (str(ada.id), str(ada.id))
    await expect(second.case_item("broken kettle")).to_have_count(0)


async def test_an_escalation_alerts_every_console_and_raises_the_priority(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada, _ = stack.operators
    console = await open_console()
    await console.sign_in_with_token(ada)
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    await stack.ask("Can we ship to Norway?", priority=2, timeout_seconds=60)
    item = console.case_item("ship to Norway")
    await expect(item).to_have_attribute("data-priority", "2")
    # As if it waited past its threshold: the escalation function (cron or relay) runs.
    await stack.db_fetchrow(
        "update cases set created_at = now() - interval '1 minute'"
        " where description = 'Can we ship to Norway?'"
    )
    assert (await stack.db_fetchrow("select public.hitl_escalate() as n"))["n"] >= 1
    await expect(item).to_have_attribute("data-priority", "3")
    await expect(item.locator(".badge.escalated")).to_be_visible()
    await console.screenshot("console-escalated")
