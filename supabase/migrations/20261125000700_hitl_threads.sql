-- Conversation continuity (one thread per call) and the clarification loop.
--
-- Thread: every session with the same retell_call_id belongs to one call thread. A new case
-- carries the call's earlier questions and answers in cases.metadata.thread (and in its
-- case_opened broadcast), so operators see them without the agent resending anything.
--
-- Clarification: an operator answers with a message of kind 'clarification' (a question back).
-- The waiting relay returns `needs_info`; the agent asks the caller and calls ask_human again
-- with case_id set, which runs hitl_continue_case: the caller's reply is added to the SAME case
-- as an 'ai' message and a new waiting session starts on it.

-- A session that ended because the operator asked back is `needs_info`, not answered.
alter table public.hil_sessions drop constraint if exists hil_sessions_status_check;
alter table public.hil_sessions add constraint hil_sessions_status_check check (
  status in ('waiting', 'answered', 'needs_info', 'timed_out', 'expired', 'failed', 'cancelled'));

create or replace function public.hitl_close_session(p_session_id uuid, p_status text,
                                                     p_detail jsonb default '{}'::jsonb)
returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
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

-- The call's thread so far: one entry per case, oldest first.
create or replace function public.hitl_call_history(p_call_id text) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
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

-- Newest unanswered clarification request of a case (a human 'clarification' message with no
-- later ai follow-up), or null. The relay's catch-up read uses it, so a question back sent while
-- the relay was not listening is not lost.
create or replace function public.hitl_pending_clarification(p_case_id uuid) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
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

-- Continue a case after a clarification: the caller's reply becomes an 'ai' message on the
-- same case and a new waiting session opens (idempotent on call + case + reply).
create or replace function public.hitl_continue_case(p jsonb) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_case_id uuid;
  v_reply text;
  v_session text;
  v_call text;
  v_agent text;
  v_timeout integer;
  v_key text;
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

  v_key := v_call || ':' || v_case_id::text || ':'
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

-- New cases carry their call's thread (earlier questions and answers).
create or replace function public.hitl_attach_thread() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
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

create or replace trigger hitl_attach_thread
  before insert on public.cases
  for each row when (new.source = 'mcp_voice')
  execute function public.hitl_attach_thread();

-- case_opened now includes the thread for the console.
create or replace function public.hitl_on_case_opened() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform realtime.send(
    jsonb_build_object(
      'case_id', new.id, 'priority', new.priority, 'urgency', new.urgency,
      'question', new.description, 'title', new.title,
      'deadline_at', new.metadata ->> 'deadline_at', 'expires_at', new.expires_at,
      'retell_call_id', new.metadata ->> 'retell_call_id', 'source', new.source,
      'thread', coalesce(new.metadata -> 'thread', '[]'::jsonb)),
    'case_opened', 'operators', true);
  return null;
end;
$$;

revoke all on function public.hitl_call_history(text) from public, anon, authenticated;
revoke all on function public.hitl_pending_clarification(uuid) from public, anon, authenticated;
revoke all on function public.hitl_continue_case(jsonb) from public, anon, authenticated;
grant execute on function public.hitl_call_history(text), public.hitl_pending_clarification(uuid),
  public.hitl_continue_case(jsonb) to service_role;
