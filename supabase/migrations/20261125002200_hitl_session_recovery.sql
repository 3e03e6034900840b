-- Session recovery after a relay restart.
--
-- Each relay process has an instance id (HITL_INSTANCE_ID, default the host name). Its PostgREST
-- requests carry it in the `x-hitl-instance` header, and a session that starts (or starts again)
-- waiting records the instance waiting on it, taken from `request.headers`: no RPC changes, so
-- hitl_open_case and hitl_continue_case keep their jsonb input. A relay that starts again calls
-- hitl_recover_sessions(its id): its sessions still `waiting` had their MCP calls die with the
-- old process; they are closed (past their deadline `expired`, the rest `cancelled` with reason
-- "relay restarted"). Cases stay open and answerable, and the agent's retried ask_human (same
-- idempotency key) re-opens its session as waiting on the same case.

alter table public.hil_sessions add column if not exists instance_id text;
create index if not exists hil_sessions_instance_waiting_idx on public.hil_sessions (instance_id)
  where status = 'waiting';

create or replace function public.hitl_session_instance() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if new.status = 'waiting' and (tg_op = 'INSERT' or old.status is distinct from 'waiting') then
    new.instance_id := nullif(left(
      coalesce(nullif(current_setting('request.headers', true), ''), '{}')::jsonb
        ->> 'x-hitl-instance', 128), '');
  end if;
  return new;
end;
$$;

drop trigger if exists hitl_session_instance on public.hil_sessions;
create trigger hitl_session_instance
  before insert or update of status on public.hil_sessions
  for each row execute function public.hitl_session_instance();

-- Close the sessions an instance was waiting on when it stopped. Returns {expired, cancelled}.
create or replace function public.hitl_recover_sessions(p_instance_id text) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
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

revoke all on function public.hitl_session_instance() from public, anon, authenticated;
revoke all on function public.hitl_recover_sessions(text) from public, anon, authenticated;
grant execute on function public.hitl_recover_sessions(text) to service_role;
