-- The schema version the database holds, for the relay's readiness check (/readyz, `hitl-relay
-- doctor`): the version of the newest migration. Every later migration that changes the contract
-- redefines it with its own version, and the relay's `EXPECTED_SCHEMA_VERSION`
-- (hitl_relay/readiness.py) names the same one; tests/db/test_schema_version.py fails when the
-- function, the constant and the newest file in supabase/migrations disagree.
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261125002300'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
