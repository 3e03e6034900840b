-- pg_cron jobs, scheduled by name (re-running overwrites, never duplicates). pg_cron lives in
-- one database (cron.database_name, `postgres` on Supabase and locally). Supabase creates it
-- `with schema pg_catalog` (docs: supabase.com/docs/guides/cron/install; supabase/postgres pins
-- that schema with supautils.extensions_parameter_overrides), and its linter flags an extension
-- in `public`, where a bare `create extension` would put it and whence it cannot be moved.
-- Where pg_cron is missing (another database, a Postgres without it) the jobs are not scheduled
-- and a WARNING says so; `hitl-relay migrate` then fails unless told `--allow-no-cron`.
-- Minute syntax only: Debian's pg_cron 1.4 has no second-level schedules.
do $$
begin
  -- cron.database_name is only defined when pg_cron is preloaded (shared_preload_libraries).
  if exists (select 1 from pg_extension where extname = 'pg_cron')
     or (exists (select 1 from pg_available_extensions where name = 'pg_cron')
         and current_setting('cron.database_name', true) = current_database()) then
    create extension if not exists pg_cron with schema pg_catalog;
    if exists (select 1 from pg_extension e join pg_namespace n on n.oid = e.extnamespace
               where e.extname = 'pg_cron' and n.nspname = 'public') then
      raise warning using message =
        'pg_cron is installed in schema public (Supabase''s linter flags it; it cannot be '
        || 'moved): drop it and create it again "with schema pg_catalog", then rerun the '
        || 'migrations (dropping it drops its jobs)';
    end if;
    perform cron.schedule('hitl-expire-sessions', '* * * * *',
                          'select public.hitl_expire_sessions()');
    perform cron.schedule('hitl-purge', '17 3 * * *',
                          $job$select public.hitl_purge(interval '30 days')$job$);
  else
    raise warning using message = format(
      'pg_cron is not available in database %s: the hitl cron jobs (hitl-expire-sessions, '
      || 'hitl-purge) are not scheduled', current_database());
  end if;
end
$$;
