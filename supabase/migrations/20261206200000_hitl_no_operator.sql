-- No operator on duty: the question is recorded all the same (design.md, "The ask", step 3).
-- The relay calls hitl_open_case_no_operator instead of hitl_open_case when nobody is present on
-- `operators`: in one transaction the case is opened exactly as hitl_open_case opens it (so it is
-- in the console queue, `case_opened` is broadcast, and operators who come on duty later load it)
-- and its session is closed at once as `no_operator` (nobody waits on it; the agent may read the
-- answer later with get_human_answer, as after a timeout).
alter table public.hil_sessions drop constraint if exists hil_sessions_status_check;
alter table public.hil_sessions add constraint hil_sessions_status_check check (
  status in ('waiting', 'answered', 'needs_info', 'timed_out', 'expired', 'failed', 'cancelled',
             'no_operator'));

-- Returns what hitl_open_case returns, with `status` `no_operator` when this call recorded the
-- session so. Otherwise the session is left as hitl_open_case left it and the relay reads the
-- case: a retry whose case has an answer meanwhile (`waiting` again: the relay returns the
-- answer and closes it `answered`), or an identical call another relay is waiting on.
create or replace function public.hitl_open_case_no_operator(p jsonb) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
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

-- What get_human_answer needs to tell "no answer yet" from "no such case": the case's status,
-- or null for a case id that does not exist.
create or replace function public.hitl_case_status(p_case_id uuid) returns text
language sql stable security definer set search_path = public, pg_temp as $$
  select status from public.cases where id = p_case_id
$$;

revoke all on function public.hitl_open_case_no_operator(jsonb) from public, anon, authenticated;
revoke all on function public.hitl_case_status(uuid) from public, anon, authenticated;
grant execute on function public.hitl_open_case_no_operator(jsonb), public.hitl_case_status(uuid)
  to service_role;

-- The relay that calls hitl_open_case_no_operator expects this version (hitl_relay/readiness.py).
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261206200000'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
