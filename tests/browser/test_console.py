"""The operator console in a real browser: devstack, relay, cases opened over MCP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from conftest import API_KEY, ConsolePage, Stack
from playwright.async_api import Page, Route, expect
from waiting import wait_until

from hitl_relay import console as console_module
from hitl_relay.mcp_client import connect

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


async def test_two_operators_see_each_other_online_and_the_relay_counts_both(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada, grace = stack.operators
    first = await open_console()
    second = await open_console()
    await first.sign_in_with_password(ada)  # Supabase Auth email + password
    await second.sign_in_with_token(grace)  # the devstack's operator token

    for console, other in ((first, grace), (second, ada)):
        entry = console.page.locator(f'#presence-list [data-operator-id="{other.id}"]')
        await expect(entry).to_contain_text(other.email)
        await expect(console.page.locator("#presence-count")).to_have_text("2")
    await expect(first.page.locator("#presence-list .you")).to_contain_text(ada.email)
    await wait_until(lambda: _online_is(stack, 2), "the relay to count two operators")

    await second.page.get_by_role("button", name="Sign out").click()
    await expect(second.page.get_by_role("heading", name="Sign in as an operator")).to_be_visible()
    await expect(
        first.page.locator(f'#presence-list [data-operator-id="{grace.id}"]')
    ).to_have_count(0)
    await expect(first.page.locator("#presence-count")).to_have_text("1")
    await wait_until(lambda: _online_is(stack, 1), "the relay to see one operator left")


async def test_an_away_operator_leaves_presence_and_comes_back(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada = stack.operators[0]
    console = await open_console()
    await console.sign_in_with_token(ada)
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")

    await console.page.get_by_label("Available").uncheck()
    await expect(console.page.locator("#presence-list li")).to_have_count(0)
    await wait_until(lambda: _online_is(stack, 0), "the relay to see nobody available")
    away = await stack.ask("Anyone there?", timeout_seconds=30)
    assert (await away.result())["status"] == "no_operator"

    await console.page.get_by_label("Available").check()
    await expect(
        console.page.locator(f'#presence-list [data-operator-id="{ada.id}"]')
    ).to_be_visible()
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator again")
    beats = await stack.db_fetchrow(
        "select count(*) as n from operator_activity where operator_id = $1::uuid", ada.id
    )
    assert beats["n"] >= 1  # the availability heartbeat (hitl_operator_heartbeat) was recorded


async def test_countdown_turns_to_a_warning_in_the_last_ten_seconds(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    question = "Short deadline: may I waive the 5 euro delivery fee?"
    ask = await stack.ask(question, timeout_seconds=13, priority=5)
    item = console.case_item(question)
    await expect(item).to_be_visible()
    await item.locator("button").click()
    countdown = console.page.locator("#case-countdown")
    await expect(countdown).to_have_class(re.compile(r"\bwaiting\b"))
    assert "warning" not in (await countdown.get_attribute("class") or "")

    await expect(countdown).to_have_class(re.compile(r"\bwarning\b"), timeout=15_000)
    await expect(item).to_have_class(re.compile(r"\bwarning\b"))
    left = await console.page.locator("#case-countdown-value").text_content() or ""
    minutes, seconds = (int(part) for part in left.split(":"))
    assert minutes == 0, left
    assert seconds <= 10, left
    await expect(console.page.locator("#urgent-announcer")).to_contain_text("seconds left")
    await console.screenshot("console-deadline-warning")

    await console.page.get_by_label("Your answer").fill("Yes, waive it.")
    await console.page.get_by_role("button", name="Send answer").click()
    result = await ask.result()
    assert (result["status"], result["answer"]) == ("answered", "Yes, waive it.")


async def test_a_case_past_its_deadline_stays_answerable_and_the_answer_is_kept(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    question = "Can we call the customer back about invoice 88?"
    ask = await stack.ask(question, timeout_seconds=5)
    result = await ask.result()
    assert result["status"] == "timeout"

    item = console.case_item(question)
    await expect(item).to_have_class(re.compile(r"\blate\b"))  # still queued, caller gone
    await item.locator("button").click()
    await expect(console.page.locator("#case-countdown-label")).to_have_text(
        "Caller no longer waiting"
    )
    await console.page.get_by_label("Your answer").fill("Yes, call them before 5 pm.")
    await console.page.get_by_role("button", name="Send answer").click()
    await expect(item).to_have_count(0)
    answer = await stack.db_fetchrow(
        "select m.content from cases c join messages m on m.id = c.answer_message_id"
        " where c.id = $1::uuid",
        result["case_id"],
    )
    assert answer["content"] == "Yes, call them before 5 pm."


async def test_a_routing_read_that_answers_late_does_not_hide_a_case_opened_meanwhile(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    page = console.page
    started: list[int] = []
    release = asyncio.Event()

    async def reads_started(n: int) -> bool:
        return len(started) >= n

    async def stale_first_read(route: Route) -> None:
        started.append(1)
        if len(started) > 1:
            await route.continue_()
            return
        response = await route.fetch()  # the queue as it was before the case existed
        await release.wait()
        await route.fulfill(response=response)

    await page.route(re.compile(r".*/rest/v1/rpc/hitl_operator_queue(\?.*)?$"), stale_first_read)
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    await wait_until(lambda: reads_started(1), "the console's first routing read")

    question = "Can the caller move the delivery to Friday?"
    await stack.ask(question)
    item = console.case_item(question)
    await expect(item).to_have_count(1)
    await wait_until(lambda: reads_started(2), "the routing read for the new case")

    async def answered_all_but(held: int) -> bool:
        # Reads may still start (the console reconciles on its own): compare with the count now.
        answered = await page.locator("body").get_attribute("data-routing-reads")
        return answered is not None and int(answered) == len(started) - held

    await wait_until(lambda: answered_all_but(1), "every routing read but the held one")
    release.set()
    await wait_until(lambda: answered_all_but(0), "the held routing read to answer")
    await expect(item).to_have_count(1)  # the late, older answer did not replace the newer one


async def test_markup_in_case_text_is_shown_as_text_and_never_runs(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    question = "<img src=x onerror=alert(1)>"
    context = "<script>alert(2)</script>"
    caller = '<b onmouseover="alert(3)">Mallory</b>'
    turn = "<svg onload=alert(4)></svg>"
    ask = await stack.ask(
        question,
        context=context,
        caller_info={"name": caller},
        conversation_history=[{"role": "user", "content": turn}],
    )
    item = console.case_item("onerror=alert(1)")
    await expect(item.locator(".case-q")).to_have_text(question)
    await item.locator("button").click()
    page = console.page
    await expect(page.locator("#case-question")).to_have_text(question)
    await expect(page.locator("#case-context")).to_have_text(context)
    await expect(page.locator("#case-caller dd")).to_have_text(caller)
    await expect(page.locator("#case-history li")).to_contain_text(turn)

    answer = '<img src=y onerror="alert(5)">'
    await page.get_by_label("Your answer").fill(answer)
    await page.get_by_role("button", name="Send answer").click()
    result = await ask.result()
    assert result["answer"] == answer
    await expect(page.locator("#case-messages .content")).to_have_text(answer)

    injected = await page.evaluate(
        """() => ({
            elements: document.querySelectorAll('img, svg, b, iframe, object').length,
            inlineScripts: [...document.scripts].filter((s) => !s.src).length,
            handlers: [...document.querySelectorAll('*')].filter((e) =>
                [...e.attributes].some((a) => a.name.startsWith('on'))).length,
        })"""
    )
    assert injected == {"elements": 0, "inlineScripts": 0, "handlers": 0}
    assert console.dialogs == []
    await console.screenshot("console-markup-as-text")


async def test_nothing_overflows_horizontally_at_360_px(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console(width=360, height=780)
    page = console.page
    await page.goto(stack.console_url)
    await expect(page.get_by_role("heading", name="Sign in as an operator")).to_be_visible()
    assert await _overflow(page) == []

    ada = stack.operators[0]
    await console.sign_in_with_password(ada)
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    question = (
        "The caller reads a tracking reference "
        "TRK-0000000000000000000000000000000000000000000000000000000000000000000000 "
        "and asks where https://example.com/a/very/long/path/that/never/breaks/anywhere is"
    )
    await stack.ask(
        question,
        priority=5,
        urgency="high",
        context="x" * 300,
        caller_info={"customer_reference_with_a_long_name": "C" * 80, "phone": "+4420794600"},
        conversation_history=[{"role": "user", "content": "W" * 200}],
    )
    item = console.case_item("TRK-000")
    await expect(item).to_be_visible()
    assert await _overflow(page) == []
    await item.locator("button").click()
    await expect(page.locator("#case-question")).to_have_text(question)
    assert await _overflow(page) == []
    await console.screenshot("console-360px")


async def test_alert_pattern_follows_priority_and_mute_is_remembered(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    page = console.page
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    body = page.locator("body")

    urgent = await stack.ask("Priority five: fraud suspected on this call?", priority=5)
    await expect(console.case_item("Priority five")).to_be_visible()
    case_id = await console.case_item("Priority five").get_attribute("data-case-id")
    await expect(body).to_have_attribute("data-last-alert", f"{case_id} 4x2 880Hz")
    await expect(body).to_have_attribute("data-last-alert-sound", "played")
    await expect(page.locator("#urgent-announcer")).to_contain_text("New voice case, priority 5")

    await page.get_by_role("button", name="Sound on").click()
    await page.reload()  # the token is kept for the tab; the mute switch in localStorage
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    mute = page.locator("#mute-toggle")
    await expect(mute).to_have_text("Sound off")
    await expect(mute).to_have_attribute("aria-pressed", "true")

    calm = await stack.ask("Priority one: opening hours on Sunday?", priority=1, urgency="low")
    await expect(console.case_item("Priority one")).to_be_visible()
    case_id = await console.case_item("Priority one").get_attribute("data-case-id")
    await expect(body).to_have_attribute("data-last-alert", f"{case_id} 1x1 440Hz")
    await expect(body).to_have_attribute("data-last-alert-sound", "muted")
    # Priority first: the urgent case is above the calm one although it is older.
    ids = await page.locator("#queue .case-item").evaluate_all(
        "items => items.map((i) => i.dataset.priority)"
    )
    assert ids == ["5", "1"]
    for ask in (urgent, calm):
        assert ask.task is not None
        assert not ask.task.done()  # both callers still waiting


async def test_cannot_answer_gives_the_agent_the_unclear_answer_fallback_with_the_note(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    ask = await stack.ask("Is the Lisbon warehouse open on public holidays?")
    item = console.case_item("Lisbon warehouse")
    await item.locator("button").click()
    await console.page.get_by_label("Your answer").fill("Only the Lisbon team knows; try them.")
    await console.page.get_by_role("button", name="Cannot answer").click()
    result = await ask.result()
    assert result["status"] == "unclear_answer"
    assert "Only the Lisbon team knows; try them." in result["message"]
    await expect(item).to_have_count(0)


async def test_ask_back_returns_the_question_and_the_callers_reply_continues_the_same_case(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    page = console.page
    await console.sign_in_with_token(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    first = await stack.ask("Can I refund this order?", call_id="call_refund_1")
    item = console.case_item("Can I refund this order?")
    await item.locator("button").click()
    await page.get_by_label("Your answer").fill("Which order number?")
    await page.get_by_role("button", name="Ask back").click()

    asked = await first.result()
    assert (asked["status"], asked["clarification"]) == ("needs_info", "Which order number?")
    await expect(item).to_be_visible()  # still open: the caller's reply comes back here
    await expect(page.locator("#case-countdown-label")).to_have_text(
        "Waiting for the caller’s reply"
    )

    follow_up = await stack.ask(
        "Order 5512.", call_id="call_refund_1", case_id=asked["case_id"], timeout_seconds=30
    )
    await expect(page.locator("#case-messages .from-ai")).to_contain_text("Order 5512.")
    await expect(page.locator("#case-countdown")).to_have_class(re.compile(r"\bwaiting\b"))
    await page.get_by_label("Your answer").fill("Yes, refund order 5512 in full.")
    await page.get_by_role("button", name="Send answer").click()
    result = await follow_up.result()
    assert (result["status"], result["answer"]) == ("answered", "Yes, refund order 5512 in full.")
    kinds = await page.locator("#case-messages .message").evaluate_all(
        "items => items.map((i) => i.dataset.kind)"
    )
    assert kinds == ["clarification", "note", "answer"]


async def test_a_case_answered_by_another_operator_leaves_the_queue(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada, grace = stack.operators
    first = await open_console()
    second = await open_console()
    await first.sign_in_with_token(ada)
    await second.sign_in_with_token(grace)
    await wait_until(lambda: _online_is(stack, 2), "the relay to see both operators")
    ask = await stack.ask("Who takes the 3 pm delivery slot?")
    for console in (first, second):
        await expect(console.case_item("3 pm delivery")).to_be_visible()
    await first.case_item("3 pm delivery").locator("button").click()
    await second.case_item("3 pm delivery").locator("button").click()

    await second.page.get_by_label("Your answer").fill("Grace takes it.")
    await second.page.get_by_role("button", name="Send answer").click()
    assert (await ask.result())["answer"] == "Grace takes it."
    await expect(first.case_item("3 pm delivery")).to_have_count(0)
    await expect(first.page.locator("#case-messages .is-answer")).to_contain_text("Grace takes it.")
    await expect(first.page.get_by_role("button", name="Send answer")).to_be_disabled()


async def test_wrong_password_and_non_operator_token_are_refused_with_a_reason(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    page = console.page
    await page.goto(stack.console_url)
    await page.get_by_label("Email").fill(stack.operators[0].email)
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    error = page.locator("#sign-in-error")
    await expect(error).to_have_text("Sign-in failed: Invalid login credentials")
    console.expected_console_error("status of 400")  # the browser logs Auth's refusal

    not_operator = stack.devstack.keys.user_token(operator=False)
    await page.goto(f"{stack.console_url}#token={not_operator}")
    await expect(error).to_contain_text("this account is not an operator")
    assert "#token" not in page.url  # the token never lingers in the address bar
    await expect(page.locator("#workspace")).to_be_hidden()


async def _overflow(page: Page) -> list[str]:
    """Elements reaching past the right edge of the viewport, and the page's scroll width."""
    found: list[str] = await page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth
            const out = []
            if (document.documentElement.scrollWidth > width) {
                out.push(`page scrollWidth ${document.documentElement.scrollWidth} > ${width}`)
            }
            for (const e of document.querySelectorAll('body *')) {
                const r = e.getBoundingClientRect()
                if (r.width === 0 || e.closest('[hidden], .visually-hidden')) continue
                const name = `${e.tagName.toLowerCase()}#${e.id}.${e.className}`
                if (r.right > width + 0.5) out.push(`${name} right=${r.right}`)
            }
            return out
        }"""
    )
    return found


async def test_a_second_question_in_the_same_call_shows_the_calls_earlier_answer(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console(width=1280, height=1120)
    page = console.page
    await console.sign_in_with_password(stack.operators[0])
    await wait_until(lambda: _online_is(stack, 1), "the relay to see the operator")
    call = {
        "call_id": "call_7f3a9c",
        "caller_info": {"name": "Jo Example", "phone": "+44 20 7946 0000", "customer_id": "C-1042"},
    }
    first = await stack.ask(
        "Is order 4411 eligible for free returns?", priority=3, timeout_seconds=60, **call
    )
    item = console.case_item("free returns")
    await item.locator("button").click()
    await page.get_by_label("Your answer").fill("Yes, within 30 days of delivery.")
    await page.get_by_role("button", name="Send answer").click()
    assert (await first.result())["status"] == "answered"

    question = "The caller also wants the refund on a different card. May I change it?"
    second = await stack.ask(
        question,
        priority=4,
        urgency="high",
        timeout_seconds=45,
        context="Order 4411 paid by Visa ending 0019; the caller says that card was cancelled.",
        conversation_history=[
            {"role": "agent", "content": "Your return is free. Anything else?"},
            {"role": "user", "content": "Yes, can the refund go to my new Mastercard?"},
            {"role": "agent", "content": "One moment, I'm checking with a colleague."},
        ],
        **call,
    )
    item = console.case_item("different card")
    await item.locator("button").click()
    await expect(page.locator("#case-thread li")).to_have_count(1)
    await expect(page.locator("#case-thread")).to_contain_text("eligible for free returns")
    await expect(page.locator("#case-thread")).to_contain_text("Yes, within 30 days of delivery.")
    await expect(page.locator("#case-history li")).to_have_count(3)
    await expect(page.locator("#case-countdown")).to_have_class(re.compile(r"\bwaiting\b"))
    await page.get_by_label("Your answer").fill("Yes, refund to the new card after ID check.")
    await console.screenshot("console-waiting-voice-case", full_page=False)

    await page.get_by_role("button", name="Send answer").click()
    assert (await second.result())["answer"] == "Yes, refund to the new card after ID check."


async def test_without_the_supabase_js_bundle_the_page_says_how_to_install_it(
    stack: Stack, open_console: OpenConsole, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(console_module, "VENDOR_BUNDLE", tmp_path / "not-installed.js")
    console = await open_console()
    await console.page.goto(stack.console_url)
    problem = console.page.locator("#setup-problem")
    await expect(problem).to_be_visible()
    await expect(problem).to_contain_text("run scripts/install-console-deps")
    await expect(console.page.locator("#sign-in")).to_be_hidden()
    console.expected_console_error("status of 404")  # the browser logs the missing bundle


async def test_two_operators_answering_at_once_deliver_exactly_one_answer_and_the_other_is_told(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada, grace = stack.operators
    first, second = await open_console(), await open_console()
    await first.sign_in_with_token(ada)
    await second.sign_in_with_token(grace)
    await wait_until(lambda: _online_is(stack, 2), "the relay to see both operators")
    ask = await stack.ask("Can the caller keep the replacement and the original?")
    for console, text in ((first, "Ada: yes, keep both."), (second, "Grace: return the original.")):
        await console.case_item("replacement and the original").locator("button").click()
        await console.page.get_by_label("Your answer").fill(text)

    # Ada sends first, but her insert is held on its way until Grace's answer is committed:
    # both pressed Send before either saw the other's answer.
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        if route.request.method == "POST":
            held.set()
            await release.wait()
        await route.continue_()

    await first.page.route(re.compile(r".*/rest/v1/messages(\?.*)?$"), hold)
    await first.page.get_by_role("button", name="Send answer").click()
    await asyncio.wait_for(held.wait(), 10)
    await second.page.get_by_role("button", name="Send answer").click()
    assert (await ask.result())["answer"] == "Grace: return the original."
    release.set()

    await expect(first.page.locator("#answer-status")).to_have_text(
        "Another operator answered first; their answer was delivered and yours is kept on the case."
    )
    await expect(second.page.locator("#answer-status")).to_have_text(
        "Answer sent. The voice agent has it."
    )
    for console in (first, second):
        messages = console.page.locator("#case-messages .message")
        await expect(messages).to_have_count(2)
        await expect(messages.locator(".content")).to_have_text(
            ["Grace: return the original.", "Ada: yes, keep both."]
        )
        await expect(console.page.locator("#case-messages .is-answer .content")).to_have_text(
            "Grace: return the original."
        )


async def test_a_case_opened_while_the_console_was_cut_off_appears_after_it_reconnects(
    stack: Stack, open_console: OpenConsole
) -> None:
    console = await open_console()
    await console.sign_in_with_token(stack.operators[0])
    status = console.page.locator("#live-status")
    case_id = str(uuid.uuid4())

    async def open_case_while_down() -> None:
        # No Realtime server is running: the case_opened broadcast reaches nobody.
        await expect(status).not_to_have_attribute("data-state", "live")
        await stack.db_fetchrow(
            "select hitl_open_case($1::jsonb)",
            json.dumps(
                {
                    "case_id": case_id,
                    "question": "Opened during the outage: is the depot open tomorrow?",
                    "mcp_session_id": "outage",
                    "retell_call_id": "call_outage",
                    "retell_agent_id": "agent_outage",
                    "timeout_seconds": 60,
                }
            ),
        )

    await stack.restart_devstack(open_case_while_down)
    await expect(status).to_have_attribute("data-state", "live", timeout=20_000)
    item = console.page.locator(f'.case-item[data-case-id="{case_id}"]')
    await expect(item).to_contain_text("Opened during the outage")
    await expect(item).to_have_class(re.compile(r"\bis-voice\b.*\bwaiting\b"))
    # What the browser logged while the server was down:
    console.expected_console_error("ERR_CONNECTION_REFUSED")
    console.expected_console_error("WebSocket connection to")


async def test_a_password_session_survives_a_reload_and_sign_out_ends_it(
    stack: Stack, open_console: OpenConsole
) -> None:
    ada = stack.operators[0]
    console = await open_console()
    page = console.page
    await console.sign_in_with_password(ada)
    await page.reload()
    await console.wait_live(ada)
    await expect(page.locator("#operator-name")).to_have_text(ada.email)

    await page.get_by_role("button", name="Sign out").click()
    sign_in = page.get_by_role("heading", name="Sign in as an operator")
    await expect(sign_in).to_be_visible()
    await page.reload()
    await expect(sign_in).to_be_visible()
    await expect(page.locator("#workspace")).to_be_hidden()


async def test_a_question_asked_with_nobody_on_duty_waits_in_the_queue_for_who_comes_later(
    stack: Stack, open_console: OpenConsole
) -> None:
    await wait_until(lambda: _online_is(stack, 0), "the relay to see nobody on duty")
    question = "Nobody on duty: can the courier come back tomorrow?"
    asked = await stack.ask(question, timeout_seconds=30, priority=4)
    result = await asked.result()
    assert result["status"] == "no_operator"
    assert result["case_id"]

    console = await open_console()  # an operator comes on duty afterwards
    await console.sign_in_with_token(stack.operators[0])
    item = console.case_item(question)
    await expect(item).to_be_visible()
    await item.locator("button").click()
    await expect(console.page.locator("#case-countdown-label")).to_have_text(
        "Asked while nobody was on duty"
    )
    await console.page.get_by_label("Your answer").fill("Yes, tomorrow between 9 and 12.")
    await console.page.get_by_role("button", name="Send answer").click()
    await expect(item).to_have_count(0)

    async with connect(stack.mcp_url, API_KEY) as client:
        late = await client.call_tool("get_human_answer", {"case_id": result["case_id"]})
    assert late.structured_content is not None
    assert (late.structured_content["status"], late.structured_content["answer"]) == (
        "answered",
        "Yes, tomorrow between 9 and 12.",
    )
