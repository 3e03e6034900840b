-- Escalation ages an unclaimed case: escalated again each time it waits its new priority's
-- threshold, up to priority 5, with one notification; the low priorities' thresholds are 10 s.
begin;
select plan(9);

select is(public.hitl_setting('escalate_unclaimed_seconds', '{}'),
  '{"5": 5, "4": 8, "3": 10, "2": 10, "1": 10}'::jsonb, 'the default thresholds (seconds per priority)');

select public.hitl_open_case(jsonb_build_object(
  'case_id', 'c4000000-0000-0000-0000-000000000001', 'question', 'Move my appointment?',
  'mcp_session_id', 'm', 'retell_call_id', 'aging-1', 'retell_agent_id', 'a', 'priority', 1,
  'timeout_seconds', 60));
create function pg_temp.waited(p_seconds int) returns void language sql as $$
  update public.cases
     set created_at = created_at - make_interval(secs => p_seconds),
         escalated_at = escalated_at - make_interval(secs => p_seconds)
   where id = 'c4000000-0000-0000-0000-000000000001'
$$;
create function pg_temp.prio() returns text language sql as $$
  select priority || '/' || escalation_level from public.cases
   where id = 'c4000000-0000-0000-0000-000000000001'
$$;

select pg_temp.waited(9);
select public.hitl_escalate();
select is(pg_temp.prio(), '1/0', 'priority 1 unclaimed for 9 s: not yet');
select pg_temp.waited(2);
select public.hitl_escalate();
select is(pg_temp.prio(), '2/1', 'at 11 s it is escalated to 2');
select public.hitl_escalate();
select is(pg_temp.prio(), '2/1', 'not again until it has waited priority 2''s threshold since');
select pg_temp.waited(10);
select public.hitl_escalate();
select is(pg_temp.prio(), '3/2', 'still unclaimed 10 s later: 3');
select pg_temp.waited(10);
select public.hitl_escalate();
select pg_temp.waited(8);
select public.hitl_escalate();
select is(pg_temp.prio(), '5/4', 'then 4, then 5 (8 s at priority 4)');
select pg_temp.waited(60);
select public.hitl_escalate();
select is(pg_temp.prio(), '5/4', 'at 5 it stops');
select is((select count(*)::int from public.hil_notifications
            where case_id = 'c4000000-0000-0000-0000-000000000001'), 1,
  'one notification for the case (the repeats alert the consoles only)');
select is((select escalated_for from public.cases where id = 'c4000000-0000-0000-0000-000000000001'),
  '{unclaimed}'::text[], 'the reason is recorded once');

select * from finish();
rollback;
