-- MCP tasks (2025-11-25 `tasks/*`, 2026-07-28 `io.modelcontextprotocol/tasks`): a durable handle
-- on an ask_human call, kept beside its case so that any relay replica answers a poll, after a
-- restart and while the replica that created it is gone. A poll is one round trip: the task row
-- by primary key and, while it is not terminal, its case's reply (hitl_case_reply: indexed reads
-- by case id). The relay that created the task still waits through Realtime and writes the final
-- tool result here; a poll that finds the answer before that derives the same status from it.

create table if not exists public.hil_tasks (
  -- Receiver-generated, 256 random bits (url-safe base64): not guessable.
  id text primary key check (length(id) between 32 and 128),
  -- SHA-256 (hex) of the API key that created the task: only that key sees it.
  owner text not null check (owner ~ '^[0-9a-f]{64}$'),
  -- The case whose answer completes the task (no foreign key: the task row is written before
  -- the case, so that the handle comes back at once).
  case_id uuid not null,
  tool text not null,
  -- The call's identity (call_id, session_id, agent_id): a follow-up after the operator's
  -- question (2026-07-28 tasks/update) continues the same call on any replica.
  call jsonb not null default '{}'::jsonb,
  era text not null check (era in ('2025-11-25', '2026-07-28')),
  status text not null default 'working' check (
    status in ('working', 'input_required', 'completed', 'failed', 'cancelled')),
  status_message text,
  -- The tool result (CallToolResult, wire JSON) once the creating relay has it.
  result jsonb,
  created_at timestamptz not null default now(),
  last_updated_at timestamptz not null default now(),
  -- When the relay stops waiting for the answer (the call's timeout_seconds).
  deadline_at timestamptz not null,
  ttl_ms bigint not null check (ttl_ms > 0),
  poll_interval_ms integer not null check (poll_interval_ms > 0),
  expires_at timestamptz not null
);
-- tasks/list: one key's tasks in creation order (keyset pagination on created_at, id).
create index if not exists hil_tasks_owner_idx on public.hil_tasks (owner, created_at, id);
create index if not exists hil_tasks_expires_idx on public.hil_tasks (expires_at);
create index if not exists hil_tasks_case_idx on public.hil_tasks (case_id);

alter table public.hil_tasks enable row level security;
revoke all on public.hil_tasks from anon, authenticated;
grant all on public.hil_tasks to service_role;

-- The task as the relay reads it: the row (expired tasks are gone) plus, while it is not
-- terminal and has no result yet, the case's reply.
create or replace function public.hitl_task_json(t public.hil_tasks) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select jsonb_build_object(
    'id', t.id, 'case_id', t.case_id, 'tool', t.tool, 'call', t.call, 'era', t.era,
    'status', t.status,
    'status_message', t.status_message, 'result', t.result,
    'created_at', t.created_at, 'last_updated_at', t.last_updated_at,
    'deadline_at', t.deadline_at, 'ttl_ms', t.ttl_ms, 'poll_interval_ms', t.poll_interval_ms,
    'now', now(),
    'reply', case when t.result is null and t.status in ('working', 'input_required')
                  then public.hitl_case_reply(t.case_id) end)
$$;

create or replace function public.hitl_task_create(p jsonb) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  t public.hil_tasks;
  v_ttl bigint := (p->>'ttl_ms')::bigint;
begin
  insert into public.hil_tasks (id, owner, case_id, tool, call, era, status, status_message, result,
                                deadline_at, ttl_ms, poll_interval_ms, expires_at)
  values (p->>'id', p->>'owner', (p->>'case_id')::uuid, p->>'tool',
          coalesce(nullif(p->'call', 'null'::jsonb), '{}'::jsonb), p->>'era',
          coalesce(p->>'status', 'working'), p->>'status_message',
          nullif(p->'result', 'null'::jsonb),
          now() + make_interval(secs => (p->>'timeout_seconds')::double precision),
          v_ttl, (p->>'poll_interval_ms')::integer,
          now() + make_interval(secs => v_ttl / 1000.0))
  returning * into t;
  return public.hitl_task_json(t);
end
$$;

-- A poll (tasks/get, tasks/result): null when there is no such task for this key, or it expired.
create or replace function public.hitl_task_get(p_id text, p_owner text) returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select public.hitl_task_json(t) from public.hil_tasks t
   where t.id = p_id and t.owner = p_owner and t.expires_at > now()
$$;

-- The creating relay records the final result. A cancelled task stays cancelled (spec: once
-- cancelled it MUST remain cancelled); the case id follows a retried call that joined an
-- existing case.
create or replace function public.hitl_task_finish(p_id text, p_status text, p_status_message text,
                                                   p_result jsonb, p_case_id uuid)
returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  t public.hil_tasks;
begin
  if p_status is null or p_status not in ('input_required', 'completed', 'failed') then
    perform public.hitl_invalid('p_status', 'must be one of input_required, completed, failed');
  end if;
  update public.hil_tasks
     set status = p_status, status_message = p_status_message, result = p_result,
         case_id = coalesce(p_case_id, case_id), last_updated_at = now()
   where id = p_id and status in ('working', 'input_required')
  returning * into t;
  if not found then
    select * into t from public.hil_tasks where id = p_id;
  end if;
  return case when t.id is null then null else public.hitl_task_json(t) end;
end
$$;

-- 2026-07-28 tasks/update: the client answered the operator's question; a follow-up starts
-- waiting with its own time limit. Null when there is no such live task for this key.
create or replace function public.hitl_task_resume(p_id text, p_owner text,
                                                   p_timeout_seconds double precision)
returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  t public.hil_tasks;
begin
  update public.hil_tasks
     set deadline_at = now() + make_interval(secs => p_timeout_seconds), last_updated_at = now()
   where id = p_id and owner = p_owner and expires_at > now()
     and status in ('working', 'input_required') and result is null
  returning * into t;
  return case when t.id is null then null else public.hitl_task_json(t) end;
end
$$;

-- tasks/cancel: null when there is no such task for this key; {'terminal': true, task} when it
-- had already ended (the caller answers -32602). Cancelling closes the task's waiting session
-- `cancelled` (the case stays open for operators), even when the relay that waited is gone.
create or replace function public.hitl_task_cancel(p_id text, p_owner text) returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  t public.hil_tasks;
  s record;
begin
  select * into t from public.hil_tasks
   where id = p_id and owner = p_owner and expires_at > now()
   for update;
  if not found then
    return null;
  end if;
  -- Terminal too: a reply committed that the creating relay has not recorded yet (a poll
  -- already reports the task completed).
  if t.status not in ('working', 'input_required') or t.result is not null
     or jsonb_strip_nulls(public.hitl_case_reply(t.case_id)) <> '{}'::jsonb then
    return jsonb_build_object('terminal', true, 'task', public.hitl_task_json(t));
  end if;
  update public.hil_tasks
     set status = 'cancelled', status_message = 'The task was cancelled by request.',
         last_updated_at = now()
   where id = p_id
  returning * into t;
  for s in select id from public.hil_sessions
            where case_id = t.case_id and status = 'waiting'
              and created_at >= t.created_at - interval '1 second'
  loop
    perform public.hitl_close_session(s.id, 'cancelled', jsonb_build_object('task', 'cancelled'));
  end loop;
  return jsonb_build_object('terminal', false, 'task', public.hitl_task_json(t));
end
$$;

-- tasks/list: one key's live tasks after the cursor (created_at, id), oldest first.
create or replace function public.hitl_task_list(p_owner text, p_after_created timestamptz,
                                                 p_after_id text, p_limit integer)
returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce(jsonb_agg(public.hitl_task_json(t) order by t.created_at, t.id), '[]'::jsonb)
    from (select * from public.hil_tasks
           where owner = p_owner and expires_at > now()
             and (p_after_created is null or (created_at, id) > (p_after_created, p_after_id))
           order by created_at, id
           limit greatest(1, least(p_limit, 100))) t
$$;

-- Expired tasks are invisible at once (every read filters on expires_at); this deletes them.
create or replace function public.hitl_tasks_purge() returns integer
language sql security definer set search_path = public, pg_temp as $$
  with gone as (delete from public.hil_tasks where expires_at <= now() returning 1)
  select count(*)::integer from gone
$$;

revoke all on function public.hitl_task_json(public.hil_tasks) from public, anon, authenticated;
revoke all on function public.hitl_task_create(jsonb) from public, anon, authenticated;
revoke all on function public.hitl_task_get(text, text) from public, anon, authenticated;
revoke all on function public.hitl_task_finish(text, text, text, jsonb, uuid)
  from public, anon, authenticated;
revoke all on function public.hitl_task_cancel(text, text) from public, anon, authenticated;
revoke all on function public.hitl_task_resume(text, text, double precision)
  from public, anon, authenticated;
revoke all on function public.hitl_task_list(text, timestamptz, text, integer)
  from public, anon, authenticated;
revoke all on function public.hitl_tasks_purge() from public, anon, authenticated;
grant execute on function public.hitl_task_create(jsonb), public.hitl_task_get(text, text),
  public.hitl_task_finish(text, text, text, jsonb, uuid), public.hitl_task_cancel(text, text),
  public.hitl_task_resume(text, text, double precision),
  public.hitl_task_list(text, timestamptz, text, integer), public.hitl_tasks_purge()
  to service_role;

do $$
begin
  if exists (select 1 from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('hitl-purge-tasks', '*/5 * * * *', 'select public.hitl_tasks_purge()');
  else
    raise notice 'pg_cron is not available in database %: hitl-purge-tasks not scheduled',
      current_database();
  end if;
end
$$;

-- The contract changed: the relay's readiness check expects this version.
create or replace function public.hitl_schema_version()
returns text
language sql
immutable
set search_path = ''
as $$ select '20261206400000'::text $$;

revoke all on function public.hitl_schema_version() from public, anon, authenticated;
grant execute on function public.hitl_schema_version() to service_role;
