"""The tool's input and output at the edge: pydantic models, with descriptions for the agent.

`AskHumanRequest` is what a voice agent sends to `ask_human` (MCP or the Retell webhook);
`AskResult` is what it gets back. `parse_ask_request` turns any validation failure into an
`InvalidRequest` whose message names the field and the rule ("priority: must be between 1 and
5"), never pydantic's internals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hitl_relay.errors import InvalidRequest

QUESTION_MAX = 2000
CONTEXT_MAX = 8000
ID_MAX = 128
CALLER_INFO_MAX_BYTES = 16 * 1024
HISTORY_MAX_TURNS = 200
TURN_CONTENT_MAX = 8000
TIMEOUT_MIN = 5
TIMEOUT_MAX = 600

ASK_HUMAN_DESCRIPTION = """\
Ask a human colleague (an operator) a question during a live call and wait for the answer.

Call this when the caller needs something you cannot answer yourself: a decision, an exception \
to a policy, facts you do not have, or anything you would otherwise guess. Do not call it for \
things you can answer from your instructions.

Before calling, tell the caller you are checking with a colleague ("Let me quickly check that \
with a colleague, one moment"), and keep them engaged while you wait. The call blocks until a \
colleague answers or the time limit passes (default 45 seconds).

The result's `status` says what happened:
- answered: `answer` holds the colleague's answer; relay it to the caller in your own words.
- timeout: nobody answered in time; say `message` to the caller. The case stays open: call \
get_human_answer with `case_id` later in the call to pick up a late answer.
- no_operator: no colleague is available right now; say `message` to the caller.
- platform_unreachable: the colleagues' system cannot be reached; say `message`.
- unclear_answer: the colleague could not give a usable answer; say `message`.
Never invent an answer when the status is not `answered`."""

GET_HUMAN_ANSWER_DESCRIPTION = """\
Check whether a colleague has answered an earlier ask_human question that timed out.

Pass the `case_id` from that ask_human result. Returns at once: `status` is answered (with \
`answer`), unclear_answer, or pending (no answer yet; you may check again later in the call)."""


class Turn(BaseModel):
    """One turn of the conversation so far."""

    model_config = ConfigDict(extra="ignore")

    role: Annotated[
        str,
        Field(min_length=1, max_length=64, description="Who spoke: caller, agent, system."),
    ]
    content: Annotated[
        str, Field(max_length=TURN_CONTENT_MAX, description="What was said, verbatim.")
    ]


def _id_field(alias: str, description: str) -> Any:
    return Field(alias=alias, min_length=1, max_length=ID_MAX, description=description)


class AskHumanRequest(BaseModel):
    """Input of the `ask_human` tool. snake_case names, camelCase aliases accepted too."""

    model_config = ConfigDict(
        validate_by_name=True,
        validate_by_alias=True,
        loc_by_alias=False,
        extra="ignore",
        frozen=True,
    )

    question: str = Field(
        min_length=1,
        max_length=QUESTION_MAX,
        description=(
            "The question for the colleague, self-contained and specific (they have not heard "
            "the call). Example: 'Caller (order 4411) asks whether we can deliver on Saturday "
            "to a different address. Allowed?'"
        ),
    )
    context: str | None = Field(
        None,
        max_length=CONTEXT_MAX,
        description="Background the colleague needs to answer: account, order, what was tried.",
    )
    session_id: str = _id_field(
        "sessionId", "An identifier of this conversation session (the call's session id)."
    )
    call_id: str = _id_field(
        "callId",
        "The id of the current phone call ({{call_id}} in Retell). Asking the same question "
        "again in the same call continues the same case instead of opening a new one.",
    )
    agent_id: str = _id_field("agentId", "The id of the voice agent asking ({{agent_id}}).")
    caller_info: dict[str, Any] = Field(
        default_factory=dict,
        alias="callerInfo",
        description="What is known about the caller (name, number, customer id), as an object.",
    )
    priority: int = Field(3, ge=1, le=5, description="1 (lowest) to 5 (most important). Default 3.")
    urgency: Literal["low", "medium", "high"] = Field(
        "medium", description="How soon the caller needs the answer. Default medium."
    )
    conversation_history: list[Turn] = Field(
        default_factory=list,
        alias="conversationHistory",
        max_length=HISTORY_MAX_TURNS,
        description="The recent turns of the call, oldest first, so the colleague has context.",
    )
    timeout_seconds: int | None = Field(
        None,
        alias="timeoutSeconds",
        ge=TIMEOUT_MIN,
        le=TIMEOUT_MAX,
        description=(
            "How long to wait for the colleague, in seconds (5-600; default 45). 30-60 suits a "
            "live call; keep the caller engaged meanwhile."
        ),
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("session_id", "call_id", "agent_id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError(f"must be 1 to {ID_MAX} printable characters")
        return value

    @field_validator("caller_info")
    @classmethod
    def _small_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
        if size > CALLER_INFO_MAX_BYTES:
            raise ValueError(f"must be at most 16 KB as JSON (got {size} bytes)")
        return value


class GetHumanAnswerRequest(BaseModel):
    """Input of the `get_human_answer` tool."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, loc_by_alias=False)

    case_id: str = Field(
        alias="caseId",
        min_length=1,
        max_length=64,
        description="The case_id returned by an earlier ask_human call.",
    )


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
            "answered | timeout | no_operator | platform_unreachable | unclear_answer, and "
            "pending (get_human_answer only: no answer yet)."
        )
    )
    answer: str | None = Field(
        None, description="The colleague's answer when status is answered, else null."
    )
    case_id: str | None = Field(
        None,
        description="The case in the colleagues' system; pass it to get_human_answer later.",
    )
    waited_ms: int = Field(0, ge=0, description="How long this call waited, in milliseconds.")
    message: str = Field(
        description="What to tell the caller: the answer, or the fallback line for the status."
    )

    def text(self) -> str:
        """The tool result's text content: what to say, plus the facts an agent acts on."""
        if self.status == "answered" and self.answer is not None:
            return self.answer
        parts = [self.message, f"[status: {self.status}"]
        if self.case_id:
            parts[-1] += f"; case_id: {self.case_id}"
        parts[-1] += "]"
        return " ".join(parts)


# Rules stated once per field, so every range error on it reads the same.
_FIELD_RULES = {
    "question": f"must be 1 to {QUESTION_MAX} characters",
    "context": f"must be at most {CONTEXT_MAX} characters",
    "session_id": f"must be 1 to {ID_MAX} printable characters",
    "call_id": f"must be 1 to {ID_MAX} printable characters",
    "agent_id": f"must be 1 to {ID_MAX} printable characters",
    "priority": "must be between 1 and 5",
    "urgency": "must be one of low, medium, high",
    "timeout_seconds": f"must be between {TIMEOUT_MIN} and {TIMEOUT_MAX}",
    "case_id": "must be a case id (a UUID)",
}
_RANGE_TYPES = {
    "greater_than_equal",
    "less_than_equal",
    "greater_than",
    "less_than",
    "string_too_short",
    "string_too_long",
    "int_parsing",
    "int_type",
    "int_from_float",
    "literal_error",
    "string_type",
    "enum",
}


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "arguments"


def _rule(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    loc = tuple(err.get("loc", ()))
    if kind == "missing":
        return "is required"
    if len(loc) == 1 and str(loc[0]) in _FIELD_RULES and kind in _RANGE_TYPES:
        return _FIELD_RULES[str(loc[0])]
    if kind == "value_error":
        return str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    fixed = {
        "string_too_short": "must not be empty",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    return str(err.get("msg", "is invalid")).lower()


def invalid_request_from(error: ValidationError) -> InvalidRequest:
    """One `InvalidRequest` for a pydantic error: the first problem, all of them in `problems`."""
    problems = [(_location(tuple(e["loc"])), _rule(e)) for e in error.errors()]
    if not problems:  # pragma: no cover - pydantic always reports at least one
        problems = [("arguments", "are invalid")]
    return InvalidRequest(problems[0][0], problems[0][1], also=problems[1:])


def parse_ask_request(arguments: object) -> AskHumanRequest:
    """Validate raw tool arguments; raise `InvalidRequest` naming the field and the rule."""
    if not isinstance(arguments, Mapping):
        raise InvalidRequest("arguments", "must be an object")
    try:
        return AskHumanRequest.model_validate(dict(arguments))
    except ValidationError as e:
        raise invalid_request_from(e) from None


def parse_get_answer_request(arguments: object) -> GetHumanAnswerRequest:
    if not isinstance(arguments, Mapping):
        raise InvalidRequest("arguments", "must be an object")
    try:
        return GetHumanAnswerRequest.model_validate(dict(arguments))
    except ValidationError as e:
        raise invalid_request_from(e) from None


def tool_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema as agents see it: snake_case names (camelCase aliases are accepted
    too), `$ref`s inlined, since handshake-era MCP clients know only type/properties/required.
    """
    schema = model.model_json_schema(by_alias=False)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
