CREATE SCHEMA auth;

CREATE SCHEMA public;

CREATE SCHEMA realtime;

CREATE SCHEMA supabase_migrations;

CREATE TYPE realtime.action AS ENUM (
    'INSERT',
    'UPDATE',
    'DELETE',
    'TRUNCATE',
    'ERROR'
);

CREATE TYPE realtime.equality_op AS ENUM (
    'eq',
    'neq',
    'lt',
    'lte',
    'gt',
    'gte',
    'in',
    'like',
    'ilike',
    'is',
    'match',
    'imatch',
    'isdistinct'
);

CREATE TYPE realtime.user_defined_filter AS (
	column_name text,
	op realtime.equality_op,
	value text,
	negate boolean
);

CREATE TYPE realtime.wal_column AS (
	name text,
	type_name text,
	type_oid oid,
	value jsonb,
	is_pkey boolean,
	is_selectable boolean
);

CREATE TYPE realtime.wal_rls AS (
	wal jsonb,
	is_rls_enabled boolean,
	subscription_ids uuid[],
	errors text[]
);

CREATE FUNCTION auth.email() RETURNS text
    LANGUAGE sql STABLE
    AS $$
      select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
      )::text
    $$;

CREATE FUNCTION auth.jwt() RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $$;

CREATE FUNCTION auth.role() RETURNS text
    LANGUAGE sql STABLE
    AS $$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $$;

CREATE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $$;

CREATE FUNCTION public.hitl_answer(p_case_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select jsonb_build_object(
    'message_id', m.id, 'case_id', m.case_id, 'content', m.content, 'kind', m.kind,
    'sender_id', m.sender_id, 'created_at', m.created_at, 'option_index', m.option_index,
    'option', c.options ->> m.option_index)
  from public.cases c
  join public.messages m on m.id = c.answer_message_id
  where c.id = p_case_id
$$;

CREATE FUNCTION public.hitl_attach_thread() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_thread jsonb;
begin
  if new.source = 'mcp_voice' and new.metadata ? 'retell_call_id' then
    v_thread := public.hitl_call_history(new.metadata ->> 'retell_call_id');
    if jsonb_array_length(v_thread) > 0 then
      new.metadata := new.metadata || jsonb_build_object('thread', v_thread);
    end if;
  end if;
  return new;
end;
$$;

CREATE FUNCTION public.hitl_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
  raise exception using errcode = '42501', message = 'hil_audit is append-only',
    hint = 'audit rows are never updated; hitl_purge deletes old ones';
end;
$$;

CREATE FUNCTION public.hitl_before_case_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.hitl_before_message() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_call_history(p_call_id text) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select coalesce(jsonb_agg(entry order by asked_at), '[]'::jsonb)
  from (
    select c.id as case_id, min(s.created_at) as asked_at,
           jsonb_build_object(
             'case_id', c.id,
             'question', c.description,
             'status', c.status,
             'asked_at', min(s.created_at),
             'answer', (select m.content from public.messages m where m.id = c.answer_message_id),
             'answer_kind', (select m.kind from public.messages m where m.id = c.answer_message_id),
             'answered_at', c.answered_at,
             'exchanges', (
               select coalesce(jsonb_agg(jsonb_build_object(
                        'sender_type', m.sender_type, 'kind', m.kind, 'content', m.content,
                        'created_at', m.created_at) order by m.created_at, m.id), '[]'::jsonb)
                 from public.messages m where m.case_id = c.id)
           ) as entry
      from public.hil_sessions s
      join public.cases c on c.id = s.case_id
     where s.retell_call_id = p_call_id
     group by c.id
  ) t
$$;

CREATE FUNCTION public.hitl_callback_on_answer() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
  if old.answer_message_id is null and new.answer_message_id is not null
     and coalesce(new.metadata ->> 'callback_url', '') <> '' then
    insert into public.hil_callbacks (case_id, event) values (new.id, 'answer')
    on conflict (case_id, event) do nothing;
  end if;
  return null;
end;
$$;

CREATE FUNCTION public.hitl_callback_on_timeout() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
  if new.status = 'timed_out' and old.status is distinct from 'timed_out'
     and exists (select 1 from public.cases c
                  where c.id = new.case_id and c.answer_message_id is null
                    and coalesce(c.metadata ->> 'callback_url', '') <> '') then
    insert into public.hil_callbacks (case_id, session_id, event)
    values (new.case_id, new.id, 'timeout')
    on conflict (case_id, event) do nothing;
  end if;
  return null;
end;
$$;

CREATE FUNCTION public.hitl_callback_result(p_id bigint, p_outcome text, p_detail jsonb DEFAULT '{}'::jsonb, p_retry_in_seconds integer DEFAULT 60) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  cb public.hil_callbacks;
begin
  if p_outcome is null or p_outcome not in ('delivered', 'failed', 'retry') then
    perform public.hitl_invalid('p_outcome', 'must be one of delivered, failed, retry');
  end if;
  update public.hil_callbacks
     set delivered_at = case when p_outcome = 'delivered' then now() end,
         failed_at = case when p_outcome = 'failed' then now() end,
         next_attempt_at = case when p_outcome = 'retry'
           then now() + make_interval(secs => greatest(1, least(coalesce(p_retry_in_seconds, 60), 86400)))
           else next_attempt_at end,
         claimed_until = null,
         last_status = nullif(p_detail ->> 'status', '')::integer,
         last_error = left(p_detail ->> 'error', 500)
   where id = p_id and delivered_at is null and failed_at is null
  returning * into cb;
  if not found then
    return jsonb_build_object('id', p_id, 'changed', false);
  end if;
  insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
  values ('relay', 'callback_' || cb.event, cb.case_id, cb.session_id, p_outcome,
          coalesce(p_detail, '{}'::jsonb) || jsonb_build_object('attempts', cb.attempts));
  return jsonb_build_object('id', p_id, 'changed', true);
end;
$$;

CREATE FUNCTION public.hitl_callbacks_claim(p_limit integer DEFAULT 10, p_lease_seconds integer DEFAULT 120) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_out jsonb;
begin
  if p_limit is null or p_limit not between 1 and 100 then
    perform public.hitl_invalid('p_limit', 'must be between 1 and 100');
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 5 and 3600 then
    perform public.hitl_invalid('p_lease_seconds', 'must be between 5 and 3600');
  end if;
  with due as (
    select cb.id from public.hil_callbacks cb
     where cb.delivered_at is null and cb.failed_at is null and cb.next_attempt_at <= now()
       and (cb.claimed_until is null or cb.claimed_until < now())
     order by cb.next_attempt_at, cb.id
     limit p_limit
     for update skip locked
  ), claimed as (
    update public.hil_callbacks cb
       set attempts = cb.attempts + 1,
           claimed_until = now() + make_interval(secs => p_lease_seconds)
      from due
     where cb.id = due.id
    returning cb.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', cl.id,
           'case_id', cl.case_id,
           'event', cl.event,
           'attempts', cl.attempts,
           'callback_url', k.metadata ->> 'callback_url',
           'webhook_secret', s.webhook_secret,
           'payload', jsonb_build_object(
             'event', cl.event,
             'case_id', cl.case_id,
             'session_id', cl.session_id,
             'call_id', k.metadata ->> 'retell_call_id',
             'status', case
               when cl.event = 'timeout' then 'timeout'
               when m.kind = 'cannot_answer' or btrim(coalesce(m.content, '')) = '' then 'unclear_answer'
               else 'answered' end,
             'answer', case when cl.event = 'answer' then m.content end,
             'answer_kind', case when cl.event = 'answer' then m.kind end,
             'answered_at', case when cl.event = 'answer' then k.answered_at end,
             'queued_at', cl.created_at)
         ) order by cl.id), '[]'::jsonb)
    into v_out
    from claimed cl
    join public.cases k on k.id = cl.case_id
    left join public.hil_case_secrets s on s.case_id = cl.case_id
    left join public.messages m on m.id = k.answer_message_id;
  return v_out;
end;
$$;

CREATE FUNCTION public.hitl_case_owned(p_case_id uuid, p_owner text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO ''
    AS $$
  select exists (
    select 1 from public.hil_sessions
     where case_id = p_case_id and starts_with(idempotency_key, p_owner || ':'))
$$;

CREATE FUNCTION public.hitl_case_replies(p_case_ids uuid[]) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
  if p_case_ids is null then
    perform public.hitl_invalid('p_case_ids', 'is required');
  end if;
  if cardinality(p_case_ids) > 500 then
    perform public.hitl_invalid('p_case_ids', 'must hold at most 500 case ids');
  end if;
  return coalesce((
    -- Most waiting cases have no reply yet: only a case with an answer or a human question back
    -- can have one, and finding those as a set (joins, not a function call per id) keeps a read
    -- of 500 waiting cases cheap; hitl_case_reply then decides for the few found.
    with ids as (
      select distinct t.id from unnest(p_case_ids) as t(id) where t.id is not null
    ), candidates as (
      select c.id from public.cases c join ids on ids.id = c.id
       where c.answer_message_id is not null
      union
      select m.case_id from public.messages m join ids on ids.id = m.case_id
       where m.sender_type = 'human' and m.kind = 'clarification'
    )
    select jsonb_agg(jsonb_build_object('case_id', k.id) || r.reply order by k.id)
      from candidates k
      cross join lateral (select public.hitl_case_reply(k.id) as reply) r
     where r.reply ->> 'answer' is not null or r.reply ->> 'clarification' is not null
  ), '[]'::jsonb);
end $$;

CREATE FUNCTION public.hitl_case_reply(p_case_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select jsonb_build_object(
    'answer', x.answer,
    'clarification', case when x.answer is null
                          then public.hitl_pending_clarification(p_case_id) end)
    from (select public.hitl_answer(p_case_id) as answer) x
$$;

CREATE FUNCTION public.hitl_case_status(p_case_id uuid) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select status from public.cases where id = p_case_id
$$;

CREATE FUNCTION public.hitl_claim_live(p_claimed_by uuid, p_expires timestamp with time zone) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  select p_claimed_by is not null and p_expires > now() and public.hitl_operator_present(p_claimed_by)
$$;

CREATE FUNCTION public.hitl_close_session(p_session_id uuid, p_status text, p_detail jsonb DEFAULT '{}'::jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  s public.hil_sessions;
  v_changed boolean := false;
begin
  if p_status is null
     or p_status not in ('answered', 'needs_info', 'timed_out', 'expired', 'failed', 'cancelled') then
    perform public.hitl_invalid('p_status',
      'must be one of answered, needs_info, timed_out, expired, failed, cancelled');
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

CREATE FUNCTION public.hitl_continue_case(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_case_id uuid;
  v_reply text;
  v_session text;
  v_call text;
  v_agent text;
  v_timeout integer;
  v_key text;
  v_question uuid;
  v_now timestamptz := now();
  c public.cases;
  s public.hil_sessions;
  v_existed boolean := false;
begin
  if p is null or jsonb_typeof(p) <> 'object' then
    perform public.hitl_invalid('p', 'must be a JSON object');
  end if;
  begin
    v_case_id := (p ->> 'case_id')::uuid;
  exception when invalid_text_representation then
    perform public.hitl_invalid('case_id', 'must be a UUID');
  end;
  if v_case_id is null then
    perform public.hitl_invalid('case_id', 'is required');
  end if;
  v_reply := public.hitl_text(p, 'question', 2000);
  v_session := public.hitl_text(p, 'mcp_session_id', 128);
  v_call := public.hitl_text(p, 'retell_call_id', 128);
  v_agent := public.hitl_text(p, 'retell_agent_id', 128);
  v_timeout := public.hitl_int(p, 'timeout_seconds', 5, 600, 45);

  select * into c from public.cases where id = v_case_id and source = 'mcp_voice' for update;
  if not found then
    perform public.hitl_invalid('case_id', 'no such case');
  end if;
  if c.metadata ->> 'retell_call_id' is distinct from v_call then
    perform public.hitl_invalid('case_id', 'belongs to another call');
  end if;
  if c.status in ('expired', 'cancelled', 'closed') then
    perform public.hitl_invalid('case_id', format('is %s and can no longer be continued', c.status));
  end if;

  -- The reply answers the newest question back: a retry finds the same question (the reply's
  -- note does not change it), a reply to a later question is another key even in the same words.
  select m.id into v_question from public.messages m
   where m.case_id = v_case_id and m.sender_type = 'human' and m.kind = 'clarification'
   order by m.created_at desc, m.id desc
   limit 1;
  v_key := v_call || ':' || v_case_id::text || ':' || coalesce(v_question::text, '-') || ':'
           || encode(sha256(convert_to(v_reply, 'UTF8')), 'hex');
  select * into s from public.hil_sessions where idempotency_key = v_key;
  if found then
    v_existed := true;
  else
    insert into public.messages (case_id, sender_type, content, kind)
    values (v_case_id, 'ai', v_reply, 'note');
    -- A previous waiting session of this case is superseded by the follow-up.
    update public.hil_sessions set status = 'needs_info', closed_at = v_now,
           metadata = metadata || jsonb_build_object('close', jsonb_build_object('reason', 'needs_info'))
     where case_id = v_case_id and status = 'waiting';
    insert into public.hil_sessions (mcp_session_id, retell_call_id, retell_agent_id, case_id,
                                     idempotency_key, status, created_at, expires_at, metadata)
    values (v_session, v_call, v_agent, v_case_id, v_key, 'waiting', v_now,
            v_now + make_interval(secs => v_timeout), jsonb_build_object('follow_up', true))
    returning * into s;
    update public.cases
       set metadata = jsonb_set(metadata, '{deadline_at}', to_jsonb(s.expires_at))
     where id = v_case_id;
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    values ('relay', 'continue_case', v_case_id, s.id, 'continued',
            jsonb_build_object('retell_call_id', v_call));
  end if;
  return jsonb_build_object(
    'case_id', s.case_id, 'session_id', s.id, 'expires_at', s.expires_at,
    'existed', v_existed, 'status', s.status);
end;
$$;

CREATE FUNCTION public.hitl_escalate() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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
           c.escalated_at,
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
       and (not ('unclaimed' = any (r.escalated_for)) or r.priority < 5)
       and v_unclaimed ? r.priority::text
       and now() - greatest(r.created_at, r.escalated_at)
           >= make_interval(secs => (v_unclaimed ->> r.priority::text)::int) then
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
           escalation_level = escalation_level + 1,
           escalated_for = case when v_reason = any (escalated_for) then escalated_for
                                else escalated_for || v_reason end
     where id = r.id;
    v_payload := jsonb_build_object(
      'case_id', r.id, 'reason', v_reason, 'priority', least(5, r.priority + 1),
      'previous_priority', r.priority, 'claimed_by', r.claimed_by, 'deadline_at', r.deadline,
      'question', r.description, 'retell_call_id', r.call_id, 'escalated_at', now());
    perform realtime.send(v_payload, 'escalated', 'operators', true);
    perform realtime.send(v_payload, 'escalated', 'case:' || r.id::text, true);
    if not (v_reason = any (r.escalated_for)) then
      insert into public.hil_notifications (case_id, reason, payload) values (r.id, v_reason, v_payload);
    end if;
    insert into public.hil_audit (actor, action, case_id, outcome, detail)
    values ('escalation', 'escalate', r.id, v_reason, v_payload);
    n := n + 1;
  end loop;
  return n;
end;
$$;

CREATE FUNCTION public.hitl_event_canonical(p_event text, p_payload jsonb, p_fields text[]) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select p_event || coalesce(string_agg(
    E'\n' || f || '=' || case when p_payload ->> f is null then '-'
                              else length(p_payload ->> f)::text || ':' || (p_payload ->> f) end,
    '' order by n), '')
  from unnest(p_fields) with ordinality as t(f, n)
$$;

CREATE FUNCTION public.hitl_event_key() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO ''
    AS $$
  select encode(key, 'hex') from public.hitl_event_key where id = 1
$$;

CREATE FUNCTION public.hitl_event_key_pad(p_key bytea, p_byte integer) RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO ''
    AS $$
declare
  v bytea := p_key || decode(repeat('00', 64 - octet_length(p_key)), 'hex');
begin
  for i in 0 .. 63 loop
    v := set_byte(v, i, get_byte(v, i) # p_byte);
  end loop;
  return v;
end;
$$;

CREATE FUNCTION public.hitl_expire_sessions() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_expiry_job() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_jobid bigint;
  v_last timestamptz;
begin
  begin
    select jobid into v_jobid from cron.job where jobname = 'hitl-expire-sessions';
  exception when undefined_table or invalid_schema_name or insufficient_privilege then
    return jsonb_build_object('scheduled', false, 'last_success', null);
  end;
  if v_jobid is null then
    return jsonb_build_object('scheduled', false, 'last_success', null);
  end if;
  -- Newest first by the primary key: stops at the first succeeded run however long the log.
  select end_time into v_last from cron.job_run_details
   where jobid = v_jobid and status = 'succeeded'
   order by runid desc limit 1;
  return jsonb_build_object('scheduled', true, 'last_success', v_last);
end;
$$;

CREATE FUNCTION public.hitl_history(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.hitl_id(p jsonb, p_field text) RETURNS text
    LANGUAGE plpgsql
    AS $$
declare
  t text := public.hitl_text(p, p_field, 128);
begin
  if t ~ '[[:cntrl:]]' then
    perform public.hitl_invalid(p_field, 'must be 1 to 128 printable characters');
  end if;
  return t;
end;
$$;

CREATE FUNCTION public.hitl_int(p jsonb, p_field text, p_min integer, p_max integer, p_default integer) RETURNS integer
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.hitl_invalid(p_field text, p_rule text) RETURNS void
    LANGUAGE plpgsql
    AS $$
begin
  raise exception using errcode = 'P0001', message = format('invalid %s: %s', p_field, p_rule),
    detail = p_field, hint = p_rule;
end;
$$;

CREATE FUNCTION public.hitl_is_operator() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  select coalesce(auth.jwt() -> 'app_metadata' ->> 'hitl_role', '') = 'operator'
$$;

CREATE FUNCTION public.hitl_is_relay_case(p_case_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select exists (select 1 from public.cases where id = p_case_id and source = 'mcp_voice')
$$;

CREATE FUNCTION public.hitl_message_defaults() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  if current_user in ('authenticated', 'anon') then
    new.id := gen_random_uuid();
    new.created_at := now();
  end if;
  return new;
end;
$$;

CREATE FUNCTION public.hitl_notification_done(p_id bigint, p_error text DEFAULT NULL::text) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  update public.hil_notifications
     set sent_at = case when p_error is null then now() end, last_error = p_error
   where id = p_id
$$;

CREATE FUNCTION public.hitl_on_case_opened() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
  perform realtime.send(
    public.hitl_sign_event('case_opened', jsonb_build_object(
      'case_id', new.id, 'priority', new.priority, 'urgency', new.urgency,
      'question', new.description, 'title', new.title,
      'deadline_at', new.metadata ->> 'deadline_at', 'expires_at', new.expires_at,
      'retell_call_id', new.metadata ->> 'retell_call_id', 'source', new.source),
      array['case_id', 'priority', 'urgency', 'question', 'title', 'deadline_at', 'expires_at',
            'retell_call_id', 'source'])
      || jsonb_build_object('thread', coalesce(new.metadata -> 'thread', '[]'::jsonb)),
    'case_opened', 'operators', true);
  return null;
end;
$$;

CREATE FUNCTION public.hitl_on_claim() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_on_message() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_on_message_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_on_session_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
  perform realtime.send(
    public.hitl_sign_event('session', jsonb_build_object(
      'session_id', new.id, 'case_id', new.case_id, 'status', new.status,
      'expires_at', new.expires_at),
      array['session_id', 'case_id', 'status', 'expires_at']),
    'session', 'case:' || new.case_id::text, true);
  return null;
end;
$$;

CREATE FUNCTION public.hitl_open_case(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_open_case_core(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_open_case_no_operator(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  r jsonb;
  s public.hil_sessions;
begin
  r := public.hitl_open_case(p);
  -- Ours to close: a new session, or one hitl_open_case just re-opened from a closed state (it
  -- stamps `retried_at` with this transaction's now()); not one another relay is waiting on.
  update public.hil_sessions
     set status = 'no_operator', closed_at = now(),
         metadata = metadata || jsonb_build_object('close', jsonb_build_object('outcome', 'no_operator'))
   where id = (r ->> 'session_id')::uuid
     and status = 'waiting'
     and (not (r ->> 'existed')::boolean
          or (metadata ->> 'retried_at')::timestamptz = now())
     and not exists (select 1 from public.cases c
                      where c.id = hil_sessions.case_id and c.answer_message_id is not null)
  returning * into s;
  if found then
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    values ('relay', 'close_session', s.case_id, s.id, 'no_operator',
            jsonb_build_object('outcome', 'no_operator'));
    r := r || jsonb_build_object('status', s.status);
  end if;
  return r;
end;
$$;

CREATE FUNCTION public.hitl_operator_heartbeat(p_status text DEFAULT 'available'::text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_uid uuid := auth.uid();
  a public.operator_activity;
  v_released integer;
begin
  if not public.hitl_is_operator() or v_uid is null then
    raise exception using errcode = '42501', message = 'only operators record availability';
  end if;
  if p_status not in ('available', 'away') then
    perform public.hitl_invalid('p_status', 'must be available or away');
  end if;
  -- The operator's newest row: an available interval still running (seen within 90 s) is
  -- extended or ended; an `away` row or an old interval means the next beat starts a new one.
  select * into a from public.operator_activity
   where operator_id = v_uid
   order by last_seen_at desc, id desc limit 1 for update;
  if not found or a.status <> 'available' or a.last_seen_at < now() - interval '90 seconds' then
    a := null;
  end if;
  if p_status = 'away' then
    if a.id is not null then
      update public.operator_activity set last_seen_at = now() where id = a.id;
    end if;
    insert into public.operator_activity (operator_id, status) values (v_uid, 'away');
    update public.cases set claimed_by = null, claimed_at = null, claim_expires_at = null
     where claimed_by = v_uid and source = 'mcp_voice' and status = 'open';
    get diagnostics v_released = row_count;
    return jsonb_build_object('operator_id', v_uid, 'status', 'away', 'interval_id', a.id,
                              'released_claims', v_released);
  end if;
  if a.id is not null then
    update public.operator_activity set last_seen_at = now() where id = a.id returning * into a;
  else
    insert into public.operator_activity (operator_id) values (v_uid) returning * into a;
  end if;
  return jsonb_build_object('operator_id', v_uid, 'status', 'available', 'interval_id', a.id,
                            'started_at', a.started_at, 'last_seen_at', a.last_seen_at);
end;
$$;

CREATE FUNCTION public.hitl_operator_present(p_operator uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select coalesce((
    select a.status = 'available'
           and a.last_seen_at >= now() - make_interval(
                 secs => (public.hitl_setting('claim_presence_seconds', '90') #>> '{}')::int)
      from public.operator_activity a
     where a.operator_id = p_operator
     order by a.last_seen_at desc, a.id desc
     limit 1), false)
$$;

CREATE FUNCTION public.hitl_operator_queue() RETURNS TABLE(case_id uuid, priority integer, deadline_at timestamp with time zone, claimed_by uuid, claim_live boolean, skills text[], escalation_level integer)
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_operator_skills() RETURNS text[]
    LANGUAGE sql STABLE
    AS $$
  select coalesce(array(
    select lower(s) from jsonb_array_elements_text(
      case when jsonb_typeof(auth.jwt() -> 'app_metadata' -> 'hitl_skills') = 'array'
           then auth.jwt() -> 'app_metadata' -> 'hitl_skills' else '[]'::jsonb end) s), '{}')
$$;

CREATE FUNCTION public.hitl_option_bounds() RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    AS $$
  select '{"min": 2, "max": 6, "max_chars": 80}'::jsonb
$$;

CREATE FUNCTION public.hitl_options(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    AS $$
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

CREATE FUNCTION public.hitl_pending_clarification(p_case_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select jsonb_build_object('message_id', m.id, 'case_id', m.case_id, 'content', m.content,
                            'kind', m.kind, 'sender_id', m.sender_id, 'created_at', m.created_at)
    from public.messages m
   where m.case_id = p_case_id and m.sender_type = 'human' and m.kind = 'clarification'
     and not exists (select 1 from public.messages later
                      where later.case_id = m.case_id and later.sender_type = 'ai'
                        and (later.created_at, later.id) > (m.created_at, m.id))
     and not exists (select 1 from public.cases c
                      where c.id = m.case_id and c.answer_message_id is not null)
   order by m.created_at desc, m.id desc
   limit 1
$$;

CREATE TABLE public.hil_notifications (
    id bigint NOT NULL,
    case_id uuid,
    reason text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    sent_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    last_error text
);

CREATE FUNCTION public.hitl_pending_notifications(p_limit integer DEFAULT 20) RETURNS SETOF public.hil_notifications
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  update public.hil_notifications n set attempts = attempts + 1
   where n.id in (select id from public.hil_notifications
                   where sent_at is null and attempts < 10
                   order by created_at limit p_limit for update skip locked)
  returning n.*
$$;

CREATE FUNCTION public.hitl_purge(p_older_than interval) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_rate_limit(p_key text, p_limits jsonb, p_hit boolean) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_now timestamptz := clock_timestamp();
  v_item jsonb;
  v_limit bigint;
  v_window bigint;
  v_start timestamptz;
  v_elapsed double precision;
  v_cur bigint;
  v_prev bigint;
  v_wait double precision := 0;
  v_item_wait double precision;
begin
  if p_key is null or length(p_key) not between 1 and 200 then
    raise exception using errcode = 'P0001', message = 'invalid p_key: must be 1 to 200 characters',
      detail = 'p_key', hint = 'must be 1 to 200 characters';
  end if;
  if p_limits is null or jsonb_typeof(p_limits) <> 'array'
     or jsonb_array_length(p_limits) not between 1 and 10 then
    raise exception using errcode = 'P0001',
      message = 'invalid p_limits: must be an array of 1 to 10 {limit, window_seconds} objects',
      detail = 'p_limits', hint = 'must be an array of 1 to 10 {limit, window_seconds} objects';
  end if;
  for v_item in select value from jsonb_array_elements(p_limits) loop
    if jsonb_typeof(v_item) <> 'object'
       or jsonb_typeof(v_item -> 'limit') <> 'number'
       or jsonb_typeof(v_item -> 'window_seconds') <> 'number'
       or (v_item ->> 'limit')::numeric not between 1 and 1000000000
       or (v_item ->> 'window_seconds')::numeric not between 1 and 2678400 then
      raise exception using errcode = 'P0001',
        message = 'invalid p_limits: each limit must be 1 to 1e9 per 1 s to 31 days',
        detail = 'p_limits', hint = 'each limit must be 1 to 1e9 per 1 s to 31 days';
    end if;
  end loop;

  -- One key's hits are decided one at a time, on every replica.
  perform pg_advisory_xact_lock(hashtextextended('hitl_rate_limit:' || p_key, 0));

  for v_item in select value from jsonb_array_elements(p_limits) loop
    v_limit := floor((v_item ->> 'limit')::numeric);
    v_window := floor((v_item ->> 'window_seconds')::numeric);
    v_start := to_timestamp(floor(extract(epoch from v_now) / v_window) * v_window);
    v_elapsed := extract(epoch from v_now - v_start) / v_window;
    select coalesce(sum(hits) filter (where window_start = v_start), 0),
           coalesce(sum(hits) filter (where window_start = v_start - make_interval(secs => v_window)), 0)
      into v_cur, v_prev
      from public.hil_rate_limits
     where key = p_key and window_seconds = v_window
       and window_start >= v_start - make_interval(secs => v_window);
    if v_prev * (1 - v_elapsed) + v_cur + 1 > v_limit then
      if v_cur + 1 <= v_limit then
        -- the previous window's weight must fade enough, within the current window
        v_item_wait := v_window * ((1 - v_elapsed) - (v_limit - 1 - v_cur)::double precision / v_prev);
      else
        -- wait for the next window, then for this window's weight (as the previous) to fade
        v_item_wait := v_window * (1 - v_elapsed)
                       + v_window * greatest(0, 1 - (v_limit - 1)::double precision / greatest(v_cur, 1));
      end if;
      v_wait := greatest(v_wait, v_item_wait, 0.001);
    end if;
  end loop;

  if v_wait > 0 then
    return jsonb_build_object('allowed', false, 'retry_after', round(v_wait::numeric, 3));
  end if;
  if p_hit then
    for v_item in select value from jsonb_array_elements(p_limits) loop
      v_window := floor((v_item ->> 'window_seconds')::numeric);
      v_start := to_timestamp(floor(extract(epoch from v_now) / v_window) * v_window);
      insert into public.hil_rate_limits as r (key, window_seconds, window_start, hits)
      values (p_key, v_window, v_start, 1)
      on conflict (key, window_seconds, window_start) do update set hits = r.hits + 1;
      delete from public.hil_rate_limits
       where key = p_key and window_seconds = v_window
         and window_start < v_start - make_interval(secs => v_window);
    end loop;
    -- Now and then, forget the counters of keys that went quiet (no cron job needed).
    if random() < 0.01 then
      delete from public.hil_rate_limits
       where ctid in (select ctid from public.hil_rate_limits
                       where window_start + make_interval(secs => 2 * window_seconds) < v_now
                       limit 1000);
    end if;
  end if;
  return jsonb_build_object('allowed', true, 'retry_after', 0);
end
$$;

CREATE FUNCTION public.hitl_rate_limit_hit(p_key text, p_limits jsonb) RETURNS jsonb
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select public.hitl_rate_limit(p_key, p_limits, true)
$$;

CREATE FUNCTION public.hitl_rate_limit_peek(p_key text, p_limits jsonb) RETURNS jsonb
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select public.hitl_rate_limit(p_key, p_limits, false)
$$;

CREATE FUNCTION public.hitl_recover_sessions(p_instance_id text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  v_detail jsonb := jsonb_build_object('reason', 'relay restarted');
  v_counts jsonb;
begin
  if p_instance_id is null or btrim(p_instance_id) = '' or length(p_instance_id) > 128 then
    perform public.hitl_invalid('p_instance_id', 'must be a non-empty text of at most 128 characters');
  end if;
  with closed as (
    update public.hil_sessions
       set status = case when expires_at <= now() then 'expired' else 'cancelled' end,
           closed_at = now(), metadata = metadata || jsonb_build_object('close', v_detail)
     where instance_id = p_instance_id and status = 'waiting'
    returning id, case_id, status
  ), audited as (
    insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
    select 'relay', 'recover_session', case_id, id, status,
           v_detail || jsonb_build_object('instance_id', p_instance_id)
      from closed
  )
  select jsonb_build_object('expired', count(*) filter (where status = 'expired'),
                            'cancelled', count(*) filter (where status = 'cancelled'))
    into v_counts from closed;
  return v_counts;
end;
$$;

CREATE FUNCTION public.hitl_release_claims() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION public.hitl_schema_version() RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$ select '20261206900000'::text $$;

CREATE FUNCTION public.hitl_session_instance() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
  if new.status = 'waiting' and (tg_op = 'INSERT' or old.status is distinct from 'waiting') then
    new.instance_id := nullif(left(
      coalesce(nullif(current_setting('request.headers', true), ''), '{}')::jsonb
        ->> 'x-hitl-instance', 128), '');
  end if;
  return new;
end;
$$;

CREATE FUNCTION public.hitl_session_status(p_session_id uuid) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO ''
    AS $$
  select status from public.hil_sessions where id = p_session_id
$$;

CREATE FUNCTION public.hitl_setting(p_key text, p_default jsonb) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select coalesce((select value from public.hil_settings where key = p_key), p_default)
$$;

CREATE FUNCTION public.hitl_sign_event(p_event text, p_payload jsonb, p_fields text[]) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO ''
    AS $$
declare
  k record;
  v_msg bytea := convert_to(public.hitl_event_canonical(p_event, p_payload, p_fields), 'UTF8');
begin
  select inner_pad, outer_pad into k from public.hitl_event_key where id = 1;
  if not found then
    return p_payload;  -- no key: the relay reads every event's case instead (still correct)
  end if;
  return p_payload || jsonb_build_object('sig',
    encode(sha256(k.outer_pad || sha256(k.inner_pad || v_msg)), 'hex'));
end;
$$;

CREATE FUNCTION public.hitl_skills(p jsonb) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    AS $$
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

CREATE FUNCTION public.hitl_success_metrics(p_from timestamp with time zone, p_to timestamp with time zone) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
with cases_in as (
  select c.id, c.created_at, c.answered_at, c.answer_message_id,
         (select m.kind from public.messages m where m.id = c.answer_message_id) as answer_kind,
         (select s.status from public.hil_sessions s where s.case_id = c.id
           order by s.created_at desc, s.id desc limit 1) as last_status,
         (select min(s.created_at) from public.hil_sessions s where s.case_id = c.id) as asked_at
    from public.cases c
   where c.source = 'mcp_voice' and c.created_at >= p_from and c.created_at < p_to
),
finished as (
  select *,
         case when last_status = 'answered' and answer_kind = 'cannot_answer' then 'cannot_answer'
              when last_status = 'answered' then 'answered'
              when last_status in ('timed_out', 'expired') then 'timed_out'
              else 'other' end as outcome
    from cases_in where last_status <> 'waiting'
),
answered as (
  select extract(epoch from (answered_at - asked_at)) as response_s
    from finished where outcome = 'answered' and answered_at is not null
),
spans as (
  select 'available'::text as kind, operator_id, greatest(started_at, p_from) as s,
         least(last_seen_at, p_to) as e
    from public.operator_activity
   where status = 'available' and last_seen_at > p_from and started_at < p_to
  union all
  -- Handling: case creation → this operator's answer.
  select 'handling', m.sender_id, greatest(c.created_at, p_from), least(m.created_at, p_to)
    from public.cases c
    join public.messages m on m.id = c.answer_message_id
   where c.source = 'mcp_voice' and m.sender_id is not null
     and m.created_at > p_from and c.created_at < p_to
),
spans_marked as (
  select kind, operator_id, s, e,
         case when s <= max(e) over (partition by kind, operator_id order by s, e
                                     rows between unbounded preceding and 1 preceding)
              then 0 else 1 end as new_group
    from spans
),
spans_grouped as (
  select kind, operator_id, s, e,
         sum(new_group) over (partition by kind, operator_id order by s, e) as grp
    from spans_marked
),
merged as (
  select kind, operator_id, min(s) as s, max(e) as e
    from spans_grouped group by kind, operator_id, grp
),
avail as (select operator_id, s, e from merged where kind = 'available'),
handled as (
  select coalesce(sum(extract(epoch from (least(h.e, a.e) - greatest(h.s, a.s)))), 0) as seconds
    from merged h
    join avail a on a.operator_id = h.operator_id and h.s < a.e and a.s < h.e
   where h.kind = 'handling'
),
available as (
  select coalesce(sum(extract(epoch from (e - s))), 0) as seconds from avail
),
figures as (
  select
    (select count(*) from cases_in) as cases,
    (select count(*) from finished) as finished,
    (select count(*) from finished where outcome = 'answered') as answered,
    (select count(*) from finished where outcome = 'cannot_answer') as cannot_answer,
    (select count(*) from finished where outcome = 'timed_out') as timed_out,
    (select count(*) from finished where outcome = 'other') as other,
    (select avg(response_s) from answered) as avg_response_s,
    (select percentile_cont(0.5) within group (order by response_s) from answered) as p50_s,
    (select percentile_cont(0.9) within group (order by response_s) from answered) as p90_s,
    (select percentile_cont(0.99) within group (order by response_s) from answered) as p99_s,
    (select seconds from handled) as handled_s,
    (select seconds from available) as available_s
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to),
  'cases', cases, 'finished', finished, 'answered', answered, 'cannot_answer', cannot_answer,
  'timed_out', timed_out, 'other', other,
  'avg_response_s', jsonb_build_object('value', round(avg_response_s::numeric, 3),
     'p50', round(p50_s::numeric, 3), 'p90', round(p90_s::numeric, 3),
     'p99', round(p99_s::numeric, 3), 'target', '< 30',
     'met', coalesce(avg_response_s < 30, false)),
  'success_rate', jsonb_build_object(
     'value', round(answered::numeric / nullif(finished, 0), 4), 'target', '> 0.95',
     'met', coalesce(answered::numeric / nullif(finished, 0) > 0.95, false)),
  'cannot_answer_rate', jsonb_build_object(
     'value', round(cannot_answer::numeric / nullif(finished, 0), 4)),
  'timeout_rate', jsonb_build_object(
     'value', round(timed_out::numeric / nullif(finished, 0), 4), 'target', '< 0.05',
     'met', coalesce(timed_out::numeric / nullif(finished, 0) < 0.05, false)),
  'operator_utilisation', jsonb_build_object(
     'value', round((handled_s / nullif(available_s, 0))::numeric, 4),
     'handled_s', round(handled_s::numeric, 3), 'available_s', round(available_s::numeric, 3),
     'target', '> 0.70',
     'met', coalesce(handled_s / nullif(available_s, 0) > 0.70, false)))
from figures
$$;

CREATE FUNCTION public.hitl_task_cancel(p_id text, p_owner text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  t public.hil_tasks;
  s record;
begin
  select * into t from public.hil_tasks
   where id = p_id and owner = p_owner and expires_at > now()
   for update;
  if not found then
    return null;
  end if;
  if t.status not in ('working', 'input_required') or t.result is not null
     or public.hitl_answer(t.case_id) is not null then
    return jsonb_build_object('terminal', true, 'task', public.hitl_task_json(t));
  end if;
  update public.hil_tasks
     set status = 'cancelled', status_message = 'The task was cancelled by request.',
         last_updated_at = now()
   where id = p_id
  returning * into t;
  for s in select id from public.hil_sessions
            where case_id = t.case_id and status = 'waiting'
              and created_at >= t.created_at - interval '1 second'
  loop
    perform public.hitl_close_session(s.id, 'cancelled', jsonb_build_object('task', 'cancelled'));
  end loop;
  return jsonb_build_object('terminal', false, 'task', public.hitl_task_json(t));
end
$$;

CREATE FUNCTION public.hitl_task_create(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  t public.hil_tasks;
  v_ttl bigint := (p->>'ttl_ms')::bigint;
begin
  insert into public.hil_tasks (id, owner, case_id, tool, call, era, status, status_message, result,
                                deadline_at, ttl_ms, poll_interval_ms, expires_at)
  values (p->>'id', p->>'owner', (p->>'case_id')::uuid, p->>'tool',
          coalesce(nullif(p->'call', 'null'::jsonb), '{}'::jsonb), p->>'era',
          coalesce(p->>'status', 'working'), p->>'status_message',
          nullif(p->'result', 'null'::jsonb),
          now() + make_interval(secs => (p->>'timeout_seconds')::double precision),
          v_ttl, (p->>'poll_interval_ms')::integer,
          now() + make_interval(secs => v_ttl / 1000.0))
  returning * into t;
  return public.hitl_task_json(t);
end
$$;

CREATE FUNCTION public.hitl_task_finish(p_id text, p_status text, p_status_message text, p_result jsonb, p_case_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  t public.hil_tasks;
begin
  if p_status is null or p_status not in ('input_required', 'completed', 'failed') then
    perform public.hitl_invalid('p_status', 'must be one of input_required, completed, failed');
  end if;
  update public.hil_tasks
     set status = p_status, status_message = p_status_message, result = p_result,
         case_id = coalesce(p_case_id, case_id), last_updated_at = now()
   where id = p_id and status in ('working', 'input_required')
  returning * into t;
  if not found then
    select * into t from public.hil_tasks where id = p_id;
  end if;
  return case when t.id is null then null else public.hitl_task_json(t) end;
end
$$;

CREATE FUNCTION public.hitl_task_get(p_id text, p_owner text) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select public.hitl_task_json(t) from public.hil_tasks t
   where t.id = p_id and t.owner = p_owner and t.expires_at > now()
$$;

CREATE TABLE public.hil_tasks (
    id text NOT NULL,
    owner text NOT NULL,
    case_id uuid NOT NULL,
    tool text NOT NULL,
    call jsonb DEFAULT '{}'::jsonb NOT NULL,
    era text NOT NULL,
    status text DEFAULT 'working'::text NOT NULL,
    status_message text,
    result jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_updated_at timestamp with time zone DEFAULT now() NOT NULL,
    deadline_at timestamp with time zone NOT NULL,
    ttl_ms bigint NOT NULL,
    poll_interval_ms integer NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT hil_tasks_era_check CHECK ((era = ANY (ARRAY['2025-11-25'::text, '2026-07-28'::text]))),
    CONSTRAINT hil_tasks_id_check CHECK (((length(id) >= 32) AND (length(id) <= 128))),
    CONSTRAINT hil_tasks_owner_check CHECK ((owner ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT hil_tasks_poll_interval_ms_check CHECK ((poll_interval_ms > 0)),
    CONSTRAINT hil_tasks_status_check CHECK ((status = ANY (ARRAY['working'::text, 'input_required'::text, 'completed'::text, 'failed'::text, 'cancelled'::text]))),
    CONSTRAINT hil_tasks_ttl_ms_check CHECK ((ttl_ms > 0))
);

CREATE FUNCTION public.hitl_task_json(t public.hil_tasks) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select jsonb_build_object(
    'id', t.id, 'case_id', t.case_id, 'tool', t.tool, 'call', t.call, 'era', t.era,
    'status', t.status,
    'status_message', t.status_message, 'result', t.result,
    'created_at', t.created_at, 'last_updated_at', t.last_updated_at,
    'deadline_at', t.deadline_at, 'ttl_ms', t.ttl_ms, 'poll_interval_ms', t.poll_interval_ms,
    'now', now(),
    'reply', case when t.result is null and t.status in ('working', 'input_required')
                  then public.hitl_case_reply(t.case_id) end)
$$;

CREATE FUNCTION public.hitl_task_list(p_owner text, p_after_created timestamp with time zone, p_after_id text, p_limit integer) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  select coalesce(jsonb_agg(public.hitl_task_json(t) order by t.created_at, t.id), '[]'::jsonb)
    from (select * from public.hil_tasks
           where owner = p_owner and expires_at > now()
             and (p_after_created is null or (created_at, id) > (p_after_created, p_after_id))
           order by created_at, id
           limit greatest(1, least(p_limit, 100))) t
$$;

CREATE FUNCTION public.hitl_task_resume(p_id text, p_owner text, p_timeout_seconds double precision) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
  t public.hil_tasks;
begin
  update public.hil_tasks
     set deadline_at = now() + make_interval(secs => p_timeout_seconds), last_updated_at = now()
   where id = p_id and owner = p_owner and expires_at > now()
     and status in ('working', 'input_required') and result is null
  returning * into t;
  return case when t.id is null then null else public.hitl_task_json(t) end;
end
$$;

CREATE FUNCTION public.hitl_tasks_purge() RETURNS integer
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
  with gone as (delete from public.hil_tasks where expires_at <= now() returning 1)
  select count(*)::integer from gone
$$;

CREATE FUNCTION public.hitl_text(p jsonb, p_field text, p_max integer, p_required boolean DEFAULT true) RETURNS text
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION realtime.apply_rls(wal jsonb, max_record_bytes integer DEFAULT (1024 * 1024)) RETURNS SETOF realtime.wal_rls
    LANGUAGE plpgsql
    AS $$
declare
    -- Regclass of the table e.g. public.notes
    entity_ regclass = (quote_ident(wal ->> 'schema') || '.' || quote_ident(wal ->> 'table'))::regclass;

    -- I, U, D, T: insert, update ...
    action realtime.action = (
        case wal ->> 'action'
            when 'I' then 'INSERT'
            when 'U' then 'UPDATE'
            when 'D' then 'DELETE'
            else 'ERROR'
        end
    );

    -- Is row level security enabled for the table
    is_rls_enabled bool = relrowsecurity from pg_class where oid = entity_;

    subscriptions realtime.subscription[] = array_agg(subs)
        from
            realtime.subscription subs
        where
            subs.entity = entity_
            -- Filter by action early - only get subscriptions interested in this action
            -- action_filter column can be: '*' (all), 'INSERT', 'UPDATE', or 'DELETE'
            and (subs.action_filter = '*' or subs.action_filter = action::text);

    -- Subscription vars
    working_role regrole;
    working_selected_columns text[];
    claimed_role regrole;
    claims jsonb;

    subscription_id uuid;
    subscription_has_access bool;
    visible_to_subscription_ids uuid[] = '{}';

    -- structured info for wal's columns
    columns realtime.wal_column[];
    -- previous identity values for update/delete
    old_columns realtime.wal_column[];

    error_record_exceeds_max_size boolean = octet_length(wal::text) > max_record_bytes;

    -- Primary jsonb output for record
    output jsonb;

    -- Loop record for iterating unique roles (outer loop)
    role_record record;
    -- Loop record for iterating unique selected_columns within a role (inner loop)
    cols_record record;
    -- Subscription ids visible at the role level (before fanning out by selected_columns)
    visible_role_sub_ids uuid[] = '{}';

begin
    perform set_config('role', null, true);

    columns =
        array_agg(
            (
                x->>'name',
                x->>'type',
                x->>'typeoid',
                realtime.cast(
                    (x->'value') #>> '{}',
                    coalesce(
                        (x->>'typeoid')::regtype, -- null when wal2json version <= 2.4
                        (x->>'type')::regtype
                    )
                ),
                (pks ->> 'name') is not null,
                true
            )::realtime.wal_column
        )
        from
            jsonb_array_elements(wal -> 'columns') x
            left join jsonb_array_elements(wal -> 'pk') pks
                on (x ->> 'name') = (pks ->> 'name');

    old_columns =
        array_agg(
            (
                x->>'name',
                x->>'type',
                x->>'typeoid',
                realtime.cast(
                    (x->'value') #>> '{}',
                    coalesce(
                        (x->>'typeoid')::regtype, -- null when wal2json version <= 2.4
                        (x->>'type')::regtype
                    )
                ),
                (pks ->> 'name') is not null,
                true
            )::realtime.wal_column
        )
        from
            jsonb_array_elements(wal -> 'identity') x
            left join jsonb_array_elements(wal -> 'pk') pks
                on (x ->> 'name') = (pks ->> 'name');

    for role_record in
        select claims_role
        from (select distinct claims_role from unnest(subscriptions)) t
        order by claims_role::text
    loop
        working_role := role_record.claims_role;

        -- Update `is_selectable` for columns and old_columns (once per role)
        columns =
            array_agg(
                (
                    c.name,
                    c.type_name,
                    c.type_oid,
                    c.value,
                    c.is_pkey,
                    pg_catalog.has_column_privilege(working_role, entity_, c.name, 'SELECT')
                )::realtime.wal_column
            )
            from
                unnest(columns) c;

        old_columns =
                array_agg(
                    (
                        c.name,
                        c.type_name,
                        c.type_oid,
                        c.value,
                        c.is_pkey,
                        pg_catalog.has_column_privilege(working_role, entity_, c.name, 'SELECT')
                    )::realtime.wal_column
                )
                from
                    unnest(old_columns) c;

        if action <> 'DELETE' and count(1) = 0 from unnest(columns) c where c.is_pkey then
            -- Fan out 400 error per distinct selected_columns for this role
            for cols_record in
                select selected_columns
                from (select distinct selected_columns from unnest(subscriptions) s where s.claims_role = working_role) t
                order by coalesce(array_to_string(selected_columns, ','), '')
            loop
                working_selected_columns := cols_record.selected_columns;
                return next (
                    jsonb_build_object(
                        'schema', wal ->> 'schema',
                        'table', wal ->> 'table',
                        'type', action
                    ),
                    is_rls_enabled,
                    (select array_agg(s.subscription_id) from unnest(subscriptions) as s where s.claims_role = working_role and (s.selected_columns is not distinct from working_selected_columns)),
                    array['Error 400: Bad Request, no primary key']
                )::realtime.wal_rls;
            end loop;

        -- The claims role does not have SELECT permission to the primary key of entity
        elsif action <> 'DELETE' and sum(c.is_selectable::int) <> count(1) from unnest(columns) c where c.is_pkey then
            -- Fan out 401 error per distinct selected_columns for this role
            for cols_record in
                select selected_columns
                from (select distinct selected_columns from unnest(subscriptions) s where s.claims_role = working_role) t
                order by coalesce(array_to_string(selected_columns, ','), '')
            loop
                working_selected_columns := cols_record.selected_columns;
                return next (
                    jsonb_build_object(
                        'schema', wal ->> 'schema',
                        'table', wal ->> 'table',
                        'type', action
                    ),
                    is_rls_enabled,
                    (select array_agg(s.subscription_id) from unnest(subscriptions) as s where s.claims_role = working_role and (s.selected_columns is not distinct from working_selected_columns)),
                    array['Error 401: Unauthorized']
                )::realtime.wal_rls;
            end loop;

        else
            -- Create the prepared statement (once per role)
            if is_rls_enabled and action <> 'DELETE' then
                if (select 1 from pg_prepared_statements where name = 'walrus_rls_stmt' limit 1) > 0 then
                    deallocate walrus_rls_stmt;
                end if;
                execute realtime.build_prepared_statement_sql('walrus_rls_stmt', entity_, columns);
            end if;

            -- Collect all visible subscription IDs for this role (filter check + RLS check)
            visible_role_sub_ids = '{}';

            for subscription_id, claims in (
                    select
                        subs.subscription_id,
                        subs.claims
                    from
                        unnest(subscriptions) subs
                    where
                        subs.entity = entity_
                        and subs.claims_role = working_role
                        and (
                            realtime.is_visible_through_filters(columns, subs.filters)
                            or (
                              action = 'DELETE'
                              and realtime.is_visible_through_filters(old_columns, subs.filters)
                            )
                        )
            ) loop

                if not is_rls_enabled or action = 'DELETE' then
                    visible_role_sub_ids = visible_role_sub_ids || subscription_id;
                else
                    -- Check if RLS allows the role to see the record
                    perform
                        -- Trim leading and trailing quotes from working_role because set_config
                        -- doesn't recognize the role as valid if they are included
                        set_config('role', trim(both '"' from working_role::text), true),
                        set_config('request.jwt.claims', claims::text, true);

                    execute 'execute walrus_rls_stmt' into subscription_has_access;

                    -- Reset the role on every FOR..LOOP batch execution.
                    -- The first batch of 10 rows is pre-fetched using the current connection role (PG internal behaviour)
                    -- then we have to reset it again otherwise it would use the role defined in the `set_config` above
                    -- to fetch the remaining rows when rows>10, which could be a user-defined role that lacks execution grants.
                    -- The flow is:
                    --   1. run batch with conn role
                    --   2. set_config working_role
                    --   3. execute walrus
                    --   4. reset role (revert)
                    --   5. repeat
                    perform set_config('role', null, true);

                    if subscription_has_access then
                        visible_role_sub_ids = visible_role_sub_ids || subscription_id;
                    end if;
                end if;
            end loop;

            perform set_config('role', null, true);

            -- Inner loop: per distinct selected_columns for this role
            for cols_record in
                select selected_columns
                from (select distinct selected_columns from unnest(subscriptions) s where s.claims_role = working_role) t
                order by coalesce(array_to_string(selected_columns, ','), '')
            loop
                working_selected_columns := cols_record.selected_columns;

                output = jsonb_build_object(
                    'schema', wal ->> 'schema',
                    'table', wal ->> 'table',
                    'type', action,
                    'commit_timestamp', to_char(
                        ((wal ->> 'timestamp')::timestamptz at time zone 'utc'),
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
                    ),
                    'columns', (
                        select
                            jsonb_agg(
                                jsonb_build_object(
                                    'name', pa.attname,
                                    'type', pt.typname
                                )
                                order by pa.attnum asc
                            )
                        from
                            pg_attribute pa
                            join pg_type pt
                                on pa.atttypid = pt.oid
                            left join (
                                select unnest(conkey) as pkey_attnum
                                from pg_constraint
                                where conrelid = entity_ and contype = 'p'
                            ) pk on pk.pkey_attnum = pa.attnum
                        where
                            attrelid = entity_
                            and attnum > 0
                            and pg_catalog.has_column_privilege(working_role, entity_, pa.attname, 'SELECT')
                            and (working_selected_columns is null or pa.attname = any(working_selected_columns) or pk.pkey_attnum is not null)
                    )
                )
                -- Add "record" key for insert and update
                || case
                    when action in ('INSERT', 'UPDATE') then
                        jsonb_build_object(
                            'record',
                            (
                                select
                                    jsonb_object_agg(
                                        -- if unchanged toast, get column name and value from old record
                                        coalesce((c).name, (oc).name),
                                        case
                                            when (c).name is null then (oc).value
                                            else (c).value
                                        end
                                    )
                                from
                                    unnest(columns) c
                                    full outer join unnest(old_columns) oc
                                        on (c).name = (oc).name
                                where
                                    coalesce((c).is_selectable, (oc).is_selectable)
                                    and (working_selected_columns is null or coalesce((c).name, (oc).name) = any(working_selected_columns) or coalesce((c).is_pkey, (oc).is_pkey))
                                    and ( not error_record_exceeds_max_size or (octet_length((c).value::text) <= 64))
                            )
                        )
                    else '{}'::jsonb
                end
                -- Add "old_record" key for update and delete
                || case
                    when action = 'UPDATE' then
                        jsonb_build_object(
                                'old_record',
                                (
                                    select jsonb_object_agg((c).name, (c).value)
                                    from unnest(old_columns) c
                                    where
                                        (c).is_selectable
                                        and (working_selected_columns is null or (c).name = any(working_selected_columns) or (c).is_pkey)
                                        and ( not error_record_exceeds_max_size or (octet_length((c).value::text) <= 64))
                                )
                            )
                    when action = 'DELETE' then
                        jsonb_build_object(
                            'old_record',
                            (
                                select jsonb_object_agg((c).name, (c).value)
                                from unnest(old_columns) c
                                where
                                    (c).is_selectable
                                    and (working_selected_columns is null or (c).name = any(working_selected_columns) or (c).is_pkey)
                                    and ( not error_record_exceeds_max_size or (octet_length((c).value::text) <= 64))
                                    and ( not is_rls_enabled or (c).is_pkey ) -- if RLS enabled, we can't secure deletes so filter to pkey
                            )
                        )
                    else '{}'::jsonb
                end;

                -- Filter visible_role_sub_ids to those matching the current selected_columns group
                visible_to_subscription_ids = coalesce(
                    (
                        select array_agg(s.subscription_id)
                        from unnest(subscriptions) s
                        where s.claims_role = working_role
                          and (s.selected_columns is not distinct from working_selected_columns)
                          and s.subscription_id = any(visible_role_sub_ids)
                    ),
                    '{}'::uuid[]
                );

                return next (
                    output,
                    is_rls_enabled,
                    visible_to_subscription_ids,
                    case
                        when error_record_exceeds_max_size then array['Error 413: Payload Too Large']
                        else '{}'
                    end
                )::realtime.wal_rls;
            end loop;

        end if;
    end loop;

    perform set_config('role', null, true);
end;
$$;

CREATE FUNCTION realtime.broadcast_changes(topic_name text, event_name text, operation text, table_name text, table_schema text, new record, old record, level text DEFAULT 'ROW'::text) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  row_data jsonb := '{}'::jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation = 'INSERT' or operation = 'UPDATE' or operation = 'DELETE' then
    row_data := jsonb_build_object(
      'old_record', old, 'record', new, 'operation', operation,
      'table', table_name, 'schema', table_schema);
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception when others then
  raise exception 'Failed to process the row: %', sqlerrm;
end;
$$;

CREATE FUNCTION realtime.build_prepared_statement_sql(prepared_statement_name text, entity regclass, columns realtime.wal_column[]) RETURNS text
    LANGUAGE sql
    AS $$
      /*
      Builds a sql string that, if executed, creates a prepared statement to
      tests retrive a row from *entity* by its primary key columns.
      Example
          select realtime.build_prepared_statement_sql('public.notes', '{"id"}'::text[], '{"bigint"}'::text[])
      */
          select
      'prepare ' || prepared_statement_name || ' as
          select
              exists(
                  select
                      1
                  from
                      ' || entity || '
                  where
                      ' || string_agg(quote_ident(pkc.name) || '=' || quote_nullable(pkc.value #>> '{}') , ' and ') || '
              )'
          from
              unnest(columns) pkc
          where
              pkc.is_pkey
          group by
              entity
      $$;

CREATE FUNCTION realtime."cast"(val text, type_ regtype) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    AS $$
declare
  res jsonb;
begin
  if type_::text = 'bytea' then
    return to_jsonb(val);
  end if;
  execute format('select to_jsonb(%L::'|| type_::text || ')', val) into res;
  return res;
end
$$;

CREATE FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE
    AS $$
/*
Casts *val_1* and *val_2* as type *type_* and check the *op* condition for truthiness
*/
declare
    op_symbol text = (
        case
            when op = 'eq' then '='
            when op = 'neq' then '!='
            when op = 'lt' then '<'
            when op = 'lte' then '<='
            when op = 'gt' then '>'
            when op = 'gte' then '>='
            when op = 'in' then '= any'
            else 'UNKNOWN OP'
        end
    );
    res boolean;
begin
    execute format(
        'select %L::'|| type_::text || ' ' || op_symbol
        || ' ( %L::'
        || (
            case
                when op = 'in' then type_::text || '[]'
                else type_::text end
        )
        || ')', val_1, val_2) into res;
    return res;
end;
$$;

CREATE FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text, negate boolean) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
declare
    op_symbol text;
    res boolean;
begin
    -- IS DISTINCT FROM / IS NOT DISTINCT FROM: infix, both sides typed literals
    if op = 'isdistinct' then
        execute format(
            'select %L::%s %s %L::%s',
            val_1,
            type_::text,
            case when negate then 'IS NOT DISTINCT FROM' else 'IS DISTINCT FROM' end,
            val_2,
            type_::text
        ) into res;
        return res;
    end if;

    -- IS requires a keyword RHS (NULL, TRUE, FALSE, UNKNOWN), not a typed literal
    if op = 'is' then
        if val_2 not in ('null', 'true', 'false', 'unknown') then
            raise exception 'invalid value for is filter: must be null, true, false, or unknown';
        end if;
        execute format(
            'select %L::%s %s %s',
            val_1,
            type_::text,
            case when negate then 'IS NOT' else 'IS' end,
            upper(val_2)
        ) into res;
        return res;
    end if;

    op_symbol = case
        when op = 'eq'    then '='
        when op = 'neq'   then '!='
        when op = 'lt'    then '<'
        when op = 'lte'   then '<='
        when op = 'gt'    then '>'
        when op = 'gte'   then '>='
        when op = 'in'    then '= any'
        when op = 'like'   then 'LIKE'
        when op = 'ilike'  then 'ILIKE'
        when op = 'match'  then '~'
        when op = 'imatch' then '~*'
        else null
    end;

    if op_symbol is null then
        raise exception 'unsupported equality operator: %', op::text;
    end if;

    execute format(
        'select %L::%s %s (%L::%s)',
        val_1,
        type_::text,
        op_symbol,
        val_2,
        case when op = 'in' then type_::text || '[]' else type_::text end
    ) into res;

    return case when negate then not res else res end;
end;
$$;

CREATE FUNCTION realtime.hitl_create_partitions() RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  d date;
  partition_name text;
begin
  for d in select generate_series(current_date - 1, current_date + 3, interval '1 day')::date loop
    partition_name := 'messages_' || to_char(d, 'YYYY_MM_DD');
    if to_regclass('realtime.' || partition_name) is null then
      execute format('create table realtime.%I partition of realtime.messages'
                     ' for values from (%L) to (%L)', partition_name, d, d + 1);
      execute format('alter table realtime.%I owner to supabase_realtime_admin', partition_name);
    end if;
  end loop;
end;
$$;

CREATE FUNCTION realtime.hitl_notify_message() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
declare
  j text;
  at double precision := extract(epoch from clock_timestamp());
begin
  j := json_build_object('id', new.id, 'topic', new.topic, 'event', new.event,
                         'private', coalesce(new.private, false), 'payload', new.payload,
                         'at', at)::text;
  if octet_length(j) > 7800 then
    j := json_build_object('id', new.id, 'topic', new.topic, 'event', new.event,
                           'private', coalesce(new.private, false), 'too_large', true,
                           'at', at)::text;
  end if;
  perform pg_notify('hitl_realtime', j);
  return null;
end;
$$;

CREATE FUNCTION realtime.is_visible_through_filters(columns realtime.wal_column[], filters realtime.user_defined_filter[]) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    select
        filters is null
        or array_length(filters, 1) is null
        or coalesce(
            count(col.name) = count(1)
            and sum(
                realtime.check_equality_op(
                    op:=f.op,
                    type_:=coalesce(col.type_oid::regtype, col.type_name::regtype),
                    val_1:=col.value #>> '{}',
                    val_2:=f.value,
                    negate:=coalesce(f.negate, false)
                )::int
            ) filter (where col.name is not null) = count(col.name),
            false
        )
    from
        unnest(filters) f
        left join unnest(columns) col
            on f.column_name = col.name;
$$;

CREATE FUNCTION realtime.list_changes(publication name, slot_name name, max_changes integer, max_record_bytes integer) RETURNS TABLE(wal jsonb, is_rls_enabled boolean, subscription_ids uuid[], errors text[], slot_changes_count bigint)
    LANGUAGE sql
    SET log_min_messages TO 'fatal'
    AS $$
  WITH pub AS (
    SELECT
      concat_ws(
        ',',
        CASE WHEN bool_or(pubinsert) THEN 'insert' ELSE NULL END,
        CASE WHEN bool_or(pubupdate) THEN 'update' ELSE NULL END,
        CASE WHEN bool_or(pubdelete) THEN 'delete' ELSE NULL END
      ) AS w2j_actions,
      coalesce(
        string_agg(
          realtime.quote_wal2json(format('%I.%I', schemaname, tablename)::regclass),
          ','
        ) filter (WHERE ppt.tablename IS NOT NULL),
        ''
      ) AS w2j_add_tables
    FROM pg_publication pp
    LEFT JOIN pg_publication_tables ppt ON pp.pubname = ppt.pubname
    WHERE pp.pubname = publication
    GROUP BY pp.pubname
    LIMIT 1
  ),
  -- MATERIALIZED ensures pg_logical_slot_get_changes is called exactly once
  w2j AS MATERIALIZED (
    SELECT x.*, pub.w2j_add_tables
    FROM pub,
         pg_logical_slot_get_changes(
           slot_name, null, max_changes,
           'include-pk', 'true',
           'include-transaction', 'false',
           'include-timestamp', 'true',
           'include-type-oids', 'true',
           'format-version', '2',
           'actions', pub.w2j_actions,
           'add-tables', pub.w2j_add_tables
         ) x
  ),
  slot_count AS (
    SELECT count(*)::bigint AS cnt
    FROM w2j
    WHERE w2j.w2j_add_tables <> ''
  ),
  rls_filtered AS (
    SELECT xyz.wal, xyz.is_rls_enabled, xyz.subscription_ids, xyz.errors
    FROM w2j,
         realtime.apply_rls(
           wal := w2j.data::jsonb,
           max_record_bytes := max_record_bytes
         ) xyz(wal, is_rls_enabled, subscription_ids, errors)
    WHERE w2j.w2j_add_tables <> ''
      AND xyz.subscription_ids[1] IS NOT NULL
  )
  SELECT rf.wal, rf.is_rls_enabled, rf.subscription_ids, rf.errors, sc.cnt
  FROM rls_filtered rf, slot_count sc

  UNION ALL

  SELECT null, null, null, null, sc.cnt
  FROM slot_count sc
  WHERE NOT EXISTS (SELECT 1 FROM rls_filtered)
$$;

CREATE FUNCTION realtime.quote_wal2json(entity regclass) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$
  SELECT
    realtime.wal2json_escape_identifier(nsp.nspname::text)
    || '.'
    || realtime.wal2json_escape_identifier(pc.relname::text)
  FROM pg_class pc
  JOIN pg_namespace nsp ON pc.relnamespace = nsp.oid
  WHERE pc.oid = entity
$$;

CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;

CREATE FUNCTION realtime.send_binary(payload bytea, event text, topic text, private boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  generated_id uuid;
begin
  begin
    generated_id := gen_random_uuid();
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (id, binary_payload, event, topic, private, extension)
    values (generated_id, payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;

CREATE FUNCTION realtime.subscription_check_filters() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
declare
    col_names text[] = coalesce(
            array_agg(a.attname order by a.attnum),
            '{}'::text[]
        )
        from
            pg_catalog.pg_attribute a
        where
            a.attrelid = new.entity
            and a.attnum > 0
            and not a.attisdropped
            and pg_catalog.has_column_privilege(
                (new.claims ->> 'role'),
                a.attrelid,
                a.attnum,
                'SELECT'
            );
    filter realtime.user_defined_filter;
    col_type regtype;
    in_val jsonb;
    selected_col text;
begin
    for filter in select * from unnest(new.filters) loop
        if not filter.column_name = any(col_names) then
            raise exception 'invalid column for filter %', filter.column_name;
        end if;

        col_type = (
            select atttypid::regtype
            from pg_catalog.pg_attribute
            where attrelid = new.entity
                  and attname = filter.column_name
        );
        if col_type is null then
            raise exception 'failed to lookup type for column %', filter.column_name;
        end if;

        if filter.op = 'in'::realtime.equality_op then
            in_val = realtime.cast(filter.value, (col_type::text || '[]')::regtype);
            if coalesce(jsonb_array_length(in_val), 0) > 100 then
                raise exception 'too many values for `in` filter. Maximum 100';
            end if;
        elsif filter.op = 'is'::realtime.equality_op then
            -- `is` requires a keyword RHS rather than a typed literal
            if filter.value not in ('null', 'true', 'false', 'unknown') then
                raise exception 'invalid value for is filter: must be null, true, false, or unknown';
            end if;
            -- IS NULL works for any type, but IS TRUE/FALSE/UNKNOWN require a boolean
            -- operand. Reject the non-null keywords on non-boolean columns here so they
            -- don't abort apply_rls at WAL time.
            if filter.value <> 'null' and col_type <> 'boolean'::regtype then
                raise exception 'is % filter requires a boolean column, got %', filter.value, col_type::text;
            end if;
        elsif filter.op in ('like'::realtime.equality_op, 'ilike'::realtime.equality_op) then
            -- like/ilike apply the text pattern operator (~~); reject column types that
            -- have no such operator instead of failing at WAL time
            if not exists (
                select 1 from pg_catalog.pg_operator
                where oprname = '~~' and oprleft = col_type
            ) then
                raise exception 'operator % requires a text-compatible column type, got %', filter.op::text, col_type::text;
            end if;
        elsif filter.op in ('match'::realtime.equality_op, 'imatch'::realtime.equality_op) then
            -- match/imatch apply the regex operators ~ / ~*; reject column types that have
            -- no such operator (e.g. integer) instead of failing at WAL time, mirroring the
            -- like/ilike guard above.
            if not exists (
                select 1 from pg_catalog.pg_operator
                where oprname = case when filter.op = 'imatch'::realtime.equality_op then '~*' else '~' end
                  and oprleft = col_type
                  and oprright = col_type
                  and oprresult = 'boolean'::regtype
            ) then
                raise exception 'operator % requires a text-compatible column type, got %', filter.op::text, col_type::text;
            end if;
            -- validate the regex eagerly so a bad pattern is rejected here, not inside
            -- apply_rls where it would abort the WAL stream for the entity
            begin
                perform '' ~ filter.value;
            exception when others then
                raise exception 'invalid regular expression for % filter: %', filter.op::text, sqlerrm;
            end;
        else
            -- eq/neq/lt/lte/gt/gte: value must be coercable to the type
            perform realtime.cast(filter.value, col_type);
        end if;
    end loop;

    if new.selected_columns is not null then
        for selected_col in select * from unnest(new.selected_columns) loop
            if not selected_col = any(col_names) then
                raise exception 'invalid column for select %', selected_col;
            end if;
        end loop;
    end if;

    -- Apply consistent order to filters so the unique constraint can't be tricked by a
    -- different filter order. negate is part of the sort key.
    new.filters = coalesce(
        array_agg(f order by f.column_name, f.op, f.value, f.negate),
        '{}'
    ) from unnest(new.filters) f;

    new.selected_columns = (
        select array_agg(c order by c)
        from unnest(new.selected_columns) c
    );

    return new;
end;
$$;

CREATE FUNCTION realtime.to_regrole(role_name text) RETURNS regrole
    LANGUAGE sql IMMUTABLE
    AS $$ select role_name::regrole $$;

CREATE FUNCTION realtime.topic() RETURNS text
    LANGUAGE sql STABLE
    AS $$
  select nullif(current_setting('realtime.topic', true), '')::text
$$;

CREATE FUNCTION realtime.wal2json_escape_identifier(name text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$
  -- Prefix `\`, `,`, `.`, and any whitespace with `\`
  SELECT regexp_replace(name, '([\\,.[:space:]])', '\\\1', 'g')
$$;

CREATE TABLE public.cases (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    title text,
    description text,
    status text DEFAULT 'open'::text,
    priority integer DEFAULT 3,
    urgency text DEFAULT 'medium'::text,
    source text,
    metadata jsonb DEFAULT '{}'::jsonb,
    answered_at timestamp with time zone,
    expires_at timestamp with time zone,
    answer_message_id uuid,
    options jsonb,
    skills text[] DEFAULT '{}'::text[] NOT NULL,
    claimed_by uuid,
    claimed_at timestamp with time zone,
    claim_expires_at timestamp with time zone,
    escalated_at timestamp with time zone,
    escalation_level integer DEFAULT 0 NOT NULL,
    escalated_for text[] DEFAULT '{}'::text[] NOT NULL
);

CREATE TABLE public.hil_agent_skills (
    agent_id text NOT NULL,
    skills text[] DEFAULT '{}'::text[] NOT NULL
);

CREATE TABLE public.hil_audit (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    case_id uuid,
    session_id uuid,
    outcome text,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL
);

ALTER TABLE public.hil_audit ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.hil_audit_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.hil_callbacks (
    id bigint NOT NULL,
    case_id uuid NOT NULL,
    session_id uuid,
    event text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    claimed_until timestamp with time zone,
    delivered_at timestamp with time zone,
    failed_at timestamp with time zone,
    last_status integer,
    last_error text,
    CONSTRAINT hil_callbacks_event_check CHECK ((event = ANY (ARRAY['answer'::text, 'timeout'::text])))
);

ALTER TABLE public.hil_callbacks ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.hil_callbacks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.hil_case_secrets (
    case_id uuid NOT NULL,
    webhook_secret text,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE public.hil_notifications ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.hil_notifications_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.hil_rate_limits (
    key text NOT NULL,
    window_seconds integer NOT NULL,
    window_start timestamp with time zone NOT NULL,
    hits integer DEFAULT 0 NOT NULL
);

CREATE TABLE public.hil_sessions (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    mcp_session_id text NOT NULL,
    retell_call_id text NOT NULL,
    retell_agent_id text,
    case_id uuid NOT NULL,
    idempotency_key text NOT NULL,
    status text DEFAULT 'waiting'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    closed_at timestamp with time zone,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    instance_id text,
    CONSTRAINT hil_sessions_status_check CHECK ((status = ANY (ARRAY['waiting'::text, 'answered'::text, 'needs_info'::text, 'timed_out'::text, 'expired'::text, 'failed'::text, 'cancelled'::text, 'no_operator'::text])))
);

CREATE TABLE public.hil_settings (
    key text NOT NULL,
    value jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.hitl_event_key (
    id smallint DEFAULT 1 NOT NULL,
    key bytea NOT NULL,
    inner_pad bytea NOT NULL,
    outer_pad bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT hitl_event_key_id_check CHECK ((id = 1)),
    CONSTRAINT hitl_event_key_inner_pad_check CHECK ((octet_length(inner_pad) = 64)),
    CONSTRAINT hitl_event_key_key_check CHECK ((octet_length(key) = 32)),
    CONSTRAINT hitl_event_key_outer_pad_check CHECK ((octet_length(outer_pad) = 64))
);

CREATE VIEW public.hitl_stats WITH (security_invoker='true') AS
 WITH s AS (
         SELECT s_1.status,
            (EXTRACT(epoch FROM (c.answered_at - s_1.created_at)) * 1000.0) AS response_ms
           FROM (public.hil_sessions s_1
             JOIN public.cases c ON ((c.id = s_1.case_id)))
        )
 SELECT count(*) AS invocations,
    count(*) FILTER (WHERE (s.status = 'answered'::text)) AS answered,
    count(*) FILTER (WHERE (s.status = 'timed_out'::text)) AS timed_out,
    count(*) FILTER (WHERE (s.status = 'expired'::text)) AS expired,
    count(*) FILTER (WHERE (s.status = 'waiting'::text)) AS waiting,
    count(*) FILTER (WHERE (s.status = ANY (ARRAY['failed'::text, 'cancelled'::text]))) AS failed_or_cancelled,
    round(avg(s.response_ms) FILTER (WHERE (s.status = 'answered'::text)), 1) AS avg_response_ms,
    round((percentile_cont((0.5)::double precision) WITHIN GROUP (ORDER BY ((s.response_ms)::double precision)) FILTER (WHERE (s.status = 'answered'::text)))::numeric, 1) AS p50_response_ms,
    round((percentile_cont((0.9)::double precision) WITHIN GROUP (ORDER BY ((s.response_ms)::double precision)) FILTER (WHERE (s.status = 'answered'::text)))::numeric, 1) AS p90_response_ms,
    round((percentile_cont((0.99)::double precision) WITHIN GROUP (ORDER BY ((s.response_ms)::double precision)) FILTER (WHERE (s.status = 'answered'::text)))::numeric, 1) AS p99_response_ms,
    round(((count(*) FILTER (WHERE (s.status = 'answered'::text)))::numeric / (NULLIF(count(*) FILTER (WHERE (s.status <> 'waiting'::text)), 0))::numeric), 4) AS success_rate,
    round(((count(*) FILTER (WHERE (s.status = ANY (ARRAY['timed_out'::text, 'expired'::text]))))::numeric / (NULLIF(count(*) FILTER (WHERE (s.status <> 'waiting'::text)), 0))::numeric), 4) AS timeout_rate
   FROM s;

CREATE TABLE public.messages (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    case_id uuid NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    sender_type text,
    sender_id uuid,
    content text,
    kind text DEFAULT 'answer'::text NOT NULL,
    option_index integer
);

CREATE TABLE public.operator_activity (
    id bigint NOT NULL,
    operator_id uuid NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    last_seen_at timestamp with time zone DEFAULT now() NOT NULL,
    status text DEFAULT 'available'::text NOT NULL,
    CONSTRAINT operator_activity_check CHECK ((last_seen_at >= started_at)),
    CONSTRAINT operator_activity_status_check CHECK ((status = ANY (ARRAY['available'::text, 'away'::text])))
);

ALTER TABLE public.operator_activity ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.operator_activity_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE realtime.messages (
    topic text NOT NULL,
    extension text NOT NULL,
    payload jsonb,
    event text,
    private boolean DEFAULT false,
    updated_at timestamp without time zone DEFAULT now() NOT NULL,
    inserted_at timestamp without time zone DEFAULT now() NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    binary_payload bytea
)
PARTITION BY RANGE (inserted_at);

CREATE TABLE realtime.subscription (
    id bigint NOT NULL,
    subscription_id uuid NOT NULL,
    entity regclass NOT NULL,
    claims jsonb NOT NULL,
    created_at timestamp without time zone DEFAULT timezone('utc'::text, now()) NOT NULL,
    action_filter text DEFAULT '*'::text,
    selected_columns text[],
    filters realtime.user_defined_filter[] DEFAULT '{}'::realtime.user_defined_filter[] NOT NULL,
    claims_role regrole GENERATED ALWAYS AS (realtime.to_regrole((claims ->> 'role'::text))) STORED NOT NULL,
    CONSTRAINT subscription_action_filter_check CHECK ((action_filter = ANY (ARRAY['*'::text, 'INSERT'::text, 'UPDATE'::text, 'DELETE'::text])))
);

ALTER TABLE realtime.subscription ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME realtime.subscription_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE supabase_migrations.schema_migrations (
    version text NOT NULL,
    statements text[],
    name text
);

ALTER TABLE public.cases
    ADD CONSTRAINT cases_hitl_values CHECK (((source IS DISTINCT FROM 'mcp_voice'::text) OR ((status = ANY (ARRAY['open'::text, 'answered'::text, 'expired'::text, 'cancelled'::text, 'closed'::text])) AND ((priority >= 1) AND (priority <= 5)) AND (urgency = ANY (ARRAY['low'::text, 'medium'::text, 'high'::text]))))) NOT VALID;

ALTER TABLE ONLY public.cases
    ADD CONSTRAINT cases_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.hil_agent_skills
    ADD CONSTRAINT hil_agent_skills_pkey PRIMARY KEY (agent_id);

ALTER TABLE ONLY public.hil_audit
    ADD CONSTRAINT hil_audit_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.hil_callbacks
    ADD CONSTRAINT hil_callbacks_case_id_event_key UNIQUE (case_id, event);

ALTER TABLE ONLY public.hil_callbacks
    ADD CONSTRAINT hil_callbacks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.hil_case_secrets
    ADD CONSTRAINT hil_case_secrets_pkey PRIMARY KEY (case_id);

ALTER TABLE ONLY public.hil_notifications
    ADD CONSTRAINT hil_notifications_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.hil_rate_limits
    ADD CONSTRAINT hil_rate_limits_pkey PRIMARY KEY (key, window_seconds, window_start);

ALTER TABLE ONLY public.hil_sessions
    ADD CONSTRAINT hil_sessions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.hil_settings
    ADD CONSTRAINT hil_settings_pkey PRIMARY KEY (key);

ALTER TABLE ONLY public.hil_tasks
    ADD CONSTRAINT hil_tasks_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.hitl_event_key
    ADD CONSTRAINT hitl_event_key_pkey PRIMARY KEY (id);

ALTER TABLE public.messages
    ADD CONSTRAINT messages_hitl_values CHECK (((sender_type = ANY (ARRAY['human'::text, 'ai'::text, 'system'::text])) AND (kind = ANY (ARRAY['answer'::text, 'clarification'::text, 'cannot_answer'::text, 'note'::text])) AND (octet_length(COALESCE(content, ''::text)) <= 65536))) NOT VALID;

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.operator_activity
    ADD CONSTRAINT operator_activity_pkey PRIMARY KEY (id);

ALTER TABLE realtime.messages
    ADD CONSTRAINT messages_payload_exclusive CHECK (((payload IS NULL) OR (binary_payload IS NULL))) NOT VALID;

ALTER TABLE ONLY realtime.messages
    ADD CONSTRAINT messages_pkey PRIMARY KEY (id, inserted_at);

ALTER TABLE ONLY realtime.subscription
    ADD CONSTRAINT pk_subscription PRIMARY KEY (id);

ALTER TABLE ONLY supabase_migrations.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

CREATE INDEX cases_open_idx ON public.cases USING btree (status, priority DESC, created_at) WHERE (source = 'mcp_voice'::text);

CREATE INDEX hil_audit_at_idx ON public.hil_audit USING btree (at);

CREATE INDEX hil_audit_case_idx ON public.hil_audit USING btree (case_id);

CREATE INDEX hil_callbacks_due_idx ON public.hil_callbacks USING btree (next_attempt_at) WHERE ((delivered_at IS NULL) AND (failed_at IS NULL));

CREATE INDEX hil_notifications_unsent_idx ON public.hil_notifications USING btree (created_at) WHERE (sent_at IS NULL);

CREATE INDEX hil_rate_limits_window_idx ON public.hil_rate_limits USING btree (window_start);

CREATE INDEX hil_sessions_call_idx ON public.hil_sessions USING btree (retell_call_id, created_at);

CREATE INDEX hil_sessions_case_idx ON public.hil_sessions USING btree (case_id);

CREATE UNIQUE INDEX hil_sessions_idempotency_key_idx ON public.hil_sessions USING btree (idempotency_key);

CREATE INDEX hil_sessions_instance_waiting_idx ON public.hil_sessions USING btree (instance_id) WHERE (status = 'waiting'::text);

CREATE INDEX hil_sessions_waiting_idx ON public.hil_sessions USING btree (expires_at) WHERE (status = 'waiting'::text);

CREATE INDEX hil_tasks_case_idx ON public.hil_tasks USING btree (case_id);

CREATE INDEX hil_tasks_expires_idx ON public.hil_tasks USING btree (expires_at);

CREATE INDEX hil_tasks_owner_idx ON public.hil_tasks USING btree (owner, created_at, id);

CREATE INDEX messages_case_idx ON public.messages USING btree (case_id, created_at);

CREATE INDEX operator_activity_operator_idx ON public.operator_activity USING btree (operator_id, last_seen_at DESC);

CREATE INDEX ix_realtime_subscription_entity ON realtime.subscription USING btree (entity);

CREATE INDEX messages_inserted_at_topic_index ON ONLY realtime.messages USING btree (inserted_at DESC, topic) WHERE ((extension = 'broadcast'::text) AND (private IS TRUE));

CREATE UNIQUE INDEX subscription_subscription_id_entity_filters_action_filter_selec ON realtime.subscription USING btree (subscription_id, entity, filters, action_filter, COALESCE(selected_columns, '{}'::text[]));

CREATE TRIGGER hitl_attach_thread BEFORE INSERT ON public.cases FOR EACH ROW WHEN ((new.source = 'mcp_voice'::text)) EXECUTE FUNCTION public.hitl_attach_thread();

CREATE TRIGGER hitl_audit_append_only BEFORE UPDATE ON public.hil_audit FOR EACH ROW EXECUTE FUNCTION public.hitl_audit_append_only();

CREATE TRIGGER hitl_before_case_update BEFORE UPDATE ON public.cases FOR EACH ROW WHEN ((old.source = 'mcp_voice'::text)) EXECUTE FUNCTION public.hitl_before_case_update();

CREATE TRIGGER hitl_before_message BEFORE INSERT ON public.messages FOR EACH ROW EXECUTE FUNCTION public.hitl_before_message();

CREATE TRIGGER hitl_callback_on_answer AFTER UPDATE OF answer_message_id ON public.cases FOR EACH ROW EXECUTE FUNCTION public.hitl_callback_on_answer();

CREATE TRIGGER hitl_callback_on_timeout AFTER UPDATE OF status ON public.hil_sessions FOR EACH ROW EXECUTE FUNCTION public.hitl_callback_on_timeout();

CREATE TRIGGER hitl_message_defaults BEFORE INSERT ON public.messages FOR EACH ROW EXECUTE FUNCTION public.hitl_message_defaults();

CREATE TRIGGER hitl_on_case_opened AFTER INSERT ON public.cases FOR EACH ROW WHEN ((new.source = 'mcp_voice'::text)) EXECUTE FUNCTION public.hitl_on_case_opened();

CREATE TRIGGER hitl_on_claim AFTER UPDATE OF claimed_by ON public.cases FOR EACH ROW WHEN (((old.source = 'mcp_voice'::text) AND (old.claimed_by IS DISTINCT FROM new.claimed_by))) EXECUTE FUNCTION public.hitl_on_claim();

CREATE TRIGGER hitl_on_message AFTER INSERT ON public.messages FOR EACH ROW EXECUTE FUNCTION public.hitl_on_message();

CREATE TRIGGER hitl_on_message_audit AFTER INSERT ON public.messages FOR EACH ROW WHEN (((new.sender_type = 'human'::text) AND (new.kind = ANY (ARRAY['answer'::text, 'cannot_answer'::text])))) EXECUTE FUNCTION public.hitl_on_message_audit();

CREATE TRIGGER hitl_on_session_change AFTER UPDATE OF status ON public.hil_sessions FOR EACH ROW WHEN ((old.status IS DISTINCT FROM new.status)) EXECUTE FUNCTION public.hitl_on_session_change();

CREATE TRIGGER hitl_session_instance BEFORE INSERT OR UPDATE OF status ON public.hil_sessions FOR EACH ROW EXECUTE FUNCTION public.hitl_session_instance();

CREATE TRIGGER hitl_notify_message AFTER INSERT ON realtime.messages FOR EACH ROW WHEN ((new.extension = 'broadcast'::text)) EXECUTE FUNCTION realtime.hitl_notify_message();

CREATE TRIGGER tr_check_filters BEFORE INSERT OR UPDATE ON realtime.subscription FOR EACH ROW EXECUTE FUNCTION realtime.subscription_check_filters();

ALTER TABLE ONLY public.hil_callbacks
    ADD CONSTRAINT hil_callbacks_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.hil_case_secrets
    ADD CONSTRAINT hil_case_secrets_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.hil_notifications
    ADD CONSTRAINT hil_notifications_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.hil_sessions
    ADD CONSTRAINT hil_sessions_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.messages
    ADD CONSTRAINT messages_case_id_fkey FOREIGN KEY (case_id) REFERENCES public.cases(id) ON DELETE CASCADE;

ALTER TABLE public.cases ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_agent_skills ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_audit ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_callbacks ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_case_secrets ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_notifications ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_rate_limits ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_sessions ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_settings ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hil_tasks ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.hitl_event_key ENABLE ROW LEVEL SECURITY;

CREATE POLICY hitl_operators_claim_cases ON public.cases FOR UPDATE TO authenticated USING (((source = 'mcp_voice'::text) AND (status = 'open'::text) AND public.hitl_is_operator() AND (skills <@ public.hitl_operator_skills()) AND ((claimed_by IS NULL) OR (claimed_by = auth.uid()) OR (NOT public.hitl_claim_live(claimed_by, claim_expires_at))))) WITH CHECK (((source = 'mcp_voice'::text) AND ((claimed_by IS NULL) OR (claimed_by = auth.uid()))));

CREATE POLICY hitl_operators_insert_messages ON public.messages FOR INSERT TO authenticated WITH CHECK ((public.hitl_is_operator() AND (sender_type = 'human'::text) AND (sender_id = auth.uid()) AND (kind = ANY (ARRAY['answer'::text, 'clarification'::text, 'cannot_answer'::text, 'note'::text])) AND public.hitl_is_relay_case(case_id)));

CREATE POLICY hitl_operators_read_cases ON public.cases FOR SELECT TO authenticated USING (((source = 'mcp_voice'::text) AND public.hitl_is_operator()));

CREATE POLICY hitl_operators_read_messages ON public.messages FOR SELECT TO authenticated USING ((public.hitl_is_operator() AND public.hitl_is_relay_case(case_id)));

CREATE POLICY hitl_operators_read_own_activity ON public.operator_activity FOR SELECT TO authenticated USING ((public.hitl_is_operator() AND (operator_id = auth.uid())));

CREATE POLICY hitl_operators_read_sessions ON public.hil_sessions FOR SELECT TO authenticated USING (public.hitl_is_operator());

ALTER TABLE public.messages ENABLE ROW LEVEL SECURITY;

ALTER TABLE public.operator_activity ENABLE ROW LEVEL SECURITY;

CREATE POLICY hitl_operators_receive ON realtime.messages FOR SELECT TO authenticated USING ((public.hitl_is_operator() AND (((extension = 'broadcast'::text) AND ((realtime.topic() = 'operators'::text) OR (realtime.topic() ~~ 'case:%'::text))) OR ((extension = 'presence'::text) AND (realtime.topic() = 'operators'::text)))));

CREATE POLICY hitl_operators_send ON realtime.messages FOR INSERT TO authenticated WITH CHECK ((public.hitl_is_operator() AND (realtime.topic() = 'operators'::text) AND (extension = 'presence'::text)));

ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

GRANT USAGE ON SCHEMA auth TO postgres;
GRANT USAGE ON SCHEMA auth TO anon;
GRANT USAGE ON SCHEMA auth TO authenticated;
GRANT USAGE ON SCHEMA auth TO service_role;

GRANT USAGE ON SCHEMA public TO postgres;
GRANT USAGE ON SCHEMA public TO anon;
GRANT USAGE ON SCHEMA public TO authenticated;
GRANT USAGE ON SCHEMA public TO service_role;

GRANT USAGE ON SCHEMA realtime TO postgres WITH GRANT OPTION;
GRANT USAGE ON SCHEMA realtime TO anon;
GRANT USAGE ON SCHEMA realtime TO authenticated;
GRANT USAGE ON SCHEMA realtime TO service_role;

GRANT ALL ON FUNCTION auth.email() TO anon;
GRANT ALL ON FUNCTION auth.email() TO authenticated;
GRANT ALL ON FUNCTION auth.email() TO service_role;

GRANT ALL ON FUNCTION auth.jwt() TO anon;
GRANT ALL ON FUNCTION auth.jwt() TO authenticated;
GRANT ALL ON FUNCTION auth.jwt() TO service_role;

GRANT ALL ON FUNCTION auth.role() TO anon;
GRANT ALL ON FUNCTION auth.role() TO authenticated;
GRANT ALL ON FUNCTION auth.role() TO service_role;

GRANT ALL ON FUNCTION auth.uid() TO anon;
GRANT ALL ON FUNCTION auth.uid() TO authenticated;
GRANT ALL ON FUNCTION auth.uid() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_answer(p_case_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_answer(p_case_id uuid) TO service_role;

GRANT ALL ON FUNCTION public.hitl_attach_thread() TO anon;
GRANT ALL ON FUNCTION public.hitl_attach_thread() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_attach_thread() TO service_role;

GRANT ALL ON FUNCTION public.hitl_audit_append_only() TO anon;
GRANT ALL ON FUNCTION public.hitl_audit_append_only() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_audit_append_only() TO service_role;

GRANT ALL ON FUNCTION public.hitl_before_case_update() TO anon;
GRANT ALL ON FUNCTION public.hitl_before_case_update() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_before_case_update() TO service_role;

GRANT ALL ON FUNCTION public.hitl_before_message() TO anon;
GRANT ALL ON FUNCTION public.hitl_before_message() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_before_message() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_call_history(p_call_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_call_history(p_call_id text) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_callback_on_answer() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_callback_on_answer() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_callback_on_timeout() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_callback_on_timeout() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_callback_result(p_id bigint, p_outcome text, p_detail jsonb, p_retry_in_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_callback_result(p_id bigint, p_outcome text, p_detail jsonb, p_retry_in_seconds integer) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_callbacks_claim(p_limit integer, p_lease_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_callbacks_claim(p_limit integer, p_lease_seconds integer) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_case_owned(p_case_id uuid, p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_case_owned(p_case_id uuid, p_owner text) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_case_replies(p_case_ids uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_case_replies(p_case_ids uuid[]) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_case_reply(p_case_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_case_reply(p_case_id uuid) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_case_status(p_case_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_case_status(p_case_id uuid) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_claim_live(p_claimed_by uuid, p_expires timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_claim_live(p_claimed_by uuid, p_expires timestamp with time zone) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_claim_live(p_claimed_by uuid, p_expires timestamp with time zone) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_close_session(p_session_id uuid, p_status text, p_detail jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_close_session(p_session_id uuid, p_status text, p_detail jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_continue_case(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_continue_case(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_escalate() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_escalate() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_event_canonical(p_event text, p_payload jsonb, p_fields text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_event_canonical(p_event text, p_payload jsonb, p_fields text[]) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_event_key() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_event_key() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_event_key_pad(p_key bytea, p_byte integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_event_key_pad(p_key bytea, p_byte integer) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_expire_sessions() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_expire_sessions() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_expiry_job() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_expiry_job() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_history(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_history(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_id(p jsonb, p_field text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_id(p jsonb, p_field text) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_int(p jsonb, p_field text, p_min integer, p_max integer, p_default integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_int(p jsonb, p_field text, p_min integer, p_max integer, p_default integer) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_invalid(p_field text, p_rule text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_invalid(p_field text, p_rule text) TO service_role;

GRANT ALL ON FUNCTION public.hitl_is_operator() TO anon;
GRANT ALL ON FUNCTION public.hitl_is_operator() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_is_operator() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_is_relay_case(p_case_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_is_relay_case(p_case_id uuid) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_is_relay_case(p_case_id uuid) TO service_role;

GRANT ALL ON FUNCTION public.hitl_message_defaults() TO anon;
GRANT ALL ON FUNCTION public.hitl_message_defaults() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_message_defaults() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_notification_done(p_id bigint, p_error text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_notification_done(p_id bigint, p_error text) TO service_role;

GRANT ALL ON FUNCTION public.hitl_on_case_opened() TO anon;
GRANT ALL ON FUNCTION public.hitl_on_case_opened() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_on_case_opened() TO service_role;

GRANT ALL ON FUNCTION public.hitl_on_claim() TO anon;
GRANT ALL ON FUNCTION public.hitl_on_claim() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_on_claim() TO service_role;

GRANT ALL ON FUNCTION public.hitl_on_message() TO anon;
GRANT ALL ON FUNCTION public.hitl_on_message() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_on_message() TO service_role;

GRANT ALL ON FUNCTION public.hitl_on_message_audit() TO anon;
GRANT ALL ON FUNCTION public.hitl_on_message_audit() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_on_message_audit() TO service_role;

GRANT ALL ON FUNCTION public.hitl_on_session_change() TO anon;
GRANT ALL ON FUNCTION public.hitl_on_session_change() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_on_session_change() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_open_case(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_open_case(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_open_case_core(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_open_case_core(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_open_case_no_operator(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_open_case_no_operator(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_operator_heartbeat(p_status text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_operator_heartbeat(p_status text) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_operator_heartbeat(p_status text) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_operator_present(p_operator uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_operator_present(p_operator uuid) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_operator_present(p_operator uuid) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_operator_queue() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_operator_queue() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_operator_queue() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_operator_skills() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_operator_skills() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_operator_skills() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_option_bounds() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_option_bounds() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_option_bounds() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_options(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_options(p jsonb) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_options(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_pending_clarification(p_case_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_pending_clarification(p_case_id uuid) TO service_role;

GRANT ALL ON TABLE public.hil_notifications TO service_role;

REVOKE ALL ON FUNCTION public.hitl_pending_notifications(p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_pending_notifications(p_limit integer) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_purge(p_older_than interval) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_purge(p_older_than interval) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_rate_limit(p_key text, p_limits jsonb, p_hit boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_rate_limit(p_key text, p_limits jsonb, p_hit boolean) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_rate_limit_hit(p_key text, p_limits jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_rate_limit_hit(p_key text, p_limits jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_rate_limit_peek(p_key text, p_limits jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_rate_limit_peek(p_key text, p_limits jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_recover_sessions(p_instance_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_recover_sessions(p_instance_id text) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_release_claims() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_release_claims() TO authenticated;
GRANT ALL ON FUNCTION public.hitl_release_claims() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_schema_version() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_schema_version() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_session_instance() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_session_instance() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_session_status(p_session_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_session_status(p_session_id uuid) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_setting(p_key text, p_default jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_setting(p_key text, p_default jsonb) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_setting(p_key text, p_default jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_sign_event(p_event text, p_payload jsonb, p_fields text[]) FROM PUBLIC;

REVOKE ALL ON FUNCTION public.hitl_skills(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_skills(p jsonb) TO authenticated;
GRANT ALL ON FUNCTION public.hitl_skills(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_success_metrics(p_from timestamp with time zone, p_to timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_success_metrics(p_from timestamp with time zone, p_to timestamp with time zone) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_cancel(p_id text, p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_cancel(p_id text, p_owner text) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_create(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_create(p jsonb) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_finish(p_id text, p_status text, p_status_message text, p_result jsonb, p_case_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_finish(p_id text, p_status text, p_status_message text, p_result jsonb, p_case_id uuid) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_get(p_id text, p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_get(p_id text, p_owner text) TO service_role;

GRANT ALL ON TABLE public.hil_tasks TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_json(t public.hil_tasks) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_json(t public.hil_tasks) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_list(p_owner text, p_after_created timestamp with time zone, p_after_id text, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_list(p_owner text, p_after_created timestamp with time zone, p_after_id text, p_limit integer) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_task_resume(p_id text, p_owner text, p_timeout_seconds double precision) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_task_resume(p_id text, p_owner text, p_timeout_seconds double precision) TO service_role;

REVOKE ALL ON FUNCTION public.hitl_tasks_purge() FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_tasks_purge() TO service_role;

REVOKE ALL ON FUNCTION public.hitl_text(p jsonb, p_field text, p_max integer, p_required boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.hitl_text(p jsonb, p_field text, p_max integer, p_required boolean) TO service_role;

GRANT ALL ON FUNCTION realtime.apply_rls(wal jsonb, max_record_bytes integer) TO anon;
GRANT ALL ON FUNCTION realtime.apply_rls(wal jsonb, max_record_bytes integer) TO authenticated;
GRANT ALL ON FUNCTION realtime.apply_rls(wal jsonb, max_record_bytes integer) TO service_role;

GRANT ALL ON FUNCTION realtime.build_prepared_statement_sql(prepared_statement_name text, entity regclass, columns realtime.wal_column[]) TO anon;
GRANT ALL ON FUNCTION realtime.build_prepared_statement_sql(prepared_statement_name text, entity regclass, columns realtime.wal_column[]) TO authenticated;
GRANT ALL ON FUNCTION realtime.build_prepared_statement_sql(prepared_statement_name text, entity regclass, columns realtime.wal_column[]) TO service_role;

GRANT ALL ON FUNCTION realtime."cast"(val text, type_ regtype) TO anon;
GRANT ALL ON FUNCTION realtime."cast"(val text, type_ regtype) TO authenticated;
GRANT ALL ON FUNCTION realtime."cast"(val text, type_ regtype) TO service_role;

GRANT ALL ON FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text) TO anon;
GRANT ALL ON FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text) TO authenticated;
GRANT ALL ON FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text) TO service_role;

GRANT ALL ON FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text, negate boolean) TO anon;
GRANT ALL ON FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text, negate boolean) TO authenticated;
GRANT ALL ON FUNCTION realtime.check_equality_op(op realtime.equality_op, type_ regtype, val_1 text, val_2 text, negate boolean) TO service_role;

REVOKE ALL ON FUNCTION realtime.hitl_create_partitions() FROM PUBLIC;

GRANT ALL ON FUNCTION realtime.is_visible_through_filters(columns realtime.wal_column[], filters realtime.user_defined_filter[]) TO anon;
GRANT ALL ON FUNCTION realtime.is_visible_through_filters(columns realtime.wal_column[], filters realtime.user_defined_filter[]) TO authenticated;
GRANT ALL ON FUNCTION realtime.is_visible_through_filters(columns realtime.wal_column[], filters realtime.user_defined_filter[]) TO service_role;

GRANT ALL ON FUNCTION realtime.quote_wal2json(entity regclass) TO anon;
GRANT ALL ON FUNCTION realtime.quote_wal2json(entity regclass) TO authenticated;
GRANT ALL ON FUNCTION realtime.quote_wal2json(entity regclass) TO service_role;

GRANT ALL ON FUNCTION realtime.subscription_check_filters() TO anon;
GRANT ALL ON FUNCTION realtime.subscription_check_filters() TO authenticated;
GRANT ALL ON FUNCTION realtime.subscription_check_filters() TO service_role;

GRANT ALL ON FUNCTION realtime.to_regrole(role_name text) TO anon;
GRANT ALL ON FUNCTION realtime.to_regrole(role_name text) TO authenticated;
GRANT ALL ON FUNCTION realtime.to_regrole(role_name text) TO service_role;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.cases TO anon;
GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.cases TO authenticated;
GRANT ALL ON TABLE public.cases TO service_role;

GRANT ALL ON TABLE public.hil_agent_skills TO service_role;

GRANT ALL ON TABLE public.hil_audit TO service_role;

GRANT ALL ON SEQUENCE public.hil_audit_id_seq TO service_role;

GRANT ALL ON TABLE public.hil_callbacks TO service_role;

GRANT ALL ON SEQUENCE public.hil_callbacks_id_seq TO anon;
GRANT ALL ON SEQUENCE public.hil_callbacks_id_seq TO authenticated;
GRANT ALL ON SEQUENCE public.hil_callbacks_id_seq TO service_role;

GRANT ALL ON TABLE public.hil_case_secrets TO service_role;

GRANT ALL ON SEQUENCE public.hil_notifications_id_seq TO service_role;

GRANT ALL ON TABLE public.hil_rate_limits TO service_role;

GRANT ALL ON TABLE public.hil_sessions TO service_role;
GRANT SELECT ON TABLE public.hil_sessions TO authenticated;

GRANT ALL ON TABLE public.hil_settings TO service_role;

GRANT ALL ON TABLE public.hitl_event_key TO service_role;

GRANT ALL ON TABLE public.hitl_stats TO service_role;

GRANT SELECT,INSERT,DELETE ON TABLE public.messages TO anon;
GRANT SELECT,INSERT,DELETE ON TABLE public.messages TO authenticated;
GRANT ALL ON TABLE public.messages TO service_role;

GRANT ALL ON TABLE public.operator_activity TO service_role;
GRANT SELECT ON TABLE public.operator_activity TO authenticated;

GRANT ALL ON SEQUENCE public.operator_activity_id_seq TO anon;
GRANT ALL ON SEQUENCE public.operator_activity_id_seq TO authenticated;
GRANT ALL ON SEQUENCE public.operator_activity_id_seq TO service_role;

GRANT SELECT,INSERT,UPDATE ON TABLE realtime.messages TO postgres;
GRANT SELECT,INSERT,UPDATE ON TABLE realtime.messages TO anon;
GRANT SELECT,INSERT,UPDATE ON TABLE realtime.messages TO authenticated;
GRANT SELECT,INSERT,UPDATE ON TABLE realtime.messages TO service_role;

GRANT SELECT ON TABLE realtime.subscription TO anon;
GRANT SELECT ON TABLE realtime.subscription TO authenticated;
GRANT SELECT ON TABLE realtime.subscription TO service_role;

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO service_role;

ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO service_role;

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO service_role;

ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO service_role;

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO service_role;

ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO service_role;
