-- hitl_expiry_job() where pg_cron lives: the expiry job is scheduled and its newest succeeded
-- run is reported (a newer failed run does not count), for the "expiry job stale" alert.
begin;
select plan(4);

select is((public.hitl_expiry_job() ->> 'scheduled')::boolean, true, 'the expiry job is scheduled');

create temp table job as select jobid from cron.job where jobname = 'hitl-expire-sessions';
insert into cron.job_run_details (jobid, runid, job_pid, database, username, command, status,
                                  return_message, start_time, end_time)
select jobid, 2000000000, 1, current_database(), current_user, 'select public.hitl_expire_sessions()',
       'succeeded', '1 row', '2026-12-06 10:00:00+00'::timestamptz, '2026-12-06 10:00:01+00'::timestamptz from job
union all
select jobid, 2000000001, 1, current_database(), current_user, 'select public.hitl_expire_sessions()',
       'failed', 'boom', '2026-12-06 10:01:00+00'::timestamptz, '2026-12-06 10:01:01+00'::timestamptz from job;

select is((public.hitl_expiry_job() ->> 'last_success')::timestamptz, '2026-12-06 10:00:01+00',
  'the newest succeeded run counts, not a newer failed one');
select ok(has_function_privilege('service_role', 'public.hitl_expiry_job()', 'execute'),
  'the service role may call it');
select ok(not has_function_privilege('authenticated', 'public.hitl_expiry_job()', 'execute'),
  'operators may not');

select * from finish();
rollback;
