-- Broadcasts through Supabase Realtime (private topics), from triggers, after commit:
--   messages insert        → 'message'     on case:<case_id>
--   relay case insert      → 'case_opened' on operators
--   session status change  → 'session'     on case:<case_id>
-- Trigger functions are security definer so realtime.send's insert is not subject to the
-- caller's row-level security on realtime.messages.

-- The first human answer decides the case's answer exactly once: the row lock on the case
-- serialises two operators answering at the same moment, and the loser is not the answer.
create or replace function public.hitl_on_message() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_is_answer boolean := false;
begin
  if new.sender_type = 'human' and new.kind in ('answer', 'cannot_answer') then
    update public.cases
       set answer_message_id = new.id,
           status = case when status = 'open' then 'answered' else status end,
           answered_at = coalesce(answered_at, now())
     where id = new.case_id and answer_message_id is null;
    v_is_answer := found;
  end if;
  perform realtime.send(
    jsonb_build_object(
      'id', new.id, 'case_id', new.case_id, 'sender_type', new.sender_type,
      'sender_id', new.sender_id, 'content', new.content, 'kind', new.kind,
      'created_at', new.created_at, 'is_answer', v_is_answer),
    'message', 'case:' || new.case_id::text, true);
  return null;
end;
$$;

create or replace trigger hitl_on_message
  after insert on public.messages
  for each row execute function public.hitl_on_message();

create or replace function public.hitl_on_case_opened() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform realtime.send(
    jsonb_build_object(
      'case_id', new.id, 'priority', new.priority, 'urgency', new.urgency,
      'question', new.description, 'title', new.title,
      'deadline_at', new.metadata ->> 'deadline_at', 'expires_at', new.expires_at,
      'retell_call_id', new.metadata ->> 'retell_call_id', 'source', new.source),
    'case_opened', 'operators', true);
  return null;
end;
$$;

create or replace trigger hitl_on_case_opened
  after insert on public.cases
  for each row when (new.source = 'mcp_voice')
  execute function public.hitl_on_case_opened();

create or replace function public.hitl_on_session_change() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform realtime.send(
    jsonb_build_object('session_id', new.id, 'case_id', new.case_id, 'status', new.status,
                       'expires_at', new.expires_at),
    'session', 'case:' || new.case_id::text, true);
  return null;
end;
$$;

create or replace trigger hitl_on_session_change
  after update of status on public.hil_sessions
  for each row when (old.status is distinct from new.status)
  execute function public.hitl_on_session_change();
