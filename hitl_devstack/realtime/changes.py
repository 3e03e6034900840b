"""postgres_changes: database changes to subscribers, filtered and RLS-checked per subscriber.

The same design as supabase/realtime's `lib/extensions/postgres_cdc_rls/` over the same SQL
(`supabase/local/03_realtime_changes.sql` is Realtime's tenant schema, verbatim):

- a join's `config.postgres_changes` bindings (or the old `schema:table:filter` topic) are parsed
  as `subscriptions.ex` `parse_subscription_params/1` does, then inserted into
  `realtime.subscription` with the subscriber's JWT claims, one transaction per join, by the same
  statement (`subscriptions.ex` `create/5`); a binding that matches no table of the publication
  `supabase_realtime` (a missing table, or one not enabled for Realtime) inserts no row and is
  refused with Realtime's message;
- after a random 1-3 s (`realtime_channel.ex` `postgres_subscribe/2`), the channel gets the
  system message `Subscribed to PostgreSQL`, or `status: error` with the reason;
- one poller per devstack holds a temporary wal2json logical slot (`replications.ex`
  `prepare_replication/2`) and calls `realtime.list_changes` every 100 ms (`replication_poller.ex`,
  `db_settings.ex` defaults: 100 changes, 1 MiB per record), which runs `realtime.apply_rls` for
  every change: filters, column privileges and the table's RLS under each subscriber's role and
  claims; each change goes to the subscriptions it returns (`message_dispatcher.ex`), as
  `postgres_changes {ids, data}` (joins with `config`) or as an `INSERT`/`UPDATE`/`DELETE` event
  (the old API);
- the subscription rows are deleted when the channel ends (`subscription_manager.ex`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from hitl_devstack.realtime.authorization import CONNECTION_ERRORS
from hitl_devstack.realtime.channel import Binding
from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits

if TYPE_CHECKING:
    from hitl_devstack.realtime.channel import Channel

log = logging.getLogger("hitl_devstack.realtime")
DB_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)

PUBLICATION = "supabase_realtime"  # db_settings.ex default
SLOT_PREFIX = "supabase_realtime_replication_slot"
MAX_CHANGES = 100  # poll_max_changes
MAX_RECORD_BYTES = 1_048_576  # poll_max_record_bytes
IDLE_MULTIPLIER = 5  # replication_poller.ex @idle_multiplier
SUBSCRIBED = "Subscribed to PostgreSQL"
DB_TIMEOUTS = '{:error, "Too many database timeouts"}'  # inspect/1 of cdc_rls.ex's error
FILTER_TYPES = frozenset(
    [
        "eq",
        "neq",
        "lt",
        "lte",
        "gt",
        "gte",
        "in",
        "like",
        "ilike",
        "is",
        "match",
        "imatch",
        "isdistinct",
    ]
)

# subscriptions.ex create/5, verbatim
INSERT_SUBSCRIPTION = """with sub_tables as (
    select rr.entity
    from pg_publication_tables pub,
    lateral (select format('%I.%I', pub.schemaname, pub.tablename)::regclass entity) rr
    where pub.pubname = $1
    and pub.schemaname like (case $2 when '*' then '%' else $2 end) escape ''
    and pub.tablename like (case $3 when '*' then '%' else $3 end) escape ''
 )
 insert into realtime.subscription as x(
    subscription_id, entity, filters, claims, action_filter, selected_columns
  )
  select
    $4::text::uuid,
    sub_tables.entity,
    (
      select coalesce(
        array_agg(row(c, o::realtime.equality_op, v, n)::realtime.user_defined_filter),
        '{}'::realtime.user_defined_filter[]
      )
      from unnest($6::text[], $7::text[], $8::text[], $9::boolean[]) as f(c, o, v, n)
    ),
    $5,
    $10,
    $11
  from sub_tables
  on conflict
    (subscription_id, entity, filters, action_filter, coalesce(selected_columns, '{}'))
    do update set claims = excluded.claims, created_at = now()
  returning id"""

# replications.ex list_changes/5, verbatim
LIST_CHANGES = """SELECT wal->>'type' as type,
       wal->>'schema' as schema,
       wal->>'table' as table,
       COALESCE(wal->>'columns', '[]') as columns,
       COALESCE(wal->>'record', '{}') as record,
       COALESCE(wal->>'old_record', '{}') as old_record,
       wal->>'commit_timestamp' as commit_timestamp,
       subscription_ids,
       errors,
       slot_changes_count
FROM realtime.list_changes($1, $2, $3, $4)"""

Filter = tuple[str, str, str, bool]  # column, operator, value, negate


class ParamsError(ValueError):
    """A binding Realtime refuses before touching the database (the message is Realtime's)."""


@dataclass(frozen=True)
class SubscriptionParams:
    action: str  # "*", "INSERT", "UPDATE", "DELETE"
    schema: str
    table: str
    filters: tuple[Filter, ...]
    select: tuple[str, ...] | None

    def to_log(self) -> str:
        """subscriptions.ex params_to_log/1 (lists and nil as Elixir's inspect prints them)."""
        filters = ", ".join(
            "{" + ", ".join((_ex(c), _ex(o), _ex(v), "true" if n else "false")) + "}"
            for c, o, v, n in self.filters
        )
        select = "nil" if self.select is None else "[" + ", ".join(map(_ex, self.select)) + "]"
        return (
            f"event: {self.action}, schema: {self.schema}, table: {self.table}, "
            f"filters: [{filters}], select: {select}"
        )


def _ex(value: Any) -> str:
    """Elixir's `inspect/1` of decoded JSON (strings, numbers, lists, maps, nil)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(_ex, value)) + "]"
    if isinstance(value, dict):
        return "%{" + ", ".join(f"{_ex(k)} => {_ex(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _action(params: dict[str, Any]) -> str:
    event = params.get("event")
    if isinstance(event, str) and event.upper() in ("INSERT", "UPDATE", "DELETE"):
        return event.upper()
    return "*"


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes (split_top_level/6)."""
    parts, current, depth, quoted, prev = [], "", 0, False, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                current += text[i : i + 2]
                prev = text[i + 1]
                i += 2
                continue
            if ch == '"':
                quoted = False
            current += ch
        elif ch == '"' and prev in (".", "(", ","):
            quoted = True
            current += ch
        elif ch == "(":
            depth += 1
            current += ch
        elif ch == ")":
            depth = max(0, depth - 1)
            current += ch
        elif ch == "," and depth == 0:
            parts.append(current)
            current, ch = "", ""
        else:
            current += ch
        prev = ch
        i += 1
    parts.append(current)
    return parts


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    out, i, rest = "", 1, value
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest):
            out += rest[i + 1]
            i += 2
            continue
        if ch == '"':
            return out if i == len(rest) - 1 else value
        out += ch
        i += 1
    return value


def _parse_segment(segment: str) -> Filter:
    trimmed = segment.strip()
    if not trimmed:
        raise ParamsError("filter must not contain empty segments (check for extra commas)")
    if "=" not in trimmed:
        raise ParamsError(f"[{_ex(trimmed)}]")
    col, rest = trimmed.split("=", 1)
    negate = rest.startswith("not.")
    op_value = rest.removeprefix("not.")
    if "." not in op_value:
        raise ParamsError(f"[{_ex(op_value)}]")
    op, value = op_value.split(".", 1)
    if op not in FILTER_TYPES:
        raise ParamsError(f"[{_ex(op)}, {_ex(value)}]")
    if op == "in":
        if len(value) >= 2 and value.startswith("(") and value.endswith(")"):
            return (col, op, "{" + value[1:-1] + "}", negate)
        raise ParamsError("`in` filter value must be wrapped by parentheses")
    return (col, op, _unquote(value), negate)


def parse_params(params: Any) -> SubscriptionParams:
    """subscriptions.ex parse_subscription_params/1 (the message of ParamsError is Realtime's)."""
    if not isinstance(params, dict):
        raise ParamsError(
            "No subscription params provided. Please provide at least a `schema` or `table` to "
            f"subscribe to: {_ex(params)}"
        )
    select: tuple[str, ...] | None = None
    raw_select = params.get("select")
    if isinstance(raw_select, list):
        cols = tuple(c for c in raw_select if isinstance(c, str))
        select = cols or None
    elif isinstance(raw_select, str):
        raise ParamsError(
            "Error parsing `select` params: expected a list of column name strings, e.g. "
            'select: ["col1", "col2"]'
        )
    schema, table, flt = params.get("schema"), params.get("table"), params.get("filter")
    has_table, has_filter = "table" in params, "filter" in params
    filters: tuple[Filter, ...] = ()
    if isinstance(schema, str) and isinstance(table, str) and isinstance(flt, str):
        if flt.strip():
            try:
                filters = tuple(_parse_segment(s) for s in _split_top_level(flt.strip()))
            except ParamsError as e:
                raise ParamsError(f"Error parsing `filter` params: {e}") from None
    elif isinstance(schema, str) and isinstance(table, str) and not has_filter:
        pass
    elif isinstance(schema, str) and not has_table and not has_filter:
        table = "*"
    elif isinstance(table, str) and "schema" not in params and not has_filter:
        schema = "public"
    else:
        shown = "<redacted>" if ("user_token" in params or "auth_token" in params) else _ex(params)
        raise ParamsError(
            "No subscription params provided. Please provide at least a `schema` or `table` to "
            f"subscribe to: {shown}"
        )
    assert isinstance(schema, str)
    assert isinstance(table, str)
    if select is not None and (schema == "*" or table == "*"):
        raise ParamsError(
            "Column selection is not supported for wildcard subscriptions. Provide an explicit "
            "schema and table name."
        )
    return SubscriptionParams(_action(params), schema, table, filters, select)


def _exception_message(e: asyncpg.PostgresError) -> str:
    """Postgrex.Error.message/1: `ERROR <sqlstate> (<condition name>) <message>`."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(e).__name__).lower().removesuffix("_error")
    name = {"raise": "raise_exception"}.get(name, name)
    return f"{getattr(e, 'severity', None) or 'ERROR'} {e.sqlstate} ({name}) {e}"


class ChangesHost(Protocol):
    """What the poller needs of the Realtime service (its `ChannelRegistry` is one)."""

    ctx: Any  # the DevstackContext: its pool and db_url
    limits: RealtimeLimits
    events: RateCounter

    def system(self, channel: Channel, extension: str, status: str, message: str) -> None: ...


class PostgresChanges:
    """The poller and the subscription manager of one devstack."""

    def __init__(self, service: ChangesHost) -> None:
        self.service = service
        self.by_subscription: dict[uuid.UUID, tuple[Channel, Binding]] = {}
        self.slot = f"{SLOT_PREFIX}_{uuid.uuid4().hex[:12]}"
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._tasks, *([self._poll_task] if self._poll_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._poll_task = None
        ids = list(self.by_subscription)
        self.by_subscription.clear()
        if ids:
            with contextlib.suppress(*DB_ERRORS):
                async with self.service.ctx.pool.acquire() as conn:
                    await conn.execute(
                        "delete from realtime.subscription where subscription_id = any($1)", ids
                    )
        if self._conn is not None:  # the temporary slot goes with its connection
            conn, self._conn = self._conn, None
            with contextlib.suppress(*DB_ERRORS):
                await conn.close(timeout=2)

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- join / leave (realtime_channel.ex) ---------------------------------------------

    def joined(self, channel: Channel) -> None:
        """After the join reply: subscribe in 1-3 s (postgres_subscribe/2)."""
        if channel.pg_bindings:
            self._schedule(channel, self._backoff())

    def _backoff(self, retry: bool = False) -> tuple[float, float]:
        """postgres_subscribe/2: 1-3 s after a join, 5-10 s after a failure (scaled together)."""
        lim = self.service.limits
        low, high = lim.postgres_subscribe_min_s, lim.postgres_subscribe_max_s
        return (low * 5, high * 10 / 3) if retry else (low, high)

    def _schedule(self, channel: Channel, window: tuple[float, float]) -> None:
        if channel.pg_task is not None:
            channel.pg_task.cancel()
        delay = random.uniform(*window)
        channel.pg_task = asyncio.create_task(
            self._subscribe_later(channel, delay), name=f"postgres_subscribe {channel.topic}"
        )

    def resubscribe(self, channel: Channel) -> None:
        """A new access token: subscribe again with the new claims (handle_in access_token)."""
        if channel.pg_bindings and not channel.closed:
            self._schedule(channel, self._backoff())

    def _forget(self, channel: Channel) -> None:
        for binding in channel.pg_bindings:
            self.by_subscription.pop(binding.subscription_id, None)

    def left(self, channel: Channel) -> None:
        """The channel ended: forget its subscriptions and delete their rows."""
        if channel.pg_task is not None:
            channel.pg_task.cancel()
            channel.pg_task = None
        ids = [b.subscription_id for b in channel.pg_bindings]
        for sid in ids:
            self.by_subscription.pop(sid, None)
        if ids and not self._stopping:
            self._spawn(self._delete(ids), "delete subscriptions")

    async def _delete(self, ids: list[uuid.UUID]) -> None:
        try:
            async with self.service.ctx.pool.acquire() as conn:
                await conn.execute(
                    "delete from realtime.subscription where subscription_id = any($1)", ids
                )
        except DB_ERRORS as e:
            log.warning("realtime: SubscriptionDeletionFailed: %s", e)

    async def _subscribe_later(self, channel: Channel, delay: float) -> None:
        await asyncio.sleep(delay)  # Realtime's own subscribe backoff, not synchronisation
        if channel.closed:
            return
        status, message, retry = await self._subscribe(channel)
        if channel.closed:
            return
        self.service.system(channel, "postgres_changes", status, message)
        channel.pg_task = None
        if retry:
            self._schedule(channel, self._backoff(retry=True))

    async def _subscribe(self, channel: Channel) -> tuple[str, str, bool]:
        """(status, message, retry later) as handle_info(:postgres_subscribe) reports it."""
        try:
            parsed = [(b, parse_params(b.params)) for b in channel.pg_bindings]
        except ParamsError as e:
            return "error", str(e), False
        # Known before the rows commit, so a change polled right after the commit is routed.
        for binding in channel.pg_bindings:
            self.by_subscription[binding.subscription_id] = (channel, binding)
        try:
            await self._ensure_slot()
            async with self.service.ctx.pool.acquire() as conn, conn.transaction():
                for binding, p in parsed:
                    try:
                        rows = await conn.fetch(
                            INSERT_SUBSCRIPTION,
                            PUBLICATION,
                            p.schema,
                            p.table,
                            str(binding.subscription_id),
                            json.dumps(channel.claims),
                            [f[0] for f in p.filters],
                            [f[1] for f in p.filters],
                            [f[2] for f in p.filters],
                            [f[3] for f in p.filters],
                            p.action,
                            list(p.select) if p.select is not None else None,
                        )
                    except CONNECTION_ERRORS:
                        raise
                    except asyncpg.PostgresError as e:
                        raise _InsertFailed(
                            "Unable to subscribe to changes with given parameters. An exception "
                            "happened so please check your connect parameters: "
                            f"[{p.to_log()}]. Exception: {_exception_message(e)}"
                        ) from None
                    if not rows:
                        raise _InsertFailed(
                            "Unable to subscribe to changes with given parameters. Please check "
                            "Realtime is enabled for the given connect parameters: "
                            f"[{p.to_log()}]"
                        )
        except _InsertFailed as e:
            self._forget(channel)
            return "error", str(e), False
        except DB_ERRORS as e:
            self._forget(channel)
            log.warning("realtime: UnableToSubscribeToPostgres: %s", e)
            return "error", DB_TIMEOUTS, True
        if channel.closed:  # left while subscribing: its rows must not outlive it
            self.left(channel)
            return "ok", SUBSCRIBED, False
        self._start_polling()
        return "ok", SUBSCRIBED, False

    # ---- the poller (replication_poller.ex) ---------------------------------------------

    async def _ensure_slot(self) -> None:
        """A temporary wal2json slot on a connection of its own (prepare_replication/2)."""
        async with self._conn_lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await asyncpg.connect(
                self.service.ctx.db_url, server_settings={"application_name": "realtime_rls"}
            )
            try:
                await conn.execute(
                    "select case when not exists (select 1 from pg_replication_slots"
                    " where slot_name = $1)"
                    " then (select 1 from pg_create_logical_replication_slot($1, 'wal2json', true))"
                    " else 1 end",
                    self.slot,
                )
            except BaseException:
                await conn.close()
                raise
            self._conn = conn

    def _start_polling(self) -> None:
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = asyncio.create_task(self._poll_loop(), name="realtime-cdc-poller")

    async def _poll_loop(self) -> None:
        interval = self.service.limits.postgres_poll_interval_s
        while not self._stopping:
            try:
                processed, pending = await self._poll_once()
            except DB_ERRORS as e:
                log.warning("realtime: list_changes failed (%s); re-creating the slot", e)
                if self._conn is not None:
                    with contextlib.suppress(*DB_ERRORS):
                        await self._conn.close(timeout=2)
                self._conn = None
                await asyncio.sleep(1.0)  # retry backoff of the poller
                try:
                    await self._ensure_slot()
                except DB_ERRORS as e2:
                    log.warning("realtime: could not re-create the slot: %s", e2)
                continue
            if processed or pending:
                await asyncio.sleep(interval)  # the poll cadence (poll_interval_ms)
            else:
                await asyncio.sleep(interval * IDLE_MULTIPLIER)

    async def _poll_once(self) -> tuple[int, int]:
        async with self._conn_lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise asyncpg.InterfaceError("the replication connection is gone")
            rows = await conn.fetch(
                LIST_CHANGES, PUBLICATION, self.slot, MAX_CHANGES, MAX_RECORD_BYTES
            )
        real = [r for r in rows if r["type"] is not None]
        pending = int(rows[0]["slot_changes_count"] or 0) if rows else 0
        events = self.service.events
        if events.triggered:
            if real:
                log.warning("realtime: postgres_changes skipped (%d): rate limited", len(real))
            return len(real), pending
        for row in real:
            change = _record(row)
            if change is None:
                continue
            ids = set(row["subscription_ids"] or ())
            events.add(len(ids))
            self._dispatch(row["type"], change, ids)
        return len(real), pending

    def _dispatch(self, kind: str, change: dict[str, Any], ids: set[uuid.UUID]) -> None:
        """message_dispatcher.ex dispatch/3: once per channel, with the ids of its bindings."""
        per_channel: dict[Channel, list[int]] = {}
        for sid in ids:
            found = self.by_subscription.get(sid)
            if found is None:
                continue
            channel, binding = found
            per_channel.setdefault(channel, []).append(binding.reply_id)
        data = json.dumps(change, separators=(",", ":"), ensure_ascii=False)
        for channel, reply_ids in per_channel.items():
            if channel.closed:
                continue
            if channel.pg_new_api:
                ordered = [b.reply_id for b in channel.pg_bindings if b.reply_id in reply_ids]
                payload: dict[str, Any] = {"ids": ordered[::-1], "data": json.loads(data)}
                event = "postgres_changes"
            else:
                payload, event = json.loads(data), kind
            channel.socket.send(channel.socket.serializer.broadcast(channel.topic, event, payload))


class _InsertFailed(Exception):
    """subscriptions.ex {:subscription_insert_failed, msg}: the transaction is rolled back."""


def _record(row: asyncpg.Record) -> dict[str, Any] | None:
    """replication_poller.ex generate_record/1 and Realtime.Adapters.Changes' field order."""
    kind = row["type"]
    if kind not in ("INSERT", "UPDATE", "DELETE") or row["subscription_ids"] is None:
        return None
    errors = list(row["errors"]) if row["errors"] else None  # convert_errors/1
    out: dict[str, Any] = {
        "columns": json.loads(row["columns"]),
        "commit_timestamp": row["commit_timestamp"],
        "errors": errors,
        "schema": row["schema"],
        "table": row["table"],
    }
    if kind in ("UPDATE", "DELETE"):
        out["old_record"] = json.loads(row["old_record"])
    if kind in ("INSERT", "UPDATE"):
        out["record"] = json.loads(row["record"])
    out["type"] = kind
    return out
