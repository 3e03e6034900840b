"""What the tools return to the agent: `AskResult` (`ask_human`, `get_human_answer`) and
`CallHistory` (`get_call_history`, the call's thread). `models` re-exports them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal[
    "answered",
    "timeout",
    "no_operator",
    "platform_unreachable",
    "unclear_answer",
    "needs_info",
    "pending",
]


class AskResult(BaseModel):
    """What `ask_human` and `get_human_answer` return to the agent."""

    status: Status = Field(
        description=(
            "answered | needs_info | timeout | no_operator | platform_unreachable | "
            "unclear_answer, and pending (get_human_answer only: no answer yet)."
        )
    )
    answer: str | None = Field(
        None, description="The colleague's answer when status is answered, else null."
    )
    clarification: str | None = Field(
        None,
        description=(
            "When status is needs_info: the colleague's question for the caller. Ask it, then "
            "call ask_human with case_id and the caller's reply as question."
        ),
    )
    case_id: str | None = Field(
        None,
        description=(
            "The case in the colleagues' system; pass it to get_human_answer later, or to "
            "ask_human as case_id for a follow-up after needs_info."
        ),
    )
    waited_ms: int = Field(0, ge=0, description="How long this call waited, in milliseconds.")
    deadline_s: int | None = Field(
        None,
        ge=0,
        description="This call's time limit in seconds (every call, follow-ups too, has its own).",
    )
    message: str = Field(
        description=(
            "What to tell the caller: the answer, the colleague's question (needs_info), or "
            "the fallback line for the status."
        )
    )
    option_index: int | None = Field(
        None,
        ge=0,
        description="When answered with one of your `options`: its 0-based index, else null.",
    )
    option: str | None = Field(
        None, description="When answered with one of your `options`: its text, else null."
    )
    answered_by: str | None = Field(
        None, description="The id of the colleague who answered (for your records), else null."
    )

    def text(self) -> str:
        """The tool result's text content: what to say, plus the facts an agent acts on."""
        if self.status == "answered" and self.answer is not None:
            if self.option_index is not None:
                return f"{self.answer} [option_index: {self.option_index}]"
            return self.answer
        if self.status == "needs_info" and self.clarification is not None:
            return (
                f"My colleague needs more information: {self.clarification} "
                f"[status: needs_info; case_id: {self.case_id}] Ask the caller this, then call "
                f"ask_human again with case_id {self.case_id} and the caller's reply as question."
            )
        parts = [self.message, f"[status: {self.status}"]
        if self.case_id:
            parts[-1] += f"; case_id: {self.case_id}"
        parts[-1] += "]"
        return " ".join(parts)


class ThreadExchange(BaseModel):
    """One message on a case of the call's thread."""

    sender_type: Literal["human", "ai", "system"] = Field(
        description="human: the colleague; ai: this agent (the caller's replies); system."
    )
    kind: Literal["answer", "clarification", "cannot_answer", "note"] = Field(
        description="answer, clarification (a question back), cannot_answer, or note."
    )
    content: str
    created_at: str = Field(description="When it was sent (ISO 8601).")


class ThreadItem(BaseModel):
    """One question of the call's thread."""

    case_id: str
    question: str
    status: str = Field(description="open, answered, expired, cancelled or closed.")
    asked_at: str = Field(description="When it was first asked (ISO 8601).")
    answer: str | None = Field(None, description="The colleague's answer, if any.")
    answer_kind: Literal["answer", "clarification", "cannot_answer", "note"] | None = Field(
        None, description="cannot_answer when the colleague could not answer (answer = note)."
    )
    answered_at: str | None = None
    exchanges: list[ThreadExchange] = Field(
        default_factory=list, description="Every message on this question, oldest first."
    )


class CallHistory(BaseModel):
    """What `get_call_history` returns to the agent."""

    status: Literal["ok", "platform_unreachable"] = Field(
        description="ok, or platform_unreachable (the history cannot be read right now)."
    )
    call_id: str
    entries: list[ThreadItem] = Field(
        default_factory=list, description="The call's questions, oldest first."
    )
    message: str = Field(description="A one-line summary.")

    def text(self) -> str:
        """The thread as lines an agent reads: each question, its exchanges, its answer."""
        if self.status != "ok" or not self.entries:
            return self.message
        lines = [self.message]
        for number, entry in enumerate(self.entries, start=1):
            lines.append(
                f"{number}. Question: {entry.question} (status: {entry.status}; "
                f"case_id: {entry.case_id})"
            )
            for exchange in entry.exchanges:
                if exchange.kind == "clarification" and exchange.sender_type == "human":
                    lines.append(f"   Colleague asked: {exchange.content}")
                elif exchange.sender_type == "ai":
                    lines.append(f"   Caller replied: {exchange.content}")
            if entry.answer is not None:
                label = (
                    "Colleague could not answer"
                    if entry.answer_kind == "cannot_answer"
                    else "Answer"
                )
                lines.append(f"   {label}: {entry.answer}")
        return "\n".join(lines)
