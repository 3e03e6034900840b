-- Operator utilisation counts busy time once: an operator with several cases open at once is
-- busy for the wall-clock time, not for the sum of the cases' times, so utilisation
-- never exceeds 1; different operators' busy times still add up.
begin;
select plan(6);

insert into public.operator_activity (operator_id, started_at, last_seen_at) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '2026-01-01 10:00Z', '2026-01-01 10:01Z'),  -- 60 s
  ('bbbbbbbb-0000-0000-0000-000000000000', '2026-01-01 10:00Z', '2026-01-01 10:01Z');  -- 60 s

-- A: three cases open at once, 10:00:00-10:00:30, 10:00:10-10:00:40, 10:00:20-10:00:50 → busy
-- 10:00:00-10:00:50 = 50 s (the sum would be 90 s); B: one case 10:00:00-10:00:20 = 20 s.
insert into public.cases (id, source, status, priority, urgency, description, created_at, metadata) values
  ('20000000-0000-0000-0000-000000000001', 'mcp_voice', 'open', 3, 'medium', 'q1', '2026-01-01 10:00:00Z', '{}'),
  ('20000000-0000-0000-0000-000000000002', 'mcp_voice', 'open', 3, 'medium', 'q2', '2026-01-01 10:00:10Z', '{}'),
  ('20000000-0000-0000-0000-000000000003', 'mcp_voice', 'open', 3, 'medium', 'q3', '2026-01-01 10:00:20Z', '{}'),
  ('20000000-0000-0000-0000-000000000004', 'mcp_voice', 'open', 3, 'medium', 'q4', '2026-01-01 10:00:00Z', '{}');
insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key, status, created_at, expires_at)
select 's', 'c' || n, ('20000000-0000-0000-0000-00000000000' || n)::uuid, 'k' || n, 'answered',
       c.created_at, c.created_at + interval '1 minute'
  from generate_series(1, 4) n
  join public.cases c on c.id = ('20000000-0000-0000-0000-00000000000' || n)::uuid;
insert into public.messages (case_id, sender_type, sender_id, content, created_at) values
  ('20000000-0000-0000-0000-000000000001', 'human', 'aaaaaaaa-0000-0000-0000-000000000000', 'a1', '2026-01-01 10:00:30Z'),
  ('20000000-0000-0000-0000-000000000002', 'human', 'aaaaaaaa-0000-0000-0000-000000000000', 'a2', '2026-01-01 10:00:40Z'),
  ('20000000-0000-0000-0000-000000000003', 'human', 'aaaaaaaa-0000-0000-0000-000000000000', 'a3', '2026-01-01 10:00:50Z'),
  ('20000000-0000-0000-0000-000000000004', 'human', 'bbbbbbbb-0000-0000-0000-000000000000', 'a4', '2026-01-01 10:00:20Z');
update public.cases c set answered_at = m.created_at
  from public.messages m where m.id = c.answer_message_id;

create temp table m as
  select public.hitl_success_metrics('2026-01-01 09:00Z', '2026-01-01 12:00Z') -> 'operator_utilisation' as j;

select is((select (j ->> 'handled_s')::numeric from m), 70.000,
          'overlapping cases of one operator count once (50 s), operators add up (+ 20 s)');
select is((select (j ->> 'available_s')::numeric from m), 120.000, 'two operators, 60 s each');
select is((select (j ->> 'value')::numeric from m), 0.5833, 'utilisation is 70 / 120');

-- One operator, always busy with several cases: utilisation is 1, never more.
create temp table busy as
  select public.hitl_success_metrics('2026-01-01 10:00:00Z', '2026-01-01 10:00:50Z') -> 'operator_utilisation' as j;
select is((select (j ->> 'handled_s')::numeric from busy), 50.000 + 20.000, 'clipped to the window');
select ok((select (j ->> 'value')::numeric <= 1 from busy), 'utilisation never exceeds 1');

-- Handling outside the operator's availability does not count.
update public.operator_activity set last_seen_at = '2026-01-01 10:00:15Z'
 where operator_id = 'aaaaaaaa-0000-0000-0000-000000000000';
select is((select (public.hitl_success_metrics('2026-01-01 09:00Z', '2026-01-01 12:00Z')
                   -> 'operator_utilisation' ->> 'handled_s')::numeric), 15.000 + 20.000,
          'busy time is clipped to availability');

select * from finish();
rollback;
