"""One-tap answers through the ports, against every adapter: the case keeps the agent's options,
bad options are refused naming the field, and an answer that chose one carries its index and
text, live on the channel and in the catch-up read."""

from __future__ import annotations

import anyio
import pytest
from contract_support import ContractPorts
from postgrest.exceptions import APIError
from test_ports_contract import next_message, open_request

from hitl_relay.errors import InvalidRequest
from hitl_relay.models import OPTION_MAX_CHARS, OPTIONS_MAX, OPTIONS_MIN

OPTIONS = ["approve", "deny", "approve up to 50 euros"]


@pytest.mark.parametrize(
    "options",
    [
        ["only one"][: OPTIONS_MIN - 1],
        [f"option {n}" for n in range(OPTIONS_MAX + 1)],
        ["yes", "x" * (OPTION_MAX_CHARS + 1)],
        ["yes", "YES"],
        ["yes", "  "],
    ],
    ids=["too-few", "too-many", "too-long", "duplicate", "empty"],
)
async def test_bad_options_are_refused_naming_the_field(
    ports: ContractPorts, options: list[str]
) -> None:
    request = open_request(options=options)
    with pytest.raises(InvalidRequest) as e:
        await ports.store.open_case(request)
    assert e.value.field == "options"
    assert await ports.store.reply(request.case_id) is None


async def test_an_answer_choosing_an_option_carries_its_index_and_text(
    ports: ContractPorts,
) -> None:
    opened = await ports.store.open_case(open_request(options=OPTIONS))
    async with ports.channel.subscribe(opened.case_id) as sub:
        message_id = await ports.operator.answer(opened.case_id, "", option_index=2)
        live = await next_message(sub)
    assert (live.message_id, live.is_answer) == (message_id, True)
    assert (live.option_index, live.option, live.content) == (2, OPTIONS[2], OPTIONS[2])
    answer = await ports.store.reply(opened.case_id)
    assert answer is not None
    assert (answer.option_index, answer.option, answer.content) == (2, OPTIONS[2], OPTIONS[2])
    assert answer.sender_id is not None


async def test_a_free_answer_to_a_case_with_options_has_no_option(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request(options=OPTIONS))
    await ports.operator.answer(opened.case_id, "Only 20 euros, sorry")
    answer = await ports.store.reply(opened.case_id)
    assert answer is not None
    assert (answer.option_index, answer.option) == (None, None)
    assert answer.content == "Only 20 euros, sorry"


async def test_an_option_index_outside_the_options_is_refused(ports: ContractPorts) -> None:
    opened = await ports.store.open_case(open_request(options=OPTIONS))
    # The memory twin raises the relay's error; the operators' supabase-py client PostgREST's.
    with pytest.raises((InvalidRequest, APIError)) as e:
        await ports.operator.answer(opened.case_id, "", option_index=len(OPTIONS))
    assert "option_index" in str(e.value)
    with anyio.fail_after(1):
        assert await ports.store.reply(opened.case_id) is None
