-- hitl-relay functions: each one transaction, called by the relay through PostgREST RPC as the
-- service role (and by pg_cron). Invalid input raises SQLSTATE P0001 with the message
-- 'invalid <field>: <rule>', DETAIL = the field, HINT = the rule, and writes nothing.

create or replace function public.hitl_invalid(p_field text, p_rule text) returns void
language plpgsql as $$
begin
  raise exception using errcode = 'P0001', message = format('invalid %s: %s', p_field, p_rule),
    detail = p_field, hint = p_rule;
end;
$$;

-- A required, printable text of bounded length; returns it trimmed.
create or replace function public.hitl_text(p jsonb, p_field text, p_max integer,
                                            p_required boolean default true) returns text
language plpgsql as $$
declare
  v jsonb := p -> p_field;
  t text;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    if p_required then perform public.hitl_invalid(p_field, 'is required'); end if;
    return null;
  end if;
  if jsonb_typeof(v) <> 'string' then
    perform public.hitl_invalid(p_field, 'must be a string');
  end if;
  t := v #>> '{}';
  if p_required and length(btrim(t)) = 0 then
    perform public.hitl_invalid(p_field, 'must not be empty');
  end if;
  if length(t) > p_max then
    perform public.hitl_invalid(p_field, format('must be at most %s characters', p_max));
  end if;
  return t;
end;
$$;

create or replace function public.hitl_int(p jsonb, p_field text, p_min integer, p_max integer,
                                           p_default integer) returns integer
language plpgsql as $$
declare
  v jsonb := p -> p_field;
  n numeric;
begin
  if v is null or jsonb_typeof(v) = 'null' then return p_default; end if;
  if jsonb_typeof(v) <> 'number' then
    perform public.hitl_invalid(p_field, format('must be an integer from %s to %s', p_min, p_max));
  end if;
  n := (v #>> '{}')::numeric;
  if n <> trunc(n) or n < p_min or n > p_max then
    perform public.hitl_invalid(p_field, format('must be an integer from %s to %s', p_min, p_max));
  end if;
  return n::integer;
end;
$$;

create or replace function public.hitl_is_operator() returns boolean
language sql stable as $$
  select coalesce(auth.jwt() -> 'app_metadata' ->> 'hitl_role', '') = 'operator'
$$;

-- Open a case and its waiting session (idempotent on call id + question hash).
create or replace function public.hitl_open_case(p jsonb) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_question text;
  v_context text;
  v_session text;
  v_call text;
  v_agent text;
  v_priority integer;
  v_urgency text;
  v_timeout integer;
  v_ttl integer;
  v_caller jsonb;
  v_history jsonb;
  v_callback text;
  v_secret text;
  v_key text;
  v_case_id uuid;
  v_now timestamptz := now();
  v_deadline timestamptz;
  s public.hil_sessions;
  v_existed boolean := false;
begin
  if p is null or jsonb_typeof(p) <> 'object' then
    perform public.hitl_invalid('p', 'must be a JSON object');
  end if;
  if octet_length(p::text) > 1048576 then
    perform public.hitl_invalid('p', 'must be at most 1 MB');
  end if;
  v_question := public.hitl_text(p, 'question', 2000);
  v_context := public.hitl_text(p, 'context', 8000, false);
  v_session := public.hitl_text(p, 'mcp_session_id', 128);
  v_call := public.hitl_text(p, 'retell_call_id', 128);
  v_agent := public.hitl_text(p, 'retell_agent_id', 128);
  v_priority := public.hitl_int(p, 'priority', 1, 5, 3);
  v_timeout := public.hitl_int(p, 'timeout_seconds', 5, 600, 45);
  v_ttl := public.hitl_int(p, 'case_ttl_seconds', 60, 7 * 86400, 3600);
  v_urgency := coalesce(public.hitl_text(p, 'urgency', 16, false), 'medium');
  if v_urgency not in ('low', 'medium', 'high') then
    perform public.hitl_invalid('urgency', 'must be one of low, medium, high');
  end if;
  v_caller := coalesce(p -> 'caller_info', '{}'::jsonb);
  if jsonb_typeof(v_caller) <> 'object' then
    perform public.hitl_invalid('caller_info', 'must be an object');
  end if;
  if octet_length(v_caller::text) > 16384 then
    perform public.hitl_invalid('caller_info', 'must be at most 16 KB');
  end if;
  v_history := coalesce(p -> 'conversation_history', '[]'::jsonb);
  if jsonb_typeof(v_history) <> 'array' then
    perform public.hitl_invalid('conversation_history', 'must be an array of {role, content}');
  end if;
  if jsonb_array_length(v_history) > 200 then
    perform public.hitl_invalid('conversation_history', 'must have at most 200 turns');
  end if;
  v_callback := public.hitl_text(p, 'callback_url', 2048, false);
  v_secret := public.hitl_text(p, 'webhook_secret', 256, false);
  if p ? 'case_id' and jsonb_typeof(p -> 'case_id') <> 'null' then
    begin
      v_case_id := (p ->> 'case_id')::uuid;
    exception when invalid_text_representation then
      perform public.hitl_invalid('case_id', 'must be a UUID');
    end;
  else
    v_case_id := gen_random_uuid();
  end if;
  v_key := coalesce(
    public.hitl_text(p, 'idempotency_key', 256, false),
    v_call || ':' || encode(sha256(convert_to(v_question, 'UTF8')), 'hex'));
  v_deadline := v_now + make_interval(secs => v_timeout);

  -- Two identical calls racing: the second waits here, then finds the first's session.
  perform pg_advisory_xact_lock(hashtextextended('hitl_open_case:' || v_key, 0));
  select * into s from public.hil_sessions where idempotency_key = v_key;
  if found then
    v_existed := true;
    if s.status not in ('waiting', 'answered') then
      -- A retry after a timeout waits again on the same case, which stays answerable.
      update public.hil_sessions
         set status = 'waiting', expires_at = v_deadline, closed_at = null,
             metadata = metadata || jsonb_build_object('retried_at', v_now)
       where id = s.id
       returning * into s;
    end if;
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    values ('relay', 'open_case', s.case_id, s.id, 'joined_existing',
            jsonb_build_object('retell_call_id', v_call, 'mcp_session_id', v_session));
  else
    insert into public.cases (id, title, description, status, priority, urgency, source,
                              metadata, created_at, expires_at)
    values (
      v_case_id, left(v_question, 120), v_question, 'open', v_priority, v_urgency, 'mcp_voice',
      jsonb_build_object(
        'context', v_context,
        'mcp_session_id', v_session,
        'retell_call_id', v_call,
        'retell_agent_id', v_agent,
        'caller_info', v_caller,
        'conversation_history', v_history,
        'response_timeout', v_timeout,
        'deadline_at', v_deadline,
        'callback_url', v_callback),
      v_now, v_now + make_interval(secs => v_ttl));
    if v_secret is not null then
      insert into public.hil_case_secrets (case_id, webhook_secret) values (v_case_id, v_secret);
    end if;
    insert into public.hil_sessions (mcp_session_id, retell_call_id, retell_agent_id, case_id,
                                     idempotency_key, status, created_at, expires_at)
    values (v_session, v_call, v_agent, v_case_id, v_key, 'waiting', v_now, v_deadline)
    returning * into s;
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    values ('relay', 'open_case', v_case_id, s.id, 'opened',
            jsonb_build_object('retell_call_id', v_call, 'mcp_session_id', v_session,
                               'priority', v_priority, 'urgency', v_urgency));
  end if;
  return jsonb_build_object(
    'case_id', s.case_id, 'session_id', s.id, 'expires_at', s.expires_at,
    'existed', v_existed, 'status', s.status);
end;
$$;

-- The answer of a case: the first human answer (or "cannot answer") message, decided once by
-- the messages trigger (cases.answer_message_id), so every reader sees the same one.
create or replace function public.hitl_answer(p_case_id uuid) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select jsonb_build_object(
    'message_id', m.id, 'case_id', m.case_id, 'content', m.content, 'kind', m.kind,
    'sender_id', m.sender_id, 'created_at', m.created_at)
  from public.cases c
  join public.messages m on m.id = c.answer_message_id
  where c.id = p_case_id
$$;

create or replace function public.hitl_close_session(p_session_id uuid, p_status text,
                                                     p_detail jsonb default '{}'::jsonb)
returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  s public.hil_sessions;
  v_changed boolean := false;
begin
  if p_status is null or p_status not in ('answered', 'timed_out', 'expired', 'failed', 'cancelled') then
    perform public.hitl_invalid('p_status',
      'must be one of answered, timed_out, expired, failed, cancelled');
  end if;
  update public.hil_sessions
     set status = p_status, closed_at = now(),
         metadata = metadata || jsonb_build_object('close', coalesce(p_detail, '{}'::jsonb))
   where id = p_session_id and status = 'waiting'
  returning * into s;
  if found then
    v_changed := true;
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    values ('relay', 'close_session', s.case_id, s.id, p_status, coalesce(p_detail, '{}'::jsonb));
  else
    select * into s from public.hil_sessions where id = p_session_id;
    if not found then
      perform public.hitl_invalid('p_session_id', 'no such session');
    end if;
  end if;
  return jsonb_build_object('session_id', s.id, 'status', s.status, 'changed', v_changed);
end;
$$;

-- pg_cron, every minute: sessions nobody closed by their deadline (their relay died) and open
-- cases past their answerable window become expired. Returns how many rows changed.
create or replace function public.hitl_expire_sessions() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  n_sessions integer;
  n_cases integer;
begin
  with expired as (
    update public.hil_sessions set status = 'expired', closed_at = now()
     where status = 'waiting' and expires_at < now()
    returning id, case_id
  )
  insert into public.hil_audit (actor, action, case_id, session_id, outcome)
  select 'cron', 'expire_session', case_id, id, 'expired' from expired;
  get diagnostics n_sessions = row_count;

  with expired as (
    update public.cases set status = 'expired'
     where source = 'mcp_voice' and status = 'open' and expires_at < now()
    returning id
  )
  insert into public.hil_audit (actor, action, case_id, outcome)
  select 'cron', 'expire_case', id, 'expired' from expired;
  get diagnostics n_cases = row_count;
  return n_sessions + n_cases;
end;
$$;

-- pg_cron, daily: drop closed relay cases, their sessions and messages, and audit rows older
-- than the interval. Open cases and recent rows are kept.
create or replace function public.hitl_purge(p_older_than interval) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_cutoff timestamptz;
  n_cases integer;
  n_audit integer;
  n_realtime integer := 0;
begin
  if p_older_than is null or p_older_than < interval '1 hour' then
    perform public.hitl_invalid('p_older_than', 'must be at least 1 hour');
  end if;
  v_cutoff := now() - p_older_than;
  delete from public.cases c
   where c.source = 'mcp_voice' and c.status <> 'open' and c.created_at < v_cutoff
     and not exists (select 1 from public.hil_sessions s
                      where s.case_id = c.id and s.status = 'waiting');
  get diagnostics n_cases = row_count;
  delete from public.hil_audit where at < v_cutoff;
  get diagnostics n_audit = row_count;
  if to_regclass('realtime.messages') is not null then
    execute 'delete from realtime.messages where inserted_at < $1' using v_cutoff::timestamp;
    get diagnostics n_realtime = row_count;
  end if;
  return jsonb_build_object('cases', n_cases, 'audit', n_audit, 'realtime_messages', n_realtime);
end;
$$;

revoke all on function public.hitl_open_case(jsonb) from public, anon, authenticated;
revoke all on function public.hitl_answer(uuid) from public, anon, authenticated;
revoke all on function public.hitl_close_session(uuid, text, jsonb) from public, anon, authenticated;
revoke all on function public.hitl_expire_sessions() from public, anon, authenticated;
revoke all on function public.hitl_purge(interval) from public, anon, authenticated;
grant execute on function public.hitl_open_case(jsonb), public.hitl_answer(uuid),
  public.hitl_close_session(uuid, text, jsonb), public.hitl_expire_sessions(),
  public.hitl_purge(interval) to service_role;
grant execute on function public.hitl_is_operator() to anon, authenticated, service_role;
