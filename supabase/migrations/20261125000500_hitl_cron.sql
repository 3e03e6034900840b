-- pg_cron jobs, scheduled by name (re-running overwrites, never duplicates). pg_cron lives in
-- one database (cron.database_name, `postgres` on Supabase and locally); elsewhere, for example
-- in test databases, the jobs are skipped with a notice. Minute syntax only: Debian's pg_cron
-- 1.4 has no second-level schedules.
do $$
begin
  -- cron.database_name is only defined when pg_cron is preloaded (shared_preload_libraries).
  if exists (select 1 from pg_extension where extname = 'pg_cron')
     or (exists (select 1 from pg_available_extensions where name = 'pg_cron')
         and current_setting('cron.database_name', true) = current_database()) then
    create extension if not exists pg_cron;
    perform cron.schedule('hitl-expire-sessions', '* * * * *',
                          'select public.hitl_expire_sessions()');
    perform cron.schedule('hitl-purge', '17 3 * * *',
                          $job$select public.hitl_purge(interval '30 days')$job$);
  else
    raise notice 'pg_cron is not available in database %: hitl cron jobs not scheduled',
      current_database();
  end if;
end
$$;
