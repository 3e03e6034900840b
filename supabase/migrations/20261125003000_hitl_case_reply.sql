-- The relay's catch-up read in one round trip: the case's answer if it has one (an answer always
-- wins), else its pending clarification, else nulls. Same rules as hitl_answer and
-- hitl_pending_clarification, which stay for everyone else.
create or replace function public.hitl_case_reply(p_case_id uuid) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select jsonb_build_object(
    'answer', x.answer,
    'clarification', case when x.answer is null
                          then public.hitl_pending_clarification(p_case_id) end)
    from (select public.hitl_answer(p_case_id) as answer) x
$$;

revoke all on function public.hitl_case_reply(uuid) from public, anon, authenticated;
grant execute on function public.hitl_case_reply(uuid) to service_role;

-- The contract changed: the relay's readiness check expects this version.
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261125003000'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
