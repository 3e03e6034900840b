-- What a hosted Supabase project has and a bare Postgres lacks: its roles, their attributes and
-- memberships, and the default privileges of `public`. Run by the cluster's superuser
-- (`supabase_admin`) through `hitl-relay migrate --local` (the devstack and tests) only; never to
-- a real project. Every statement mirrors one in supabase/postgres (migrations/db/init-scripts/
-- and migrations/db/migrations/), named beside it; hitl_devstack/README.md has the table.
-- Roles are cluster-wide and this file runs once per database, so each step is guarded.
do $$
begin
  -- migrate.sh creates `postgres` as a superuser, runs the init scripts as it, then
  -- 10000000000000_demote-postgres.sql takes SUPERUSER away.
  if not exists (select 1 from pg_roles where rolname = 'postgres') then
    create role postgres login password 'postgres';
  end if;
  -- 00000000000000-initial-schema.sql
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit password 'postgres';
  end if;
  if not exists (select 1 from pg_roles where rolname = 'supabase_replication_admin') then
    create role supabase_replication_admin login replication;
  end if;
  -- supabase/realtime lib/realtime/tenants/repo/migrations/20260707120000_restrict_realtime_schema.ex
  if not exists (select 1 from pg_roles where rolname = 'supabase_realtime_admin') then
    create role supabase_realtime_admin noinherit nologin noreplication;
  end if;
end
$$;

-- 10000000000000_demote-postgres.sql
alter role postgres nosuperuser createdb createrole login replication bypassrls;
-- 20230529180330_alter_api_roles_for_inherit.sql
alter role anon inherit;
alter role authenticated inherit;
alter role service_role inherit;
-- 00000000000000-initial-schema.sql (20221103090837_revoke_admin.sql took supabase_admin back)
grant anon, authenticated, service_role to authenticator;
-- 20230201083204_grant_auth_roles_to_postgres.sql
grant anon, authenticated, service_role to postgres;
-- 20230306081037_grant_pg_monitor_to_postgres.sql (pg_monitor brings pg_read_all_settings, so
-- `postgres` reads cron.database_name), 20240606060239_grant_predefined_roles_to_postgres.sql
grant pg_monitor, pg_read_all_data, pg_signal_backend to postgres;
-- timeouts: initial-schema, 20221028101028_set_authenticator_timeout.sql,
-- 20231130133139_set_lock_timeout_to_authenticator_role.sql
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';
-- 00000000000003-post-setup.sql
alter role postgres set search_path to "$user", public, extensions;

-- migrate.sh: `alter database postgres owner to postgres` (so `public`, owned by
-- pg_database_owner on Postgres 15, is postgres's schema)
do $$
begin
  execute format('alter database %I owner to postgres', current_database());
end
$$;

-- 00000000000000-initial-schema.sql: API access to `public` and `extensions`, and the default
-- privileges that hand every new table, function and sequence that `postgres` (who ran the
-- init scripts) or `supabase_admin` creates in `public` to the API roles. Only RLS then holds
-- `anon` and `authenticated` back: each migration must enable it and narrow grants itself.
grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;

create schema if not exists extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
-- 10000000000000_demote-postgres.sql
grant all on schema extensions to postgres;
create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;

-- pg_cron, as hosted enables it: `create extension pg_cron` by `postgres` is run as
-- supabase_admin by supautils (supautils.privileged_extensions) in `pg_catalog`
-- (supautils.extensions_parameter_overrides = {"pg_cron":{"schema":"pg_catalog"}}, in
-- supabase/postgres ansible/files/postgresql_config/supautils.conf.j2), then the event trigger
-- extensions.grant_pg_cron_access() (20231020085357_revoke_writes_on_cron_job_from_postgres.sql)
-- hands `postgres` the cron schema but only SELECT on cron.job. Without supautils the devstack
-- does the same here, ahead of the migration, in the one database pg_cron serves; elsewhere
-- pg_cron is missing, as on a Postgres without it.
do $$
begin
  if current_setting('cron.database_name', true) = current_database()
     and exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    create extension if not exists pg_cron with schema pg_catalog;
    grant usage on schema cron to postgres with grant option;
    grant all on all functions in schema cron to postgres with grant option;
    grant all privileges on all tables in schema cron to postgres with grant option;
    grant all on all sequences in schema cron to postgres with grant option;
    revoke all on table cron.job from postgres;
    grant select on table cron.job to postgres with grant option;
  end if;
end
$$;
