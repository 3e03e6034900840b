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
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hitl_relay.errors import InvalidRequest

QUESTION_MAX = 2000
CONTEXT_MAX = 8000
ID_MAX = 128
CALLER_INFO_MAX_BYTES = 16 * 1024
HISTORY_MAX_TURNS = 200
TURN_CONTENT_MAX = 8000
# A call's time limit in seconds: the bounds' one home (the settings, the CLI, the memory twin
# import them; hitl_open_case and hitl_continue_case in SQL are tested against them).
TIMEOUT_MIN = 5
TIMEOUT_MAX = 600
TIMEOUT_DEFAULT = 45
# The id rule (session, call and agent ids), as the SQL's `hitl_id` states it.
ID_RULE = f"must be 1 to {ID_MAX} printable characters"
# One-tap answers: the bounds' one home (hitl_option_bounds() in SQL is tested against them).
OPTIONS_MIN = 2
OPTIONS_MAX = 6
OPTION_MAX_CHARS = 80
SKILLS_MAX = 8
SKILL_MAX_CHARS = 64

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


# Deeper nesting than any caller description needs; deeper JSON is refused, never walked
# partly (a check that stops at some depth lets what lies below reach Postgres).
JSON_MAX_DEPTH = 32
NON_FINITE_RULE = "must hold only finite numbers (no NaN, Infinity, or values such as 1e400)"


def value_problem(value: object) -> str | None:
    """Why `value` (decoded JSON) cannot be stored in Postgres text/jsonb, or None.

    Walks every key and value iteratively, so no depth escapes it: U+0000 in any string
    (Postgres text and jsonb cannot hold it), a non-finite float (NaN, Infinity, or 1e400,
    which JSON decoders turn into infinity), nesting deeper than JSON_MAX_DEPTH.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL (U+0000) characters"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return NON_FINITE_RULE
        elif isinstance(item, Mapping | list | tuple):
            if depth >= JSON_MAX_DEPTH:
                return f"must be nested at most {JSON_MAX_DEPTH} levels deep"
            if isinstance(item, Mapping):
                for k, v in item.items():
                    stack.append((k, depth + 1))
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (readers disagree on which one counts)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key[:64]!r} in a JSON object")
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads_strict(data: bytes | str) -> Any:
    """`json.loads` refusing duplicate keys at any depth (DuplicateKeyError); what the relay
    reads itself (the rate limiter's call ids, the Retell body) so it never reads a body in a
    way the tool would read differently. Raises ValueError (or RecursionError) on bad JSON."""
    return json.loads(data, object_pairs_hook=_no_duplicates)


def _alias_conflict(model: type[BaseModel], arguments: Mapping[str, Any]) -> InvalidRequest | None:
    """A field given under both its name and its alias: which one counts would depend on the
    reader (the rate limiter read one, the tool the other), so it is refused."""
    for name, info in model.model_fields.items():
        if info.alias and info.alias != name and name in arguments and info.alias in arguments:
            return InvalidRequest(name, f"given twice (as {name} and {info.alias}): give it once")
    return None


def call_id_of(arguments: Mapping[str, Any]) -> str | None:
    """The call id the tool will use for these arguments (None when it will refuse them)."""
    if "call_id" in arguments and "callId" in arguments:
        return None
    value = arguments.get("call_id", arguments.get("callId"))
    return value if isinstance(value, str) and value else None


def option_rule(options: list[str]) -> list[str]:
    """The options trimmed, or ValueError naming the rule (the tool's and the memory twin's
    check; `hitl_options` in SQL applies the same bounds)."""
    if not OPTIONS_MIN <= len(options) <= OPTIONS_MAX:
        raise ValueError(f"must have {OPTIONS_MIN} to {OPTIONS_MAX} items (got {len(options)})")
    cleaned = [v.strip() for v in options]
    for number, text in enumerate(cleaned):
        if not text:
            raise ValueError(f"item {number} must not be empty")
        if len(text) > OPTION_MAX_CHARS:
            raise ValueError(f"item {number} must be at most {OPTION_MAX_CHARS} characters")
        if text.lower() in (t.lower() for t in cleaned[:number]):
            raise ValueError(f"item {number} repeats an earlier option")
    return cleaned


def printable_id(value: str) -> str:
    """`value` if it is an id (`ID_RULE`: not blank, printable, at most `ID_MAX` characters)."""
    if not value.strip() or len(value) > ID_MAX or not value.isprintable():
        raise ValueError(ID_RULE)
    return value


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


# Rules stated once per field, so every range error on it reads the same.
_FIELD_RULES = {
    "question": f"must be 1 to {QUESTION_MAX} characters",
    "context": f"must be at most {CONTEXT_MAX} characters",
    "session_id": ID_RULE,
    "call_id": ID_RULE,
    "agent_id": ID_RULE,
    "priority": "must be between 1 and 5",
    "urgency": "must be one of low, medium, high",
    "timeout_seconds": f"must be between {TIMEOUT_MIN} and {TIMEOUT_MAX}",
    "case_id": "must be a case id (a UUID)",
    "options": f"must have {OPTIONS_MIN} to {OPTIONS_MAX} items",
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
    conflict = _alias_conflict(AskHumanRequest, arguments)
    if conflict is not None:
        raise conflict
    try:
        return AskHumanRequest.model_validate(dict(arguments))
    except ValidationError as e:
        raise invalid_request_from(e) from None


def parse_get_call_history_request(arguments: object) -> GetCallHistoryRequest:
    if not isinstance(arguments, Mapping):
        raise InvalidRequest("arguments", "must be an object")
    conflict = _alias_conflict(GetCallHistoryRequest, arguments)
    if conflict is not None:
        raise conflict
    try:
        return GetCallHistoryRequest.model_validate(dict(arguments))
    except ValidationError as e:
        raise invalid_request_from(e) from None


def parse_get_answer_request(arguments: object) -> GetHumanAnswerRequest:
    if not isinstance(arguments, Mapping):
        raise InvalidRequest("arguments", "must be an object")
    conflict = _alias_conflict(GetHumanAnswerRequest, arguments)
    if conflict is not None:
        raise conflict
    try:
        return GetHumanAnswerRequest.model_validate(dict(arguments))
    except ValidationError as e:
        raise invalid_request_from(e) from None


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
