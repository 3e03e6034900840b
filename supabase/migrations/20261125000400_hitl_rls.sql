-- Row-level security on every table (enabled where each table is created, again here for a
-- database that applied an older 0100). The relay uses the service role (bypasses RLS).
-- Operators are authenticated users whose JWT has app_metadata.hitl_role = 'operator'
-- (public.hitl_is_operator()): they read cases, messages and sessions and insert human
-- messages as themselves; nobody else sees anything. Webhook secrets (hil_case_secrets) and the
-- audit log have no policy at all: only the service role reads them.

alter table public.cases enable row level security;
alter table public.messages enable row level security;
alter table public.hil_sessions enable row level security;
alter table public.hil_case_secrets enable row level security;
alter table public.hil_audit enable row level security;

-- What the API roles need, on top of RLS; `anon` needs nothing (policies name `authenticated`).
grant select on public.cases, public.messages, public.hil_sessions to authenticated;
grant insert on public.messages to authenticated;
grant all on public.cases, public.messages, public.hil_sessions, public.hil_case_secrets,
  public.hil_audit to service_role;
revoke all on public.hil_case_secrets, public.hil_audit from anon, authenticated;

drop policy if exists hitl_operators_read_cases on public.cases;
create policy hitl_operators_read_cases on public.cases
  for select to authenticated using (public.hitl_is_operator());

drop policy if exists hitl_operators_read_messages on public.messages;
create policy hitl_operators_read_messages on public.messages
  for select to authenticated using (public.hitl_is_operator());

drop policy if exists hitl_operators_insert_messages on public.messages;
create policy hitl_operators_insert_messages on public.messages
  for insert to authenticated with check (
    public.hitl_is_operator()
    and sender_type = 'human'
    and sender_id = auth.uid()
    and kind in ('answer', 'clarification', 'cannot_answer', 'note')
  );

drop policy if exists hitl_operators_read_sessions on public.hil_sessions;
create policy hitl_operators_read_sessions on public.hil_sessions
  for select to authenticated using (public.hitl_is_operator());

-- Realtime authorisation (policies on realtime.messages) lives in its own, last migration,
-- 20261206900000_hitl_realtime_policies.sql: a hosted project may refuse it to `db push`.
