-- The plan's success metrics computed by SQL match a hand-built fixture exactly, including
-- utilisation with overlapping availability intervals of one operator.
begin;
select plan(14);

insert into public.operator_activity (operator_id, started_at, last_seen_at) values
  -- operator A: two overlapping tabs 10:00-11:00 and 10:30-11:30 → one 5,400 s interval
  ('aaaaaaaa-0000-0000-0000-000000000000', '2026-01-01 10:00Z', '2026-01-01 11:00Z'),
  ('aaaaaaaa-0000-0000-0000-000000000000', '2026-01-01 10:30Z', '2026-01-01 11:30Z'),
  -- operator B: 10:00-10:10 → 600 s
  ('bbbbbbbb-0000-0000-0000-000000000000', '2026-01-01 10:00Z', '2026-01-01 10:10Z'),
  -- operator C: entirely outside the window
  ('cccccccc-0000-0000-0000-000000000000', '2026-01-02 10:00Z', '2026-01-02 11:00Z');

insert into public.cases (id, source, status, priority, urgency, description, created_at, metadata) values
  ('10000000-0000-0000-0000-000000000001', 'mcp_voice', 'open', 3, 'medium', 'q1', '2026-01-01 10:05Z', '{}'),
  ('10000000-0000-0000-0000-000000000002', 'mcp_voice', 'open', 3, 'medium', 'q2', '2026-01-01 10:06Z', '{}'),
  ('10000000-0000-0000-0000-000000000003', 'mcp_voice', 'open', 3, 'medium', 'q3', '2026-01-01 10:07Z', '{}'),
  ('10000000-0000-0000-0000-000000000004', 'mcp_voice', 'open', 3, 'medium', 'q4', '2026-01-01 10:08Z', '{}');
insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key, status, created_at, expires_at) values
  ('s', 'c1', '10000000-0000-0000-0000-000000000001', 'k1', 'answered',  '2026-01-01 10:05Z', '2026-01-01 10:06Z'),
  ('s', 'c2', '10000000-0000-0000-0000-000000000002', 'k2', 'timed_out', '2026-01-01 10:06Z', '2026-01-01 10:07Z'),
  ('s', 'c3', '10000000-0000-0000-0000-000000000003', 'k3', 'answered',  '2026-01-01 10:07Z', '2026-01-01 10:08Z'),
  ('s', 'c4', '10000000-0000-0000-0000-000000000004', 'k4', 'waiting',   '2026-01-01 10:08Z', '2026-01-01 10:09Z');
insert into public.messages (case_id, sender_type, sender_id, content, created_at) values
  ('10000000-0000-0000-0000-000000000001', 'human', 'aaaaaaaa-0000-0000-0000-000000000000', 'a1', '2026-01-01 10:05:20Z'),
  ('10000000-0000-0000-0000-000000000003', 'human', 'bbbbbbbb-0000-0000-0000-000000000000', 'a3', '2026-01-01 10:07:40Z');
-- The trigger stamps answered_at with the insert time; the fixture fixes it to the message time.
update public.cases c set answered_at = m.created_at
  from public.messages m where m.id = c.answer_message_id;

create temp table m as
  select public.hitl_success_metrics('2026-01-01 09:00Z', '2026-01-01 12:00Z') as j;

select is((select (j ->> 'cases')::int from m), 4, 'every relay case in the window is counted');
select is((select (j ->> 'finished')::int from m), 3, 'a case still waiting is not finished');
select is((select (j ->> 'answered')::int from m), 2, 'two cases answered');
select is((select (j ->> 'timed_out')::int from m), 1, 'one case timed out');
select is((select (j -> 'avg_response_s' ->> 'value')::numeric from m), 30.000, 'average response (20 s and 40 s) is 30 s');
select is((select (j -> 'avg_response_s' ->> 'p50')::numeric from m), 30.000, 'median response is 30 s');
select is((select (j -> 'avg_response_s' ->> 'met')::boolean from m), false, '30 s is not under the 30 s target');
select is((select (j -> 'success_rate' ->> 'value')::numeric from m), 0.6667, 'success rate is 2 of 3');
select is((select (j -> 'timeout_rate' ->> 'value')::numeric from m), 0.3333, 'timeout rate is 1 of 3');
select is((select (j -> 'operator_utilisation' ->> 'available_s')::numeric from m), 6000.000,
          'overlapping availability of one operator counts once (5,400 s + 600 s)');
select is((select (j -> 'operator_utilisation' ->> 'handled_s')::numeric from m), 60.000,
          'handling time is creation to answer (20 s + 40 s)');
select is((select (j -> 'operator_utilisation' ->> 'value')::numeric from m), 0.0100, 'utilisation is 60 / 6000');

-- A narrower window clips availability and handling to the window.
select is((select (public.hitl_success_metrics('2026-01-01 10:05:10Z', '2026-01-01 10:10Z')
                   -> 'operator_utilisation' ->> 'handled_s')::numeric), 40.000 + 10.000,
          'handling is clipped to the window start');
select is((select (public.hitl_success_metrics('2026-01-03 00:00Z', '2026-01-04 00:00Z') ->> 'cases')::int), 0,
          'an empty window reports zero cases');

select * from finish();
rollback;
