-- "Cannot answer" is not success.
--
-- The relay closes the session of a "cannot answer" as `answered` (the agent gets
-- `unclear_answer`), and 20261125002400 counted every answered session as a success: an operator
-- saying "I cannot decide this" raised the success rate. The case's deciding message tells them
-- apart: success now counts the cases whose last session was answered by a real answer, and the
-- cases closed by "cannot answer" are their own count and rate. The counts add up:
-- answered + cannot_answer + timed_out + other = finished (other: failed, cancelled, no
-- operator, a question back the caller never answered). The response time is over real answers
-- too. Utilisation is unchanged: an operator who read a case and said they cannot answer it was
-- busy with it. Same signature and grants as before.

create or replace function public.hitl_success_metrics(p_from timestamptz, p_to timestamptz)
returns jsonb
language sql stable security definer set search_path = public, pg_temp as $$
with cases_in as (
  select c.id, c.created_at, c.answered_at, c.answer_message_id,
         (select m.kind from public.messages m where m.id = c.answer_message_id) as answer_kind,
         (select s.status from public.hil_sessions s where s.case_id = c.id
           order by s.created_at desc, s.id desc limit 1) as last_status,
         (select min(s.created_at) from public.hil_sessions s where s.case_id = c.id) as asked_at
    from public.cases c
   where c.source = 'mcp_voice' and c.created_at >= p_from and c.created_at < p_to
),
finished as (
  select *,
         case when last_status = 'answered' and answer_kind = 'cannot_answer' then 'cannot_answer'
              when last_status = 'answered' then 'answered'
              when last_status in ('timed_out', 'expired') then 'timed_out'
              else 'other' end as outcome
    from cases_in where last_status <> 'waiting'
),
answered as (
  select extract(epoch from (answered_at - asked_at)) as response_s
    from finished where outcome = 'answered' and answered_at is not null
),
-- Availability and handling per operator, each clipped to the window and merged where its
-- intervals overlap (two tabs; several cases open at once), so busy time counts once.
spans as (
  select 'available'::text as kind, operator_id, greatest(started_at, p_from) as s,
         least(last_seen_at, p_to) as e
    from public.operator_activity
   where status = 'available' and last_seen_at > p_from and started_at < p_to
  union all
  -- Handling: case creation → this operator's answer.
  select 'handling', m.sender_id, greatest(c.created_at, p_from), least(m.created_at, p_to)
    from public.cases c
    join public.messages m on m.id = c.answer_message_id
   where c.source = 'mcp_voice' and m.sender_id is not null
     and m.created_at > p_from and c.created_at < p_to
),
spans_marked as (
  select kind, operator_id, s, e,
         case when s <= max(e) over (partition by kind, operator_id order by s, e
                                     rows between unbounded preceding and 1 preceding)
              then 0 else 1 end as new_group
    from spans
),
spans_grouped as (
  select kind, operator_id, s, e,
         sum(new_group) over (partition by kind, operator_id order by s, e) as grp
    from spans_marked
),
merged as (
  select kind, operator_id, min(s) as s, max(e) as e
    from spans_grouped group by kind, operator_id, grp
),
avail as (select operator_id, s, e from merged where kind = 'available'),
-- Time an operator had at least one case they answered open, while available.
handled as (
  select coalesce(sum(extract(epoch from (least(h.e, a.e) - greatest(h.s, a.s)))), 0) as seconds
    from merged h
    join avail a on a.operator_id = h.operator_id and h.s < a.e and a.s < h.e
   where h.kind = 'handling'
),
available as (
  select coalesce(sum(extract(epoch from (e - s))), 0) as seconds from avail
),
figures as (
  select
    (select count(*) from cases_in) as cases,
    (select count(*) from finished) as finished,
    (select count(*) from finished where outcome = 'answered') as answered,
    (select count(*) from finished where outcome = 'cannot_answer') as cannot_answer,
    (select count(*) from finished where outcome = 'timed_out') as timed_out,
    (select count(*) from finished where outcome = 'other') as other,
    (select avg(response_s) from answered) as avg_response_s,
    (select percentile_cont(0.5) within group (order by response_s) from answered) as p50_s,
    (select percentile_cont(0.9) within group (order by response_s) from answered) as p90_s,
    (select percentile_cont(0.99) within group (order by response_s) from answered) as p99_s,
    (select seconds from handled) as handled_s,
    (select seconds from available) as available_s
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to),
  'cases', cases, 'finished', finished, 'answered', answered, 'cannot_answer', cannot_answer,
  'timed_out', timed_out, 'other', other,
  'avg_response_s', jsonb_build_object('value', round(avg_response_s::numeric, 3),
     'p50', round(p50_s::numeric, 3), 'p90', round(p90_s::numeric, 3),
     'p99', round(p99_s::numeric, 3), 'target', '< 30',
     'met', coalesce(avg_response_s < 30, false)),
  'success_rate', jsonb_build_object(
     'value', round(answered::numeric / nullif(finished, 0), 4), 'target', '> 0.95',
     'met', coalesce(answered::numeric / nullif(finished, 0) > 0.95, false)),
  'cannot_answer_rate', jsonb_build_object(
     'value', round(cannot_answer::numeric / nullif(finished, 0), 4)),
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
