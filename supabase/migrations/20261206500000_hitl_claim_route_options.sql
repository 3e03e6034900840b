-- Cutting the operator's time: one-tap answers (options), claims, routing and escalation.
--
-- * Options: the agent may offer 2-6 short answers; they are stored on the case
--   (cases.options, a JSON array of strings) and an operator's answer may name one
--   (messages.option_index). The bounds' home is hitl_relay/models.py (OPTIONS_MIN, OPTIONS_MAX,
--   OPTION_MAX_CHARS); hitl_option_bounds() repeats them and tests/db checks they agree.
-- * Claims: an operator claims a case with ONE row update of cases.claimed_by under RLS
--   (PostgREST: PATCH /cases?id=eq.<id> {claimed_by: <own uid>}); a trigger stamps the claim,
--   refuses any other column, and broadcasts `claim` on case:<id> and operators. A claim is live
--   while it is younger than hil_settings.claim_ttl_seconds AND its holder is present. Presence
--   (Realtime's) is not in the database: "present" here is the console's heartbeat
--   (hitl_operator_heartbeat, every ~30 s while available) seen within
--   claim_presence_seconds (90 s). Closing the tab therefore frees a claim within 90 s; going
--   "away" in the console releases its claims at once (hitl_release_claims).
-- * Routing: a case may require skills (cases.skills, from the agent's `skills` argument plus
--   hil_agent_skills for its agent id); an operator holds skills in their JWT's
--   app_metadata.hitl_skills (only the service role can write app_metadata, while a user can
--   rewrite their own user_metadata: supabase/splinter lint 0015 "RLS references
--   user_metadata"; supabase-dart AdminUserAttributes.appMetadata). An operator may
--   claim and answer only cases whose skills they all hold; hitl_operator_queue() lists the
--   cases an operator can take, highest priority first, then nearest deadline.
-- * Escalation: hitl_escalate() raises the priority of a case left unclaimed past
--   escalate_unclaimed_seconds[priority], or claimed and unanswered within
--   escalate_before_deadline_seconds of its caller's deadline; it broadcasts `escalated` on
--   operators and queues a notification (hil_notifications) that the relay sends (webhook,
--   e-mail). pg_cron runs it every minute (its finest schedule); the relay calls it more often.

-- settings --------------------------------------------------------------------------------------
create table if not exists public.hil_settings (
  key text primary key,
  value jsonb not null,
  updated_at timestamptz not null default now()
);
alter table public.hil_settings enable row level security;
revoke all on public.hil_settings from anon, authenticated;
grant all on public.hil_settings to service_role;
insert into public.hil_settings (key, value) values
  ('claim_ttl_seconds', '120'),
  ('claim_presence_seconds', '90'),
  ('escalate_unclaimed_seconds', '{"5": 5, "4": 8, "3": 12, "2": 20, "1": 30}'),
  ('escalate_before_deadline_seconds', '10')
on conflict (key) do nothing;

create or replace function public.hitl_setting(p_key text, p_default jsonb) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce((select value from public.hil_settings where key = p_key), p_default)
$$;
revoke all on function public.hitl_setting(text, jsonb) from public, anon;
-- the claim trigger runs as the operator and reads the claim settings (nothing secret here)
grant execute on function public.hitl_setting(text, jsonb) to authenticated, service_role;

-- Skills a case of this agent always requires (the agent id's routing configuration).
create table if not exists public.hil_agent_skills (
  agent_id text primary key,
  skills text[] not null default '{}'
);
alter table public.hil_agent_skills enable row level security;
revoke all on public.hil_agent_skills from anon, authenticated;
grant all on public.hil_agent_skills to service_role;

-- Outbox of escalation notifications; the relay's notifier sends and marks them.
create table if not exists public.hil_notifications (
  id bigint generated always as identity primary key,
  case_id uuid references public.cases (id) on delete cascade,
  reason text not null,
  payload jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  sent_at timestamptz,
  attempts integer not null default 0,
  last_error text
);
create index if not exists hil_notifications_unsent_idx on public.hil_notifications (created_at)
  where sent_at is null;
alter table public.hil_notifications enable row level security;
revoke all on public.hil_notifications from anon, authenticated;
revoke all on sequence public.hil_notifications_id_seq from anon, authenticated;
grant all on public.hil_notifications to service_role;

-- columns ---------------------------------------------------------------------------------------
alter table public.cases
  add column if not exists options jsonb,
  add column if not exists skills text[] not null default '{}',
  add column if not exists claimed_by uuid,
  add column if not exists claimed_at timestamptz,
  add column if not exists claim_expires_at timestamptz,
  add column if not exists escalated_at timestamptz,
  add column if not exists escalation_level integer not null default 0,
  add column if not exists escalated_for text[] not null default '{}';
alter table public.messages
  add column if not exists option_index integer;

-- options ---------------------------------------------------------------------------------------
create or replace function public.hitl_option_bounds() returns jsonb
language sql immutable as $$
  select '{"min": 2, "max": 6, "max_chars": 80}'::jsonb
$$;

-- The `options` of an open_case argument: null, or 2-6 distinct, non-blank, short strings.
create or replace function public.hitl_options(p jsonb) returns jsonb
language plpgsql immutable as $$
declare
  v jsonb := p -> 'options';
  b jsonb := public.hitl_option_bounds();
  v_seen text[] := '{}';
  v_item jsonb;
  v_text text;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v) <> 'array' then
    perform public.hitl_invalid('options', 'must be a list of strings');
  end if;
  if jsonb_array_length(v) not between (b ->> 'min')::int and (b ->> 'max')::int then
    perform public.hitl_invalid('options', format('must have %s to %s items', b ->> 'min', b ->> 'max'));
  end if;
  for v_item in select value from jsonb_array_elements(v) loop
    if jsonb_typeof(v_item) <> 'string' or btrim(v_item #>> '{}') = '' then
      perform public.hitl_invalid('options', 'each must be a non-empty string');
    end if;
    v_text := btrim(v_item #>> '{}');
    if char_length(v_text) > (b ->> 'max_chars')::int then
      perform public.hitl_invalid('options', format('each must be at most %s characters', b ->> 'max_chars'));
    end if;
    if lower(v_text) = any (v_seen) then
      perform public.hitl_invalid('options', 'must not repeat an option');
    end if;
    v_seen := v_seen || lower(v_text);
  end loop;
  return (select jsonb_agg(btrim(value #>> '{}') order by ord)
            from jsonb_array_elements(v) with ordinality as t(value, ord));
end;
$$;

-- The `skills` of an open_case argument: a list of up to 8 short names.
create or replace function public.hitl_skills(p jsonb) returns text[]
language plpgsql immutable as $$
declare
  v jsonb := p -> 'skills';
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return '{}';
  end if;
  if jsonb_typeof(v) <> 'array' or jsonb_array_length(v) > 8
     or exists (select 1 from jsonb_array_elements(v) e
                 where jsonb_typeof(e) <> 'string' or char_length(e #>> '{}') not between 1 and 64) then
    perform public.hitl_invalid('skills', 'must be a list of at most 8 names of 1 to 64 characters');
  end if;
  return array(select distinct lower(e #>> '{}') from jsonb_array_elements(v) e order by 1);
end;
$$;

-- hitl_open_case takes `options` and `skills` too: the existing function becomes the core, and
-- this wrapper validates the two, calls it and stamps them on the new case in the same
-- transaction (a retried call that joins an existing case keeps that case's).
do $$
begin
  if not exists (select 1 from pg_proc where proname = 'hitl_open_case_core'
                 and pronamespace = 'public'::regnamespace) then
    alter function public.hitl_open_case(jsonb) rename to hitl_open_case_core;
  end if;
end
$$;
revoke all on function public.hitl_open_case_core(jsonb) from public, anon, authenticated;
grant execute on function public.hitl_open_case_core(jsonb) to service_role;

create or replace function public.hitl_open_case(p jsonb) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_options jsonb;
  v_skills text[];
  r jsonb;
begin
  if p is null or jsonb_typeof(p) <> 'object' then
    perform public.hitl_invalid('p', 'must be a JSON object');
  end if;
  v_options := public.hitl_options(p);
  v_skills := public.hitl_skills(p);
  r := public.hitl_open_case_core(p);
  if not (r ->> 'existed')::boolean then
    v_skills := array(
      select distinct s from unnest(v_skills || coalesce(
        (select a.skills from public.hil_agent_skills a where a.agent_id = p ->> 'retell_agent_id'),
        '{}')) s order by 1);
    -- only when there is something to stamp: a plain case gets no extra UPDATE (which
    -- postgres_changes subscribers would see)
    if v_options is not null or cardinality(v_skills) > 0 then
      update public.cases set options = v_options, skills = v_skills
       where id = (r ->> 'case_id')::uuid;
    end if;
  end if;
  return r;
end;
$$;
revoke all on function public.hitl_open_case(jsonb) from public, anon, authenticated;
grant execute on function public.hitl_open_case(jsonb) to service_role;

-- The answer carries the chosen option (index and text) and who answered.
create or replace function public.hitl_answer(p_case_id uuid) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select jsonb_build_object(
    'message_id', m.id, 'case_id', m.case_id, 'content', m.content, 'kind', m.kind,
    'sender_id', m.sender_id, 'created_at', m.created_at, 'option_index', m.option_index,
    'option', c.options ->> m.option_index)
  from public.cases c
  join public.messages m on m.id = c.answer_message_id
  where c.id = p_case_id
$$;

-- The `message` broadcast names the chosen option (index and text), so the relay and every
-- console have it without a read; both are signed with the rest (as 20261206100000_hitl_signed_events.sql).
create or replace function public.hitl_on_message() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_is_answer boolean := false;
  v_option text;
begin
  if new.sender_type = 'human' and new.kind in ('answer', 'cannot_answer') then
    update public.cases
       set answer_message_id = new.id,
           status = case when status = 'open' then 'answered' else status end,
           answered_at = coalesce(answered_at, now())
     where id = new.case_id and answer_message_id is null;
    v_is_answer := found;
  end if;
  if new.option_index is not null then
    select options ->> new.option_index into v_option from public.cases where id = new.case_id;
  end if;
  perform realtime.send(
    public.hitl_sign_event('message', jsonb_build_object(
      'id', new.id, 'case_id', new.case_id, 'sender_type', new.sender_type,
      'sender_id', new.sender_id, 'content', new.content, 'kind', new.kind,
      'created_at', new.created_at, 'is_answer', v_is_answer,
      'option_index', new.option_index, 'option', v_option),
      array['id', 'case_id', 'sender_type', 'sender_id', 'content', 'kind', 'created_at',
            'is_answer', 'option_index', 'option']),
    'message', 'case:' || new.case_id::text, true);
  return null;
end;
$$;

-- presence, claims, routing ------------------------------------------------------------------------
create or replace function public.hitl_operator_skills() returns text[]
language sql stable as $$
  select coalesce(array(
    select lower(s) from jsonb_array_elements_text(
      case when jsonb_typeof(auth.jwt() -> 'app_metadata' -> 'hitl_skills') = 'array'
           then auth.jwt() -> 'app_metadata' -> 'hitl_skills' else '[]'::jsonb end) s), '{}')
$$;

-- Is this operator present: a heartbeat while available, recent enough?
create or replace function public.hitl_operator_present(p_operator uuid) returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
  select exists (
    select 1 from public.operator_activity a
     where a.operator_id = p_operator and a.status = 'available'
       and a.last_seen_at >= now() - make_interval(
             secs => (public.hitl_setting('claim_presence_seconds', '90') #>> '{}')::int))
$$;
revoke all on function public.hitl_operator_present(uuid) from public, anon;
grant execute on function public.hitl_operator_present(uuid) to authenticated, service_role;

-- A claim holds while unexpired and its holder is present.
create or replace function public.hitl_claim_live(p_claimed_by uuid, p_expires timestamptz)
returns boolean
language sql stable as $$
  select p_claimed_by is not null and p_expires > now() and public.hitl_operator_present(p_claimed_by)
$$;

drop policy if exists hitl_operators_claim_cases on public.cases;
create policy hitl_operators_claim_cases on public.cases
  for update to authenticated
  using (
    source = 'mcp_voice' and status = 'open' and public.hitl_is_operator()
    and skills <@ public.hitl_operator_skills()
    and (claimed_by is null or claimed_by = auth.uid()
         or not public.hitl_claim_live(claimed_by, claim_expires_at)))
  with check (source = 'mcp_voice' and (claimed_by is null or claimed_by = auth.uid()));

-- Operators' updates of a relay case may change the claim only; the claim is stamped here.
-- Hosted projects grant UPDATE on public tables to `authenticated` by default (Supabase's
-- "Database API 42501 errors" guide; supabase/postgres init scripts), so the claim policy alone
-- would let an operator rewrite any column of a claimable case: this trigger refuses that with
-- 42501, which PostgREST answers with 403 (docs.postgrest.org, references/errors, "HTTP Status
-- Codes"); hitl_invalid's P0001 becomes 400 with `details` naming the field.
create or replace function public.hitl_before_case_update() returns trigger
language plpgsql as $$
begin
  if current_user not in ('authenticated', 'anon') then
    return new; -- the service role and the security-definer functions
  end if;
  if (to_jsonb(new) - 'claimed_by' - 'claimed_at' - 'claim_expires_at')
     is distinct from (to_jsonb(old) - 'claimed_by' - 'claimed_at' - 'claim_expires_at') then
    raise exception using errcode = '42501',
      message = 'operators may change only claimed_by of a case';
  end if;
  if new.claimed_by is null then
    new.claimed_at := null;
    new.claim_expires_at := null;
  elsif new.claimed_by is distinct from old.claimed_by
        or old.claim_expires_at is null or old.claim_expires_at <= now() then
    if not public.hitl_operator_present(new.claimed_by) then
      raise exception using errcode = 'P0001', detail = 'claimed_by',
        message = 'invalid claimed_by: you are not available (no heartbeat seen): go available first';
    end if;
    new.claimed_at := now();
    new.claim_expires_at := now() + make_interval(
      secs => (public.hitl_setting('claim_ttl_seconds', '120') #>> '{}')::int);
  else
    new.claimed_at := old.claimed_at;
    new.claim_expires_at := old.claim_expires_at;
  end if;
  return new;
end;
$$;
create or replace trigger hitl_before_case_update
  before update on public.cases
  for each row when (old.source = 'mcp_voice')
  execute function public.hitl_before_case_update();

-- Every console sees a claim (or its release) at once; the audit records it.
create or replace function public.hitl_on_claim() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_payload jsonb := jsonb_build_object(
    'case_id', new.id, 'claimed_by', new.claimed_by, 'claimed_at', new.claimed_at,
    'claim_expires_at', new.claim_expires_at, 'previous', old.claimed_by);
begin
  perform realtime.send(v_payload, 'claim', 'case:' || new.id::text, true);
  perform realtime.send(v_payload, 'claim', 'operators', true);
  insert into public.hil_audit (actor, action, case_id, outcome, detail)
  values (coalesce(new.claimed_by, old.claimed_by)::text,
          case when new.claimed_by is null then 'release' else 'claim' end,
          new.id, 'ok', v_payload);
  return null;
end;
$$;
create or replace trigger hitl_on_claim
  after update of claimed_by on public.cases
  for each row when (old.source = 'mcp_voice' and old.claimed_by is distinct from new.claimed_by)
  execute function public.hitl_on_claim();

-- Release every claim of the calling operator (the console calls it when going away).
create or replace function public.hitl_release_claims() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  n integer;
begin
  if not public.hitl_is_operator() or auth.uid() is null then
    raise exception using errcode = '42501', message = 'only operators hold claims';
  end if;
  update public.cases set claimed_by = null, claimed_at = null, claim_expires_at = null
   where claimed_by = auth.uid() and source = 'mcp_voice' and status = 'open';
  get diagnostics n = row_count;
  return n;
end;
$$;
revoke all on function public.hitl_release_claims() from public, anon;
grant execute on function public.hitl_release_claims() to authenticated;

-- The cases the calling operator can take, best first: callers still waiting, then highest
-- priority, then nearest deadline.
-- Security invoker: row-level security decides what the operator sees at all.
create or replace function public.hitl_operator_queue()
returns table (case_id uuid, priority integer, deadline_at timestamptz, claimed_by uuid,
               claim_live boolean, skills text[], escalation_level integer)
language sql stable security invoker set search_path = public, pg_temp as $$
  select c.id, c.priority, coalesce(s.expires_at, (c.metadata ->> 'deadline_at')::timestamptz),
         c.claimed_by, public.hitl_claim_live(c.claimed_by, c.claim_expires_at), c.skills,
         c.escalation_level
    from public.cases c
    left join lateral (
      select max(h.expires_at) as expires_at from public.hil_sessions h
       where h.case_id = c.id and h.status = 'waiting') s on true
   where c.source = 'mcp_voice' and c.status = 'open'
     and (c.expires_at is null or c.expires_at > now())
     and c.skills <@ public.hitl_operator_skills()
     and (c.claimed_by is null or c.claimed_by = auth.uid()
          or not public.hitl_claim_live(c.claimed_by, c.claim_expires_at))
   -- callers still on the line first (a case whose caller is gone stays answerable, later)
   order by (s.expires_at is null), c.priority desc, s.expires_at asc, c.created_at asc
$$;
revoke all on function public.hitl_operator_queue() from public, anon;
grant execute on function public.hitl_operator_queue() to authenticated, service_role;

-- Operators' messages: the option named must be the case's, skills must match, and a case
-- claimed by someone else is theirs to answer.
create or replace function public.hitl_before_message() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  c public.cases;
begin
  select * into c from public.cases where id = new.case_id;
  if not found or c.source is distinct from 'mcp_voice' then
    return new;
  end if;
  if new.option_index is not null then
    if new.sender_type <> 'human' or new.kind <> 'answer' then
      perform public.hitl_invalid('option_index', 'only a human answer may choose an option');
    end if;
    if c.options is null or new.option_index not between 0 and jsonb_array_length(c.options) - 1 then
      perform public.hitl_invalid('option_index', format('must be one of the case''s options (0 to %s)',
        coalesce(jsonb_array_length(c.options), 0) - 1));
    end if;
    if btrim(coalesce(new.content, '')) = '' then
      new.content := c.options ->> new.option_index;
    elsif btrim(new.content) <> c.options ->> new.option_index then
      perform public.hitl_invalid('content', 'must be the chosen option''s text (or empty)');
    end if;
  end if;
  if new.sender_type = 'human' and public.hitl_is_operator() then
    if not (c.skills <@ public.hitl_operator_skills()) then
      perform public.hitl_invalid('case_id', 'needs skills you do not have');
    end if;
    if c.claimed_by is not null and c.claimed_by is distinct from auth.uid()
       and public.hitl_claim_live(c.claimed_by, c.claim_expires_at) then
      perform public.hitl_invalid('case_id', 'is claimed by another operator');
    end if;
  end if;
  return new;
end;
$$;
create or replace trigger hitl_before_message
  before insert on public.messages
  for each row execute function public.hitl_before_message();

-- Who answered, in the audit (after hitl_on_message, which decides the answer: names sort).
create or replace function public.hitl_on_message_audit() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  insert into public.hil_audit (actor, action, case_id, outcome, detail)
  select coalesce(new.sender_id::text, 'unknown'), 'answer', new.case_id,
         case when c.answer_message_id = new.id then 'decided' else 'late' end,
         jsonb_build_object('message_id', new.id, 'kind', new.kind,
                            'option_index', new.option_index, 'claimed_by', c.claimed_by)
    from public.cases c
   where c.id = new.case_id and c.source = 'mcp_voice';
  return null;
end;
$$;
create or replace trigger hitl_on_message_audit
  after insert on public.messages
  for each row when (new.sender_type = 'human' and new.kind in ('answer', 'cannot_answer'))
  execute function public.hitl_on_message_audit();

-- escalation -----------------------------------------------------------------------------------
-- Escalate what waits too long: a case unclaimed past its priority's threshold, or claimed and
-- unanswered close to its caller's deadline. Each reason escalates a case once: priority + 1
-- (at most 5), a console alert (`escalated` on operators) and a notification in the outbox.
-- Safe to call from several places at once (pg_cron, every relay): locked rows are skipped.
create or replace function public.hitl_escalate() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_unclaimed jsonb := public.hitl_setting('escalate_unclaimed_seconds', '{}');
  v_before int := (public.hitl_setting('escalate_before_deadline_seconds', '10') #>> '{}')::int;
  r record;
  v_reason text;
  n integer := 0;
  v_payload jsonb;
begin
  -- Claims that lapsed (their time, or their holder's heartbeat) are released here, so every
  -- console hears the release (hitl_on_claim) within one round instead of judging it alone.
  update public.cases c set claimed_by = null, claimed_at = null, claim_expires_at = null
   where c.source = 'mcp_voice' and c.status = 'open' and c.claimed_by is not null
     and not public.hitl_claim_live(c.claimed_by, c.claim_expires_at);
  for r in
    select c.id, c.priority, c.created_at, c.claimed_by, c.claim_expires_at, c.escalated_for,
           c.description, c.metadata ->> 'retell_call_id' as call_id,
           (select max(h.expires_at) from public.hil_sessions h
             where h.case_id = c.id and h.status = 'waiting') as deadline
      from public.cases c
     where c.source = 'mcp_voice' and c.status = 'open' and c.answer_message_id is null
       and (c.expires_at is null or c.expires_at > now())
     order by c.priority desc, c.created_at
       for update of c skip locked
  loop
    v_reason := null;
    if not public.hitl_claim_live(r.claimed_by, r.claim_expires_at)
       and not ('unclaimed' = any (r.escalated_for))
       and v_unclaimed ? r.priority::text
       and now() - r.created_at >= make_interval(secs => (v_unclaimed ->> r.priority::text)::int) then
      v_reason := 'unclaimed';
    elsif public.hitl_claim_live(r.claimed_by, r.claim_expires_at)
       and not ('deadline' = any (r.escalated_for))
       and r.deadline is not null and r.deadline > now()
       and r.deadline - now() <= make_interval(secs => v_before) then
      v_reason := 'deadline';
    end if;
    continue when v_reason is null;
    update public.cases
       set priority = least(5, priority + 1), escalated_at = now(),
           escalation_level = escalation_level + 1, escalated_for = escalated_for || v_reason
     where id = r.id;
    v_payload := jsonb_build_object(
      'case_id', r.id, 'reason', v_reason, 'priority', least(5, r.priority + 1),
      'previous_priority', r.priority, 'claimed_by', r.claimed_by, 'deadline_at', r.deadline,
      'question', r.description, 'retell_call_id', r.call_id, 'escalated_at', now());
    perform realtime.send(v_payload, 'escalated', 'operators', true);
    perform realtime.send(v_payload, 'escalated', 'case:' || r.id::text, true);
    insert into public.hil_notifications (case_id, reason, payload) values (r.id, v_reason, v_payload);
    insert into public.hil_audit (actor, action, case_id, outcome, detail)
    values ('escalation', 'escalate', r.id, v_reason, v_payload);
    n := n + 1;
  end loop;
  return n;
end;
$$;
revoke all on function public.hitl_escalate() from public, anon, authenticated;
grant execute on function public.hitl_escalate() to service_role;

-- The notifier's outbox: take a batch of unsent notifications (locked for this transaction's
-- caller only briefly: a row is marked by hitl_notification_done).
create or replace function public.hitl_pending_notifications(p_limit integer default 20)
returns setof public.hil_notifications
language sql security definer set search_path = public, pg_temp as $$
  update public.hil_notifications n set attempts = attempts + 1
   where n.id in (select id from public.hil_notifications
                   where sent_at is null and attempts < 10
                   order by created_at limit p_limit for update skip locked)
  returning n.*
$$;
revoke all on function public.hitl_pending_notifications(integer) from public, anon, authenticated;
grant execute on function public.hitl_pending_notifications(integer) to service_role;

create or replace function public.hitl_notification_done(p_id bigint, p_error text default null)
returns void
language sql security definer set search_path = public, pg_temp as $$
  update public.hil_notifications
     set sent_at = case when p_error is null then now() end, last_error = p_error
   where id = p_id
$$;
revoke all on function public.hitl_notification_done(bigint, text) from public, anon, authenticated;
grant execute on function public.hitl_notification_done(bigint, text) to service_role;

-- Helpers: nothing for anon; operators need the ones their policies and queue call.
revoke all on function public.hitl_option_bounds(), public.hitl_options(jsonb),
  public.hitl_skills(jsonb), public.hitl_operator_skills(),
  public.hitl_claim_live(uuid, timestamptz) from public, anon;
grant execute on function public.hitl_operator_skills(), public.hitl_claim_live(uuid, timestamptz)
  to authenticated, service_role;
grant execute on function public.hitl_option_bounds(), public.hitl_options(jsonb),
  public.hitl_skills(jsonb) to service_role;

do $$
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('hitl-escalate', '* * * * *', 'select public.hitl_escalate()');
  end if;
end
$$;
