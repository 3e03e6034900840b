"""Where an answer's frame was read off a Realtime socket, kept per case until its tool result
is written (the relay's own share of a delivery: see `hitl_relay.hops`).

The reader is one task per socket and hands a frame to the channel callbacks without awaiting,
so "the frame being dispatched now" is a module-level instant; `answer_frame(case_id)` keeps it
for the case whose answer it carried until that case's result is written. A result that never
goes out (the caller left) is forgotten after `PENDING_TTL_S`.
"""

from __future__ import annotations

import time
from collections import OrderedDict

PENDING_TTL_S = 60.0
PENDING_MAX = 100_000

_frame_at = 0.0
_pending: OrderedDict[str, float] = OrderedDict()


def frame_read() -> None:
    """A frame was just read off a Realtime socket (called before it is parsed)."""
    global _frame_at
    _frame_at = time.perf_counter()


def answer_frame(case_id: str) -> None:
    """The frame being dispatched now carries the answer of `case_id`."""
    if _frame_at == 0.0:
        return  # not read through a stamped socket (tests, another backend)
    now = time.perf_counter()
    while _pending:
        oldest = next(iter(_pending.values()))
        if now - oldest < PENDING_TTL_S and len(_pending) < PENDING_MAX:
            break
        _pending.popitem(last=False)
    _pending.setdefault(case_id, _frame_at)


def waiting() -> bool:
    """Some answer's frame was read and its result is not written yet."""
    return bool(_pending)


def take(case_id: str) -> float | None:
    """When the answer frame of `case_id` was read (perf_counter), once; None if unknown."""
    return _pending.pop(case_id, None)
