-- Dashboard figures over every session: invocations, outcomes and response times
-- (case opened → first human answer). security_invoker: RLS of the reader applies.
create or replace view public.hitl_stats with (security_invoker = true) as
with s as (
  select s.status,
         extract(epoch from (c.answered_at - s.created_at)) * 1000.0 as response_ms
    from public.hil_sessions s
    join public.cases c on c.id = s.case_id
)
select
  count(*)::bigint as invocations,
  count(*) filter (where status = 'answered')::bigint as answered,
  count(*) filter (where status = 'timed_out')::bigint as timed_out,
  count(*) filter (where status = 'expired')::bigint as expired,
  count(*) filter (where status = 'waiting')::bigint as waiting,
  count(*) filter (where status in ('failed', 'cancelled'))::bigint as failed_or_cancelled,
  round(avg(response_ms) filter (where status = 'answered')::numeric, 1) as avg_response_ms,
  round((percentile_cont(0.5) within group (order by response_ms)
         filter (where status = 'answered'))::numeric, 1) as p50_response_ms,
  round((percentile_cont(0.9) within group (order by response_ms)
         filter (where status = 'answered'))::numeric, 1) as p90_response_ms,
  round((percentile_cont(0.99) within group (order by response_ms)
         filter (where status = 'answered'))::numeric, 1) as p99_response_ms,
  round(count(*) filter (where status = 'answered')::numeric
        / nullif(count(*) filter (where status <> 'waiting'), 0), 4) as success_rate,
  round(count(*) filter (where status in ('timed_out', 'expired'))::numeric
        / nullif(count(*) filter (where status <> 'waiting'), 0), 4) as timeout_rate
from s;

revoke all on public.hitl_stats from anon, authenticated;
grant select on public.hitl_stats to service_role;
