-- hitl_schema_version(): the version of the newest migration applied (the relay's readiness
-- check compares it with the version it expects), callable by the service role only.
begin;
select plan(4);

select has_function('public', 'hitl_schema_version', array[]::text[], 'hitl_schema_version() exists');
select is(public.hitl_schema_version(),
  (select max(version) from supabase_migrations.schema_migrations),
  'it names the newest migration applied (each migration that changes the contract redefines it)');
select ok(has_function_privilege('service_role', 'public.hitl_schema_version()', 'execute'),
  'the service role may call it');
select ok(not has_function_privilege('anon', 'public.hitl_schema_version()', 'execute')
          and not has_function_privilege('authenticated', 'public.hitl_schema_version()', 'execute'),
  'anonymous and operator users may not');

select * from finish();
rollback;
