-- hitl-relay tables. Additive: an operators' platform may already have `cases` and `messages`
-- with columns and rows of its own; those are kept. Checks apply to the relay's rows
-- (source = 'mcp_voice') only, so the platform's own statuses stay valid.
-- Closed from the first step: on a hosted project the default privileges of `public` grant
-- every new table to `anon` and `authenticated` (supabase/postgres
-- migrations/db/init-scripts/00000000000000-initial-schema.sql), and each migration file is its
-- own transaction, so every table gets row-level security (no policy yet: nobody but the
-- service role sees a row) and loses the API roles' rights in the file that creates it.
-- TRUNCATE, REFERENCES and TRIGGER are never subject to RLS, so nobody but the service role
-- keeps them, on the platform's own `cases` and `messages` too.

create table if not exists public.cases (
  id uuid primary key default gen_random_uuid(),
  created_at timestamptz not null default now()
);
alter table public.cases
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists title text,
  add column if not exists description text,
  add column if not exists status text default 'open',
  add column if not exists priority integer default 3,
  add column if not exists urgency text default 'medium',
  add column if not exists source text,
  add column if not exists metadata jsonb default '{}'::jsonb,
  add column if not exists answered_at timestamptz,
  add column if not exists expires_at timestamptz,
  add column if not exists answer_message_id uuid;

do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'cases_hitl_values'
                 and conrelid = 'public.cases'::regclass) then
    alter table public.cases add constraint cases_hitl_values check (
      source is distinct from 'mcp_voice' or (
        status in ('open', 'answered', 'expired', 'cancelled', 'closed')
        and priority between 1 and 5
        and urgency in ('low', 'medium', 'high')
      )
    ) not valid;
  end if;
end
$$;
create index if not exists cases_open_idx on public.cases (status, priority desc, created_at)
  where source = 'mcp_voice';
alter table public.cases enable row level security;
revoke truncate, references, trigger on public.cases from anon, authenticated;

create table if not exists public.messages (
  id uuid primary key default gen_random_uuid(),
  case_id uuid not null references public.cases (id) on delete cascade,
  created_at timestamptz not null default now()
);
alter table public.messages
  add column if not exists case_id uuid references public.cases (id) on delete cascade,
  add column if not exists created_at timestamptz not null default now(),
  add column if not exists sender_type text,
  add column if not exists sender_id uuid,
  add column if not exists content text,
  add column if not exists kind text not null default 'answer';
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'messages_hitl_values'
                 and conrelid = 'public.messages'::regclass) then
    alter table public.messages add constraint messages_hitl_values check (
      sender_type in ('human', 'ai', 'system')
      and kind in ('answer', 'clarification', 'cannot_answer', 'note')
      and octet_length(coalesce(content, '')) <= 65536
    ) not valid;
  end if;
end
$$;
create index if not exists messages_case_idx on public.messages (case_id, created_at);
alter table public.messages enable row level security;
revoke truncate, references, trigger on public.messages from anon, authenticated;

create table if not exists public.hil_sessions (
  id uuid primary key default gen_random_uuid(),
  mcp_session_id text not null,
  retell_call_id text not null,
  retell_agent_id text,
  case_id uuid not null references public.cases (id) on delete cascade,
  idempotency_key text not null,
  status text not null default 'waiting' check (
    status in ('waiting', 'answered', 'timed_out', 'expired', 'failed', 'cancelled')),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  closed_at timestamptz,
  metadata jsonb not null default '{}'::jsonb
);
create unique index if not exists hil_sessions_idempotency_key_idx
  on public.hil_sessions (idempotency_key);
create index if not exists hil_sessions_call_idx on public.hil_sessions (retell_call_id, created_at);
create index if not exists hil_sessions_waiting_idx on public.hil_sessions (expires_at)
  where status = 'waiting';
create index if not exists hil_sessions_case_idx on public.hil_sessions (case_id);
alter table public.hil_sessions enable row level security;
revoke all on public.hil_sessions from anon, authenticated;

-- Secrets live apart from `cases` so no operator policy can ever expose them.
create table if not exists public.hil_case_secrets (
  case_id uuid primary key references public.cases (id) on delete cascade,
  webhook_secret text,
  created_at timestamptz not null default now()
);
alter table public.hil_case_secrets enable row level security;
revoke all on public.hil_case_secrets from anon, authenticated;

create table if not exists public.hil_audit (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor text not null,
  action text not null,
  case_id uuid,
  session_id uuid,
  outcome text,
  detail jsonb not null default '{}'::jsonb
);
create index if not exists hil_audit_at_idx on public.hil_audit (at);
create index if not exists hil_audit_case_idx on public.hil_audit (case_id);
alter table public.hil_audit enable row level security;
revoke all on public.hil_audit from anon, authenticated;
revoke all on sequence public.hil_audit_id_seq from anon, authenticated;
