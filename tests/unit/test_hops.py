"""The relay's own hop (hitl_relay/hops.py, adapters/hop_stamps.py): a frame stamped when read,
the answer's case noted when its frame is dispatched, closed when response bytes naming the case
are written."""

from __future__ import annotations

import json
from typing import Any

from hitl_relay import hops
from hitl_relay.adapters import hop_stamps


def hop_count() -> float:
    for metric in hops.answer_hop_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return sample.value
    raise AssertionError("no _count sample")


async def test_a_result_naming_the_case_closes_its_hop_once() -> None:
    case_id = "0b9e2c4e-1d7a-4a57-9a43-6f1d2c3b4a5e"
    before = hop_count()
    hop_stamps.frame_read()
    hop_stamps.answer_frame(case_id)
    body = json.dumps({"result": {"structuredContent": {"case_id": case_id, "answer": "yes"}}})
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {"type": "http.response.body", "body": b"event: message\r\ndata: " + body.encode()}
        )
        await send({"type": "http.response.body", "body": body.encode()})  # named again

    async def send(message: Any) -> None:
        sent.append(message)

    await hops.AnswerHopMiddleware(app)({"type": "http"}, None, send)
    assert len(sent) == 3  # every message passed on unchanged
    assert hop_count() == before + 1


def test_bytes_naming_another_case_leave_the_hop_open() -> None:
    waiting = "11111111-2222-4333-8444-555555555555"
    before = hop_count()
    hop_stamps.frame_read()
    hop_stamps.answer_frame(waiting)
    hops.result_bytes(b'{"case_id": "99999999-2222-4333-8444-555555555555"}')
    assert hop_count() == before
    hops.result_bytes(b'{"case_id": "' + waiting.encode() + b'"}')
    assert hop_count() == before + 1
