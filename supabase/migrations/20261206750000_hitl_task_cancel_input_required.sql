-- tasks/cancel of a task whose operator asked a question back. Such a task is `input_required` in
-- both eras (2025-11-25: the question is elicited on tasks/result; 2026-07-28: inputRequests),
-- and the specifications let `input_required` move to `cancelled`. The first definition took any
-- reply of the case, a pending clarification too, as "already terminal" and refused: only a
-- committed answer (a poll already reports the task completed) is terminal now.
create or replace function public.hitl_task_cancel(p_id text, p_owner text) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
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

revoke all on function public.hitl_task_cancel(text, text) from public, anon, authenticated;
grant execute on function public.hitl_task_cancel(text, text) to service_role;
