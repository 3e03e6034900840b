-- Operators' policies cover the relay's rows only: on an operators' platform that already has
-- `cases` and `messages`, these migrations must never widen who sees the platform's own rows
-- (their own policies decide that). Relay cases are `source = 'mcp_voice'`.

drop policy if exists hitl_operators_read_cases on public.cases;
create policy hitl_operators_read_cases on public.cases
  for select to authenticated using (source = 'mcp_voice' and public.hitl_is_operator());

-- Is this a relay case? (security definer: the check must not depend on the caller's view of cases)
create or replace function public.hitl_is_relay_case(p_case_id uuid) returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
  select exists (select 1 from public.cases where id = p_case_id and source = 'mcp_voice')
$$;
revoke all on function public.hitl_is_relay_case(uuid) from public, anon;
grant execute on function public.hitl_is_relay_case(uuid) to authenticated, service_role;

drop policy if exists hitl_operators_read_messages on public.messages;
create policy hitl_operators_read_messages on public.messages
  for select to authenticated using (public.hitl_is_operator() and public.hitl_is_relay_case(case_id));

drop policy if exists hitl_operators_insert_messages on public.messages;
create policy hitl_operators_insert_messages on public.messages
  for insert to authenticated with check (
    public.hitl_is_operator()
    and sender_type = 'human'
    and sender_id = auth.uid()
    and kind in ('answer', 'clarification', 'cannot_answer', 'note')
    and public.hitl_is_relay_case(case_id)
  );
