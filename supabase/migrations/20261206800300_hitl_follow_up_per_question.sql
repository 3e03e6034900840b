-- A caller's reply belongs to the question back it answers.
--
-- hitl_continue_case was idempotent on call + case + the reply's words. When an operator asked
-- back a second time on the same case and the caller replied in the same words ("Yes"), the
-- second reply was taken for a retry of the first: nothing was recorded, the second question
-- stayed pending, and the agent was handed the same question again. The key now also names the
-- newest question back of the case: a retried call still finds its session (the reply's own
-- note does not change the newest question), a reply to a later question is recorded.
--
-- Follow-ups recorded before this migration keep their old keys: a retry of one of those after
-- the upgrade records the reply once more (a duplicate note, no lost answer).

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

revoke all on function public.hitl_continue_case(jsonb) from public, anon, authenticated;
grant execute on function public.hitl_continue_case(jsonb) to service_role;
