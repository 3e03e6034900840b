-- Hardening of the relay's functions (replaces earlier definitions; additive like the rest):
-- * hitl_open_case validates every turn of conversation_history ({role 1-64, content <= 8000}),
--   requires printable ids, names the field of an oversized value (a 1 MB question is
--   "invalid question: ..."), and turns a case id already taken by another case into a named
--   error instead of a unique violation. A retry whose case expired revives the case.
-- * hitl_expire_sessions also ends waiting sessions of cases it expires.
-- * hitl_purge skips realtime.messages when the role may not delete there (Supabase's janitor
--   owns that table on a real project).
-- * hil_audit is append-only: rows are never updated (hitl_purge may still delete old rows).

create or replace function public.hitl_id(p jsonb, p_field text) returns text
language plpgsql as $$
declare
  t text := public.hitl_text(p, p_field, 128);
begin
  if t ~ '[[:cntrl:]]' then
    perform public.hitl_invalid(p_field, 'must be 1 to 128 printable characters');
  end if;
  return t;
end;
$$;

create or replace function public.hitl_history(p jsonb) returns jsonb
language plpgsql as $$
declare
  v jsonb := coalesce(p -> 'conversation_history', '[]'::jsonb);
  turn jsonb;
  i integer := 0;
begin
  if jsonb_typeof(v) = 'null' then
    return '[]'::jsonb;
  end if;
  if jsonb_typeof(v) <> 'array' then
    perform public.hitl_invalid('conversation_history', 'must be an array of {role, content}');
  end if;
  if jsonb_array_length(v) > 200 then
    perform public.hitl_invalid('conversation_history', 'must have at most 200 turns');
  end if;
  for turn in select value from jsonb_array_elements(v) loop
    if jsonb_typeof(turn) <> 'object'
       or jsonb_typeof(turn -> 'role') is distinct from 'string'
       or jsonb_typeof(turn -> 'content') is distinct from 'string'
       or length(turn ->> 'role') not between 1 and 64
       or length(turn ->> 'content') > 8000 then
      perform public.hitl_invalid('conversation_history',
        format('turn %s must be {role: 1-64 characters, content: at most 8000 characters}', i));
    end if;
    i := i + 1;
  end loop;
  return v;
end;
$$;

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
  v_question := public.hitl_text(p, 'question', 2000);
  v_context := public.hitl_text(p, 'context', 8000, false);
  v_session := public.hitl_id(p, 'mcp_session_id');
  v_call := public.hitl_id(p, 'retell_call_id');
  v_agent := public.hitl_id(p, 'retell_agent_id');
  v_priority := public.hitl_int(p, 'priority', 1, 5, 3);
  v_timeout := public.hitl_int(p, 'timeout_seconds', 5, 600, 45);
  v_ttl := public.hitl_int(p, 'case_ttl_seconds', 60, 7 * 86400, 3600);
  v_urgency := coalesce(public.hitl_text(p, 'urgency', 16, false), 'medium');
  if v_urgency not in ('low', 'medium', 'high') then
    perform public.hitl_invalid('urgency', 'must be one of low, medium, high');
  end if;
  v_caller := p -> 'caller_info';
  if v_caller is null or jsonb_typeof(v_caller) = 'null' then
    v_caller := '{}'::jsonb;
  end if;
  if jsonb_typeof(v_caller) <> 'object' then
    perform public.hitl_invalid('caller_info', 'must be an object');
  end if;
  if octet_length(v_caller::text) > 16384 then
    perform public.hitl_invalid('caller_info', 'must be at most 16 KB as JSON');
  end if;
  v_history := public.hitl_history(p);
  v_callback := public.hitl_text(p, 'callback_url', 2048, false);
  if v_callback is not null and v_callback !~* '^https?://' then
    perform public.hitl_invalid('callback_url', 'must be an http(s) URL');
  end if;
  v_secret := public.hitl_text(p, 'webhook_secret', 256, false);
  if p ? 'case_id' and jsonb_typeof(p -> 'case_id') <> 'null' then
    if jsonb_typeof(p -> 'case_id') <> 'string' then
      perform public.hitl_invalid('case_id', 'must be a UUID');
    end if;
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
      update public.cases
         set status = 'open', expires_at = greatest(expires_at, v_now + make_interval(secs => v_ttl))
       where id = s.case_id and status = 'expired' and answer_message_id is null;
    end if;
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    values ('relay', 'open_case', s.case_id, s.id, 'joined_existing',
            jsonb_build_object('retell_call_id', v_call, 'mcp_session_id', v_session));
  else
    if exists (select 1 from public.cases where id = v_case_id) then
      perform public.hitl_invalid('case_id', 'is already used by another case');
    end if;
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

-- pg_cron, every minute: open relay cases past their answerable window become expired, and
-- waiting sessions past their deadline (their relay died) or of a case just expired become
-- expired (the session trigger broadcasts each). Returns how many rows changed.
create or replace function public.hitl_expire_sessions() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  n_sessions integer;
  n_cases integer;
begin
  with expired as (
    update public.cases set status = 'expired'
     where source = 'mcp_voice' and status = 'open' and expires_at < now()
    returning id
  )
  insert into public.hil_audit (actor, action, case_id, outcome)
  select 'cron', 'expire_case', id, 'expired' from expired;
  get diagnostics n_cases = row_count;

  with expired as (
    update public.hil_sessions s set status = 'expired', closed_at = now()
     where s.status = 'waiting'
       and (s.expires_at < now()
            or exists (select 1 from public.cases c where c.id = s.case_id and c.status = 'expired'))
    returning s.id, s.case_id
  )
  insert into public.hil_audit (actor, action, case_id, session_id, outcome)
  select 'cron', 'expire_session', case_id, id, 'expired' from expired;
  get diagnostics n_sessions = row_count;
  return n_sessions + n_cases;
end;
$$;

-- pg_cron, daily: drop finished relay cases (with their sessions, messages and secrets) and audit
-- rows older than the interval. Open cases, cases with a waiting session and recent rows stay.
create or replace function public.hitl_purge(p_older_than interval) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_cutoff timestamptz;
  n_cases integer;
  n_audit integer;
  n_realtime integer;
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
  begin
    delete from realtime.messages where inserted_at < v_cutoff::timestamp;
    get diagnostics n_realtime = row_count;
  exception when insufficient_privilege or undefined_table then
    n_realtime := null;  -- Supabase's Realtime janitor prunes it on a real project
  end;
  return jsonb_build_object('cases', n_cases, 'audit', n_audit, 'realtime_messages', n_realtime);
end;
$$;

create or replace function public.hitl_audit_append_only() returns trigger
language plpgsql as $$
begin
  raise exception using errcode = '42501', message = 'hil_audit is append-only',
    hint = 'audit rows are never updated; hitl_purge deletes old ones';
end;
$$;

create or replace trigger hitl_audit_append_only
  before update on public.hil_audit
  for each row execute function public.hitl_audit_append_only();

revoke all on function public.hitl_id(jsonb, text), public.hitl_history(jsonb),
  public.hitl_invalid(text, text), public.hitl_text(jsonb, text, integer, boolean),
  public.hitl_int(jsonb, text, integer, integer, integer)
  from public, anon, authenticated;
revoke all on function public.hitl_open_case(jsonb) from public, anon, authenticated;
revoke all on function public.hitl_expire_sessions() from public, anon, authenticated;
revoke all on function public.hitl_purge(interval) from public, anon, authenticated;
grant execute on function public.hitl_open_case(jsonb), public.hitl_expire_sessions(),
  public.hitl_purge(interval) to service_role;
