-- Outgoing webhook callbacks (the integration plan's option B) as a durable outbox: when a case
-- that carries `metadata.callback_url` gets its answer, or one of its sessions times out, a row
-- is queued here in the same transaction. Relay replicas claim due rows
-- (`hitl_callbacks_claim`, `for update skip locked`, with a lease), POST them signed with the
-- case's webhook_secret (hil_case_secrets), and report each attempt (`hitl_callback_result`,
-- audited). A late answer after a timeout is therefore delivered even if the replica that
-- served the call is gone. Only the service role touches any of it.

create table if not exists public.hil_callbacks (
  id bigint generated always as identity primary key,
  case_id uuid not null references public.cases (id) on delete cascade,
  session_id uuid,
  event text not null check (event in ('answer', 'timeout')),
  created_at timestamptz not null default now(),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  claimed_until timestamptz,
  delivered_at timestamptz,
  failed_at timestamptz,
  last_status integer,
  last_error text,
  unique (case_id, event)
);
create index if not exists hil_callbacks_due_idx on public.hil_callbacks (next_attempt_at)
  where delivered_at is null and failed_at is null;

alter table public.hil_callbacks enable row level security;
revoke all on public.hil_callbacks from anon, authenticated;
grant all on public.hil_callbacks to service_role;

-- A case's answer is decided (cases.answer_message_id set once by hitl_on_message).
create or replace function public.hitl_callback_on_answer() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if old.answer_message_id is null and new.answer_message_id is not null
     and coalesce(new.metadata ->> 'callback_url', '') <> '' then
    insert into public.hil_callbacks (case_id, event) values (new.id, 'answer')
    on conflict (case_id, event) do nothing;
  end if;
  return null;
end;
$$;

create or replace trigger hitl_callback_on_answer
  after update of answer_message_id on public.cases
  for each row execute function public.hitl_callback_on_answer();

-- A caller stopped waiting without an answer (the first timeout of a case is reported).
create or replace function public.hitl_callback_on_timeout() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if new.status = 'timed_out' and old.status is distinct from 'timed_out'
     and exists (select 1 from public.cases c
                  where c.id = new.case_id and c.answer_message_id is null
                    and coalesce(c.metadata ->> 'callback_url', '') <> '') then
    insert into public.hil_callbacks (case_id, session_id, event)
    values (new.case_id, new.id, 'timeout')
    on conflict (case_id, event) do nothing;
  end if;
  return null;
end;
$$;

create or replace trigger hitl_callback_on_timeout
  after update of status on public.hil_sessions
  for each row execute function public.hitl_callback_on_timeout();

-- Claim up to p_limit due callbacks for p_lease_seconds; each comes with its URL, secret and
-- the JSON to send. A claim not reported back in time is claimed again by anyone.
create or replace function public.hitl_callbacks_claim(p_limit integer default 10,
                                                       p_lease_seconds integer default 120)
returns jsonb
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  v_out jsonb;
begin
  if p_limit is null or p_limit not between 1 and 100 then
    perform public.hitl_invalid('p_limit', 'must be between 1 and 100');
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 5 and 3600 then
    perform public.hitl_invalid('p_lease_seconds', 'must be between 5 and 3600');
  end if;
  with due as (
    select cb.id from public.hil_callbacks cb
     where cb.delivered_at is null and cb.failed_at is null and cb.next_attempt_at <= now()
       and (cb.claimed_until is null or cb.claimed_until < now())
     order by cb.next_attempt_at, cb.id
     limit p_limit
     for update skip locked
  ), claimed as (
    update public.hil_callbacks cb
       set attempts = cb.attempts + 1,
           claimed_until = now() + make_interval(secs => p_lease_seconds)
      from due
     where cb.id = due.id
    returning cb.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', cl.id,
           'case_id', cl.case_id,
           'event', cl.event,
           'attempts', cl.attempts,
           'callback_url', k.metadata ->> 'callback_url',
           'webhook_secret', s.webhook_secret,
           'payload', jsonb_build_object(
             'event', cl.event,
             'case_id', cl.case_id,
             'session_id', cl.session_id,
             'call_id', k.metadata ->> 'retell_call_id',
             'status', case
               when cl.event = 'timeout' then 'timeout'
               when m.kind = 'cannot_answer' or btrim(coalesce(m.content, '')) = '' then 'unclear_answer'
               else 'answered' end,
             'answer', case when cl.event = 'answer' then m.content end,
             'answer_kind', case when cl.event = 'answer' then m.kind end,
             'answered_at', case when cl.event = 'answer' then k.answered_at end,
             'queued_at', cl.created_at)
         ) order by cl.id), '[]'::jsonb)
    into v_out
    from claimed cl
    join public.cases k on k.id = cl.case_id
    left join public.hil_case_secrets s on s.case_id = cl.case_id
    left join public.messages m on m.id = k.answer_message_id;
  return v_out;
end;
$$;

-- Report one attempt: `delivered`, `failed` (final) or `retry` (again in p_retry_in_seconds).
create or replace function public.hitl_callback_result(p_id bigint, p_outcome text,
                                                       p_detail jsonb default '{}'::jsonb,
                                                       p_retry_in_seconds integer default 60)
returns jsonb
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  cb public.hil_callbacks;
begin
  if p_outcome is null or p_outcome not in ('delivered', 'failed', 'retry') then
    perform public.hitl_invalid('p_outcome', 'must be one of delivered, failed, retry');
  end if;
  update public.hil_callbacks
     set delivered_at = case when p_outcome = 'delivered' then now() end,
         failed_at = case when p_outcome = 'failed' then now() end,
         next_attempt_at = case when p_outcome = 'retry'
           then now() + make_interval(secs => greatest(1, least(coalesce(p_retry_in_seconds, 60), 86400)))
           else next_attempt_at end,
         claimed_until = null,
         last_status = nullif(p_detail ->> 'status', '')::integer,
         last_error = left(p_detail ->> 'error', 500)
   where id = p_id and delivered_at is null and failed_at is null
  returning * into cb;
  if not found then
    return jsonb_build_object('id', p_id, 'changed', false);
  end if;
  insert into public.hil_audit (actor, action, case_id, session_id, outcome, detail)
  values ('relay', 'callback_' || cb.event, cb.case_id, cb.session_id, p_outcome,
          coalesce(p_detail, '{}'::jsonb) || jsonb_build_object('attempts', cb.attempts));
  return jsonb_build_object('id', p_id, 'changed', true);
end;
$$;

revoke all on function public.hitl_callback_on_answer() from public, anon, authenticated;
revoke all on function public.hitl_callback_on_timeout() from public, anon, authenticated;
revoke all on function public.hitl_callbacks_claim(integer, integer) from public, anon, authenticated;
revoke all on function public.hitl_callback_result(bigint, text, jsonb, integer)
  from public, anon, authenticated;
grant execute on function public.hitl_callbacks_claim(integer, integer),
  public.hitl_callback_result(bigint, text, jsonb, integer) to service_role;
