-- pg_cron jobs (run in the cluster's `postgres` database, the one pg_cron lives in): scheduled by
-- name with minute syntax, re-scheduling overwrites instead of duplicating, and each job's
-- command runs.
begin;
select plan(13);

select has_extension('pg_cron', 'pg_cron is installed where the migrations ran');
-- (cron.job's text columns have their own collation: compare as JSON)
select is(
  (select jsonb_build_object('schedule', schedule, 'command', command, 'database', database, 'active', active)
     from cron.job where jobname = 'hitl-expire-sessions'),
  jsonb_build_object('schedule', '* * * * *', 'command', 'select public.hitl_expire_sessions()',
                     'database', current_database(), 'active', true),
  'hitl-expire-sessions runs every minute');
select is(
  (select jsonb_build_object('schedule', schedule, 'command', command, 'active', active)
     from cron.job where jobname = 'hitl-purge'),
  jsonb_build_object('schedule', '17 3 * * *', 'command', $cmd$select public.hitl_purge(interval '30 days')$cmd$,
                     'active', true),
  'hitl-purge runs daily at 03:17');
select is(
  (select jsonb_build_object('schedule', schedule, 'command', command, 'active', active)
     from cron.job where jobname = 'hitl-purge-tasks'),
  jsonb_build_object('schedule', '*/5 * * * *', 'command', 'select public.hitl_tasks_purge()',
                     'active', true),
  'hitl-purge-tasks deletes expired MCP tasks every five minutes');
select is(
  (select jsonb_build_object('schedule', schedule, 'command', command, 'active', active)
     from cron.job where jobname = 'hitl-escalate'),
  jsonb_build_object('schedule', '* * * * *', 'command', 'select public.hitl_escalate()', 'active', true),
  'hitl-escalate runs every minute (the relay calls it more often)');
select is((select count(*)::int from cron.job where jobname like 'hitl-%'), 4, 'exactly the four hitl jobs');
select is((select username::text from cron.job where jobname = 'hitl-expire-sessions'), current_user::text,
  'the jobs run as the role that applied the migrations');

-- re-running the migration's schedule calls overwrites by name
create temp table ids as select jobid from cron.job where jobname = 'hitl-expire-sessions';
select cron.schedule('hitl-expire-sessions', '* * * * *', 'select public.hitl_expire_sessions()');
select cron.schedule('hitl-purge', '17 3 * * *', $cmd$select public.hitl_purge(interval '30 days')$cmd$);
select is((select count(*)::int from cron.job where jobname like 'hitl-%'), 4,
  're-scheduling by name does not duplicate the jobs');
select is((select jobid from cron.job where jobname = 'hitl-expire-sessions'), (select jobid from ids),
  're-scheduling keeps the job');

-- the commands themselves run
select lives_ok((select command from cron.job where jobname = 'hitl-expire-sessions'),
  'the expiry job''s command runs');
select lives_ok((select command from cron.job where jobname = 'hitl-purge'),
  'the purge job''s command runs');
select lives_ok((select command from cron.job where jobname = 'hitl-purge-tasks'),
  'the task purge job''s command runs');
select ok(exists (select 1 from pg_available_extensions where name = 'pg_cron'
                  and current_setting('cron.database_name') = current_database()),
  'pg_cron''s database is this one (cron.database_name)');

select * from finish();
rollback;
