-- Is the expiry job running? The relay reads this every minute and exports it on /metrics
-- (`hitl_expiry_last_run_timestamp_seconds`) for the "expiry job stale" alert
-- (deploy/prometheus/alerts.yml). pg_cron records each run in cron.job_run_details as it ends
-- (pg_cron >= 1.3; Debian's is 1.4, Supabase's newer); its RLS shows a role the runs of the jobs
-- it scheduled, so the function runs as its owner, the role that ran the cron migration.
-- Returns {scheduled, last_success}: `scheduled` false where pg_cron or the job is not there
-- (a database that is not cron.database_name), `last_success` the end of the newest
-- succeeded run (null: none yet).
create or replace function public.hitl_expiry_job() returns jsonb
language plpgsql stable security definer set search_path = public, pg_temp as $$
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

revoke all on function public.hitl_expiry_job() from public, anon, authenticated;
grant execute on function public.hitl_expiry_job() to service_role;

-- The relay that reads hitl_expiry_job expects this version (hitl_relay/readiness.py).
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261206200100'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
