-- Realtime authorisation for private channels: policies on realtime.messages, which Realtime
-- evaluates per channel join (supabase/realtime lib/realtime/tenants/authorization.ex: a probe
-- row of (topic, extension) is inserted and read back under the user's role, then rolled back).
-- The probe carries only the topic and the extension (`broadcast` or `presence`): no event
-- name, no presence key, no payload. So a write policy cannot say "only `typing`" or "only your
-- own presence key"; it can only grant or refuse a whole extension on a topic.
--
-- Operators get exactly what the operators' console uses (hitl_relay/console/static/console.js):
--   * `case:<id>`: receive broadcasts (`message`, `session`), send nothing;
--   * `operators`: receive broadcasts (`case_opened`, `timeout_warning`) and presence, and
--     track their own presence (presence write); no broadcast there, so nobody can forge a
--     `case_opened` to the other operators.
-- Everything else (anon, non-operators, other topics) is refused.
--
-- This file is last and alone on purpose: `realtime.messages` belongs to supabase_realtime_admin,
-- and a hosted project lets `postgres` manage policies on it only where supautils'
-- `policy_grants` applies (the dashboard's SQL editor); `supabase db push` can be refused with
-- "must be owner of relation messages" (supabase/cli issue 6116). `hitl-relay migrate` then
-- stops here, after every table is already protected, and prints this file to run in the SQL
-- editor.
drop policy if exists hitl_operators_receive on realtime.messages;
create policy hitl_operators_receive on realtime.messages
  for select to authenticated using (
    public.hitl_is_operator()
    and (
      (realtime.messages.extension = 'broadcast'
       and (realtime.topic() = 'operators' or realtime.topic() like 'case:%'))
      or (realtime.messages.extension = 'presence' and realtime.topic() = 'operators')
    )
  );

drop policy if exists hitl_operators_send on realtime.messages;
create policy hitl_operators_send on realtime.messages
  for insert to authenticated with check (
    public.hitl_is_operator()
    and realtime.topic() = 'operators'
    and realtime.messages.extension = 'presence'
  );

-- The contract changed: the relay's readiness check expects this version (so a project where
-- this file was refused reports itself not ready until the SQL-editor step is done).
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261206900000'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
