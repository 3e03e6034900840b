-- "Cannot answer" is not success: a case whose last session was closed by a "cannot answer"
-- has its own count and rate, the response time is over real answers only, and the counts add
-- up to the finished cases.
begin;
select plan(11);

insert into public.operator_activity (operator_id, started_at, last_seen_at) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '2026-01-01 10:00Z', '2026-01-01 10:20Z');
insert into public.cases (id, source, status, priority, urgency, description, created_at, metadata) values
  ('20000000-0000-0000-0000-000000000001', 'mcp_voice', 'open', 3, 'medium', 'q1', '2026-01-01 10:05Z', '{}'),
  ('20000000-0000-0000-0000-000000000002', 'mcp_voice', 'open', 3, 'medium', 'q2', '2026-01-01 10:06Z', '{}'),
  ('20000000-0000-0000-0000-000000000003', 'mcp_voice', 'open', 3, 'medium', 'q3', '2026-01-01 10:07Z', '{}'),
  ('20000000-0000-0000-0000-000000000004', 'mcp_voice', 'open', 3, 'medium', 'q4', '2026-01-01 10:08Z', '{}'),
  ('20000000-0000-0000-0000-000000000005', 'mcp_voice', 'open', 3, 'medium', 'q5', '2026-01-01 10:09Z', '{}');
insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key, status, created_at, expires_at) values
  ('s', 'c1', '20000000-0000-0000-0000-000000000001', 'k1', 'answered',  '2026-01-01 10:05Z', '2026-01-01 10:06Z'),
  ('s', 'c2', '20000000-0000-0000-0000-000000000002', 'k2', 'answered',  '2026-01-01 10:06Z', '2026-01-01 10:07Z'),
  ('s', 'c3', '20000000-0000-0000-0000-000000000003', 'k3', 'timed_out', '2026-01-01 10:07Z', '2026-01-01 10:08Z'),
  ('s', 'c4', '20000000-0000-0000-0000-000000000004', 'k4', 'failed',    '2026-01-01 10:08Z', '2026-01-01 10:09Z'),
  ('s', 'c5', '20000000-0000-0000-0000-000000000005', 'k5', 'waiting',   '2026-01-01 10:09Z', '2026-01-01 10:10Z');
insert into public.messages (case_id, sender_type, sender_id, kind, content, created_at) values
  ('20000000-0000-0000-0000-000000000001', 'human', 'aaaaaaaa-0000-0000-0000-000000000000', 'answer', 'yes', '2026-01-01 10:05:20Z'),
  ('20000000-0000-0000-0000-000000000002', 'human', 'aaaaaaaa-0000-0000-0000-000000000000', 'cannot_answer', 'not mine to decide', '2026-01-01 10:06:10Z');
update public.cases c set answered_at = m.created_at
  from public.messages m where m.id = c.answer_message_id;

create temp table m as
  select public.hitl_success_metrics('2026-01-01 09:00Z', '2026-01-01 12:00Z') as j;

select is((select (j ->> 'finished')::int from m), 4, 'four cases finished (one still waiting)');
select is((select (j ->> 'answered')::int from m), 1, 'only the real answer counts as answered');
select is((select (j ->> 'cannot_answer')::int from m), 1,
          'the session closed by "cannot answer" is counted apart');
select is((select (j ->> 'timed_out')::int from m), 1, 'one timed out');
select is((select (j ->> 'other')::int from m), 1, 'a failed session is neither success nor timeout');
select is((select (j ->> 'answered')::int + (j ->> 'cannot_answer')::int + (j ->> 'timed_out')::int
                  + (j ->> 'other')::int from m),
          (select (j ->> 'finished')::int from m), 'the outcomes add up to the finished cases');
select is((select (j -> 'success_rate' ->> 'value')::numeric from m), 0.2500, 'success is 1 of 4');
select is((select (j -> 'cannot_answer_rate' ->> 'value')::numeric from m), 0.2500,
          '"cannot answer" is 1 of 4');
select is((select (j -> 'timeout_rate' ->> 'value')::numeric from m), 0.2500, 'timeouts are 1 of 4');
select is((select (j -> 'avg_response_s' ->> 'value')::numeric from m), 20.000,
          'the response time is over real answers only (20 s)');
select is((select (j -> 'operator_utilisation' ->> 'handled_s')::numeric from m), 30.000,
          'reading a case and saying "cannot answer" is still handling time (20 s + 10 s)');

select * from finish();
rollback;
