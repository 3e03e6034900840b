-- The integration plan's success metrics over a window, each against its target:
-- average response < 30 s, success > 95 %, timeout < 5 %, operator utilisation > 70 %.
--
-- Counted per relay case (a clarification loop is one case), by the outcome of its last
-- session. Utilisation = time operators spent handling cases / time operators were available,
-- within the window. Availability comes from the console's heartbeat RPC
-- (hitl_operator_heartbeat) into operator_activity: presence alone leaves no history.
-- Overlapping intervals of one operator (two tabs) count once; handling time is from a case's
-- creation to the operator's answer, clipped to the window and to their availability.

create table if not exists public.operator_activity (
  id bigint generated always as identity primary key,
  operator_id uuid not null,
  started_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  status text not null default 'available' check (status in ('available', 'away')),
  check (last_seen_at >= started_at)
);
create index if not exists operator_activity_operator_idx
  on public.operator_activity (operator_id, last_seen_at desc);
alter table public.operator_activity enable row level security;
-- the default privileges of `public` gave the API roles everything: operators only read
revoke all on public.operator_activity from anon, authenticated;
grant select on public.operator_activity to authenticated;
grant all on public.operator_activity to service_role;
drop policy if exists hitl_operators_read_own_activity on public.operator_activity;
create policy hitl_operators_read_own_activity on public.operator_activity
  for select to authenticated using (public.hitl_is_operator() and operator_id = auth.uid());

-- Called by the console every ~30 s while an operator is available: extends the current
-- interval if the last beat is recent (≤ 90 s), else starts a new one.
create or replace function public.hitl_operator_heartbeat(p_status text default 'available')
returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_uid uuid := auth.uid();
  a public.operator_activity;
begin
  if not public.hitl_is_operator() or v_uid is null then
    raise exception using errcode = '42501', message = 'only operators record availability';
  end if;
  if p_status not in ('available', 'away') then
    perform public.hitl_invalid('p_status', 'must be available or away');
  end if;
  select * into a from public.operator_activity
   where operator_id = v_uid and status = 'available' and last_seen_at >= now() - interval '90 seconds'
   order by last_seen_at desc limit 1 for update;
  if p_status = 'away' then
    return jsonb_build_object('operator_id', v_uid, 'status', 'away',
                              'interval_id', a.id);
  end if;
  if found then
    update public.operator_activity set last_seen_at = now() where id = a.id returning * into a;
  else
    insert into public.operator_activity (operator_id) values (v_uid) returning * into a;
  end if;
  return jsonb_build_object('operator_id', v_uid, 'status', 'available', 'interval_id', a.id,
                            'started_at', a.started_at, 'last_seen_at', a.last_seen_at);
end;
$$;
revoke all on function public.hitl_operator_heartbeat(text) from public, anon;
grant execute on function public.hitl_operator_heartbeat(text) to authenticated, service_role;

create or replace function public.hitl_success_metrics(p_from timestamptz, p_to timestamptz)
returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
with cases_in as (
  select c.id, c.created_at, c.answered_at, c.answer_message_id,
         (select s.status from public.hil_sessions s where s.case_id = c.id
           order by s.created_at desc, s.id desc limit 1) as last_status,
         (select min(s.created_at) from public.hil_sessions s where s.case_id = c.id) as asked_at
    from public.cases c
   where c.source = 'mcp_voice' and c.created_at >= p_from and c.created_at < p_to
),
finished as (
  select * from cases_in where last_status <> 'waiting'
),
answered as (
  select extract(epoch from (answered_at - asked_at)) as response_s
    from finished where last_status = 'answered' and answered_at is not null
),
-- Availability per operator, overlapping intervals merged, clipped to the window.
avail_raw as (
  select operator_id, greatest(started_at, p_from) as s, least(last_seen_at, p_to) as e
    from public.operator_activity
   where status = 'available' and last_seen_at > p_from and started_at < p_to
),
avail_marked as (
  select operator_id, s, e,
         case when s <= max(e) over (partition by operator_id order by s, e
                                     rows between unbounded preceding and 1 preceding)
              then 0 else 1 end as new_group
    from avail_raw
),
avail_grouped as (
  select operator_id, s, e,
         sum(new_group) over (partition by operator_id order by s, e) as grp
    from avail_marked
),
avail as (
  select operator_id, min(s) as s, max(e) as e
    from avail_grouped group by operator_id, grp
),
-- Handling: case creation → this operator's answer, clipped to their availability.
handling as (
  select m.sender_id as operator_id, greatest(c.created_at, p_from) as s,
         least(m.created_at, p_to) as e
    from public.cases c
    join public.messages m on m.id = c.answer_message_id
   where c.source = 'mcp_voice' and m.created_at > p_from and c.created_at < p_to
),
handled as (
  select coalesce(sum(extract(epoch from (least(h.e, a.e) - greatest(h.s, a.s)))), 0) as seconds
    from handling h
    join avail a on a.operator_id = h.operator_id and h.s < a.e and a.s < h.e
),
available as (
  select coalesce(sum(extract(epoch from (e - s))), 0) as seconds from avail
),
figures as (
  select
    (select count(*) from cases_in) as cases,
    (select count(*) from finished) as finished,
    (select count(*) from finished where last_status = 'answered') as answered,
    (select count(*) from finished where last_status in ('timed_out', 'expired')) as timed_out,
    (select avg(response_s) from answered) as avg_response_s,
    (select percentile_cont(0.5) within group (order by response_s) from answered) as p50_s,
    (select percentile_cont(0.9) within group (order by response_s) from answered) as p90_s,
    (select percentile_cont(0.99) within group (order by response_s) from answered) as p99_s,
    (select seconds from handled) as handled_s,
    (select seconds from available) as available_s
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to),
  'cases', cases, 'finished', finished, 'answered', answered, 'timed_out', timed_out,
  'avg_response_s', jsonb_build_object('value', round(avg_response_s::numeric, 3),
     'p50', round(p50_s::numeric, 3), 'p90', round(p90_s::numeric, 3),
     'p99', round(p99_s::numeric, 3), 'target', '< 30',
     'met', coalesce(avg_response_s < 30, false)),
  'success_rate', jsonb_build_object(
     'value', round(answered::numeric / nullif(finished, 0), 4), 'target', '> 0.95',
     'met', coalesce(answered::numeric / nullif(finished, 0) > 0.95, false)),
  'timeout_rate', jsonb_build_object(
     'value', round(timed_out::numeric / nullif(finished, 0), 4), 'target', '< 0.05',
     'met', coalesce(timed_out::numeric / nullif(finished, 0) < 0.05, false)),
  'operator_utilisation', jsonb_build_object(
     'value', round((handled_s / nullif(available_s, 0))::numeric, 4),
     'handled_s', round(handled_s::numeric, 3), 'available_s', round(available_s::numeric, 3),
     'target', '> 0.70',
     'met', coalesce(handled_s / nullif(available_s, 0) > 0.70, false)))
from figures
$$;
revoke all on function public.hitl_success_metrics(timestamptz, timestamptz) from public, anon, authenticated;
grant execute on function public.hitl_success_metrics(timestamptz, timestamptz) to service_role;
