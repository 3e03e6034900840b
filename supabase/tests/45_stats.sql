-- The hitl_stats view matches a hand-built fixture exactly: invocations, outcomes, response-time
-- distribution (case opened -> answered) and the success and timeout rates of finished sessions.
begin;
select plan(8);

-- four answered sessions (10, 20, 30, 40 s), one timed out, one expired, one failed, one waiting
insert into public.cases (id, source, status, description, created_at, answered_at)
select ('00000000-0000-0000-0000-00000000000' || n)::uuid, 'mcp_voice',
       case when n <= 4 then 'answered' else 'open' end, 'q' || n,
       '2026-01-01 10:00Z'::timestamptz,
       case when n <= 4 then '2026-01-01 10:00Z'::timestamptz + make_interval(secs => 10 * n) end
  from generate_series(1, 8) n;
insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key, status, created_at, expires_at)
select 'm', 'c', ('00000000-0000-0000-0000-00000000000' || n)::uuid, 'k' || n,
       (array['answered', 'answered', 'answered', 'answered', 'timed_out', 'expired', 'failed', 'waiting'])[n],
       '2026-01-01 10:00Z', '2026-01-01 10:01Z'
  from generate_series(1, 8) n;

select results_eq(
  $$select invocations, answered, timed_out, expired, waiting, failed_or_cancelled from public.hitl_stats$$,
  $$values (8::bigint, 4::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint)$$,
  'every session is an invocation, counted by outcome');
select is((select avg_response_ms from public.hitl_stats), 25000.0, 'average response is 25 s');
select is((select p50_response_ms from public.hitl_stats), 25000.0, 'median response is 25 s');
select is((select p90_response_ms from public.hitl_stats), 37000.0, 'p90 interpolates to 37 s');
select is((select p99_response_ms from public.hitl_stats), 39700.0, 'p99 interpolates to 39.7 s');
select is((select success_rate from public.hitl_stats), 0.5714, 'success is answered of finished (4 of 7)');
select is((select timeout_rate from public.hitl_stats), 0.2857,
  'timeout rate counts timed out and expired of finished (2 of 7)');

delete from public.hil_sessions;
select results_eq(
  $$select invocations, avg_response_ms, success_rate, timeout_rate from public.hitl_stats$$,
  $$values (0::bigint, null::numeric, null::numeric, null::numeric)$$,
  'with no sessions the figures are zero and null, not an error');

select * from finish();
rollback;
