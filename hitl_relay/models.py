"""The tool's input and output at the edge: pydantic models, with descriptions for the agent.

`AskHumanRequest` is what a voice agent sends to `ask_human` (MCP or the Retell webhook);
`AskResult` is what it gets back. `GetCallHistoryRequest` / `CallHistory` are the input and
output of `get_call_history` (the call's thread of questions, answers and clarifications).
`parse_ask_request` turns any validation failure into an `InvalidRequest` whose message names
the field and the rule ("priority: must be between 1 and 5"), never pydantic's internals.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hitl_relay.errors import InvalidRequest
from hitl_relay.results import (
    AskResult,
    CallHistory,
    Status,
    ThreadExchange,
    ThreadItem,
)
from hitl_relay.rules import (
    CALLER_INFO_MAX_BYTES,
    CONTEXT_MAX,
    HISTORY_MAX_TURNS,
    ID_MAX,
    ID_RULE,
    JSON_MAX_DEPTH,
    NON_FINITE_RULE,
    OPTION_MAX_CHARS,
    OPTIONS_MAX,
    OPTIONS_MIN,
    QUESTION_MAX,
    SKILL_MAX_CHARS,
    SKILLS_MAX,
    TIMEOUT_DEFAULT,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    TURN_CONTENT_MAX,
    DuplicateKeyError,
    call_id_of,
    invalid_request_from,
    loads_strict,
    option_rule,
    printable_id,
    value_problem,
)

# The results and the rules live in their own modules; re-exported here, the one import path
# the edges, the core and the tests use.
__all__ = [
    "ASK_HUMAN_DESCRIPTION",
    "CALLER_INFO_MAX_BYTES",
    "CONTEXT_MAX",
    "GET_CALL_HISTORY_DESCRIPTION",
    "GET_HUMAN_ANSWER_DESCRIPTION",
    "HISTORY_MAX_TURNS",
    "ID_MAX",
    "ID_RULE",
    "JSON_MAX_DEPTH",
    "NON_FINITE_RULE",
    "OPTIONS_MAX",
    "OPTIONS_MIN",
    "OPTION_MAX_CHARS",
    "QUESTION_MAX",
    "SKILLS_MAX",
    "SKILL_MAX_CHARS",
    "TIMEOUT_DEFAULT",
    "TIMEOUT_MAX",
    "TIMEOUT_MIN",
    "TURN_CONTENT_MAX",
    "AskHumanRequest",
    "AskResult",
    "CallHistory",
    "DuplicateKeyError",
    "GetCallHistoryRequest",
    "GetHumanAnswerRequest",
    "Status",
    "ThreadExchange",
    "ThreadItem",
    "Turn",
    "call_id_of",
    "invalid_request_from",
    "loads_strict",
    "option_rule",
    "parse_ask_request",
    "parse_get_answer_request",
    "parse_get_call_history_request",
    "printable_id",
    "tool_schema",
    "value_problem",
]

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
- needs_info: the colleague needs one more fact before answering; `clarification` holds their \
question. Ask the caller that question, then call ask_human again with `case_id` set to this \
result's case_id and the caller's reply (verbatim) as `question`. The same colleague sees the \
reply in the same case and answers there; the follow-up call waits with its own time limit.
- timeout: nobody answered in time; say `message` to the caller. The case stays open: call \
get_human_answer with `case_id` later in the call to pick up a late answer.
- no_operator: no colleague is on duty right now; say `message` to the caller. The question \
is recorded all the same (case_id) for the colleagues who come on duty: call get_human_answer \
with `case_id` later in the call to pick up their answer.
- platform_unreachable: the colleagues' system cannot be reached; say `message`.
- unclear_answer: the colleague could not give a usable answer; say `message`.
If you pass `options` (2-6 short answers such as "approve", "deny"), the colleague can answer \
with one tap; an answered result then carries `option_index` (0-based) and `option` (its text) \
so you can branch on it; `option_index` is null when they typed a free answer instead.
Never invent an answer when the status is not `answered`. `deadline_s` is this call's time \
limit and `waited_ms` how long it waited.

Every question in one call (same call_id) belongs to the call's thread: the colleague sees the \
earlier questions and answers of this call with each new question, so do not repeat them in \
`context`. get_call_history returns the thread."""

GET_HUMAN_ANSWER_DESCRIPTION = """\
Check whether a colleague has answered an earlier ask_human question that timed out (or was \
recorded with no colleague on duty).

Pass the `case_id` from that ask_human result. Returns at once: `status` is answered (with \
`answer`), unclear_answer, needs_info (the colleague asked a question back, in \
`clarification`: ask the caller, then call ask_human with this case_id and the caller's reply \
as question), or pending (no answer yet; you may check again later in the call)."""

GET_CALL_HISTORY_DESCRIPTION = """\
The questions already asked to colleagues during this call, with their answers.

Pass the current call's `call_id`. Returns at once, oldest first: each question, its status \
(open, answered, expired), the answer if there is one, and the exchanges on it (questions the \
colleague asked back and the caller's replies). Use it to avoid asking the same thing twice or \
to recall an earlier answer; ask_human already shows this thread to the colleague."""


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


_Model = TypeVar("_Model", bound=BaseModel)


def _alias_conflict(model: type[BaseModel], arguments: Mapping[str, Any]) -> InvalidRequest | None:
    """A field given under both its name and its alias: which one counts would depend on the
    reader (the rate limiter read one, the tool the other), so it is refused."""
    for name, info in model.model_fields.items():
        if info.alias and info.alias != name and name in arguments and info.alias in arguments:
            return InvalidRequest(name, f"given twice (as {name} and {info.alias}): give it once")
    return None


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
            f"How long to wait for the colleague, in seconds ({TIMEOUT_MIN}-{TIMEOUT_MAX}; default "
            f"{TIMEOUT_DEFAULT}). 30-60 suits a "
            "live call; keep the caller engaged meanwhile. Each call, follow-ups included, "
            "waits at most this long."
        ),
    )
    case_id: str | None = Field(
        None,
        alias="caseId",
        description=(
            "Only for a follow-up after status needs_info: the case_id of that result. Then "
            "`question` is the caller's reply to the colleague's question, and it is added to "
            "the same case (the colleague answers there). Leave it out for a new question."
        ),
    )

    options: list[str] | None = Field(
        None,
        description=(
            f"Optional one-tap answers for the colleague, {OPTIONS_MIN} to {OPTIONS_MAX} short "
            f"distinct texts of at most {OPTION_MAX_CHARS} characters, e.g. ['approve', 'deny', "
            "'approve up to 50 euros']. They may still type a free answer."
        ),
    )
    skills: list[str] | None = Field(
        None,
        description=(
            f"Optional skills or teams the answering colleague needs (at most {SKILLS_MAX} names, "
            "e.g. ['billing', 'german']). Only colleagues holding all of them are offered the case."
        ),
    )

    @field_validator("options")
    @classmethod
    def _options(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else option_rule(value)

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) > SKILLS_MAX or any(
            not 1 <= len(v.strip()) <= SKILL_MAX_CHARS for v in value
        ):
            raise ValueError(
                f"must be at most {SKILLS_MAX} names of 1 to {SKILL_MAX_CHARS} characters"
            )
        return sorted({v.strip().lower() for v in value})

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # Postgres text and jsonb cannot hold U+0000: refused here, naming the field, instead of
        # failing on the platform (which would count against the circuit breaker).
        problem = value_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("case_id")
    @classmethod
    def _case_uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(UUID(value))
        except ValueError:
            raise ValueError("must be a case id (a UUID)") from None

    @field_validator("session_id", "call_id", "agent_id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        return printable_id(value)

    @field_validator("caller_info")
    @classmethod
    def _small_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
        if size > CALLER_INFO_MAX_BYTES:
            raise ValueError(f"must be at most 16 KB as JSON (got {size} bytes)")
        return value


class GetCallHistoryRequest(BaseModel):
    """Input of the `get_call_history` tool."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, loc_by_alias=False)

    call_id: str = _id_field("callId", "The id of the current phone call ({{call_id}} in Retell).")

    @field_validator("call_id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        return printable_id(value)


class GetHumanAnswerRequest(BaseModel):
    """Input of the `get_human_answer` tool."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, loc_by_alias=False)

    case_id: str = Field(
        alias="caseId",
        min_length=1,
        max_length=64,
        description="The case_id returned by an earlier ask_human call.",
    )


def _parse_arguments(model: type[_Model], arguments: object) -> _Model:
    """Validate raw tool arguments as `model`; raise `InvalidRequest` naming the field and the
    rule."""
    if not isinstance(arguments, Mapping):
        raise InvalidRequest("arguments", "must be an object")
    conflict = _alias_conflict(model, arguments)
    if conflict is not None:
        raise conflict
    try:
        return model.model_validate(dict(arguments))
    except ValidationError as e:
        raise invalid_request_from(e) from None


def parse_ask_request(arguments: object) -> AskHumanRequest:
    return _parse_arguments(AskHumanRequest, arguments)


def parse_get_call_history_request(arguments: object) -> GetCallHistoryRequest:
    return _parse_arguments(GetCallHistoryRequest, arguments)


def parse_get_answer_request(arguments: object) -> GetHumanAnswerRequest:
    return _parse_arguments(GetHumanAnswerRequest, arguments)


def tool_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema as agents see it: snake_case names (camelCase aliases are accepted
    too), `$ref`s inlined, since handshake-era MCP clients know only type/properties/required.

    Made once per model (the MCP SDK lists the tools on every request to check arguments, and
    pydantic's schema generation costs about a millisecond); callers get their own copy.
    """
    return copy.deepcopy(_tool_schema(model))


@functools.cache
def _tool_schema(model: type[BaseModel]) -> dict[str, Any]:
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
