-- MCP tasks (hil_tasks): closed to anon/authenticated, readable only by the owning key, a poll
-- sees a committed answer before the creating relay records it, cancel closes the task's
-- waiting session and leaves the case open, a cancelled task stays cancelled, a task whose
-- operator asked back (input_required) can be cancelled, expiry hides it.
begin;
select plan(23);

select ok((select relrowsecurity from pg_class where oid = 'public.hil_tasks'::regclass),
  'hil_tasks has row-level security');
select ok(not has_table_privilege('anon', 'public.hil_tasks', 'select')
          and not has_table_privilege('authenticated', 'public.hil_tasks', 'select')
          and not has_table_privilege('authenticated', 'public.hil_tasks', 'insert'),
  'anon and authenticated have no table privileges');
select ok(not has_function_privilege('authenticated', 'public.hitl_task_get(text, text)', 'execute')
          and not has_function_privilege('anon', 'public.hitl_task_create(jsonb)', 'execute')
          and not has_function_privilege('authenticated',
                'public.hitl_task_cancel(text, text)', 'execute'),
  'anon and authenticated may not call the task functions');
select ok(has_function_privilege('service_role', 'public.hitl_task_get(text, text)', 'execute'),
  'the relay (service_role) may');

create temp table k as select repeat('a', 64) as mine, repeat('b', 64) as other;
create temp table c as select public.hitl_open_case(jsonb_build_object(
  'question', 'Refund?', 'mcp_session_id', 'm', 'retell_call_id', 'task-1', 'retell_agent_id', 'x',
  'timeout_seconds', 60)) as opened;
create temp table t as select public.hitl_task_create(jsonb_build_object(
  'id', repeat('t', 43), 'owner', (select mine from k),
  'case_id', (select opened ->> 'case_id' from c), 'tool', 'ask_human', 'era', '2025-11-25',
  'timeout_seconds', 60, 'ttl_ms', 600000, 'poll_interval_ms', 1000, 'result', null)) as task;

select is((select task ->> 'status' from t), 'working', 'a task starts working');
select is((select task -> 'result' from t), 'null'::jsonb, 'with no result (SQL null, not JSON null)');
select is(public.hitl_task_get(repeat('t', 43), (select other from k)), null,
  'another key does not see it');
select is(public.hitl_task_get(repeat('t', 43), (select mine from k)) -> 'reply' -> 'answer',
  'null'::jsonb, 'no answer yet');

insert into public.messages (case_id, sender_type, sender_id, content)
values ((select (opened ->> 'case_id')::uuid from c), 'human', gen_random_uuid(), 'Yes.');
select is(public.hitl_task_get(repeat('t', 43), (select mine from k)) -> 'reply' -> 'answer' ->> 'content',
  'Yes.', 'a poll sees the committed answer before the relay records it');
select is((public.hitl_task_cancel(repeat('t', 43), (select mine from k)) ->> 'terminal')::boolean,
  true, 'an answered task cannot be cancelled (it is terminal)');

select is(public.hitl_task_finish(repeat('t', 43), 'completed', null,
  '{"content": [], "structuredContent": {"status": "answered"}}'::jsonb, null) ->> 'status',
  'completed', 'the relay records the result');
select is(public.hitl_task_get(repeat('t', 43), (select mine from k)) -> 'reply', 'null'::jsonb,
  'a finished task is one read of its row, no case lookup');

-- cancel: a second task on a new case
create temp table c2 as select public.hitl_open_case(jsonb_build_object(
  'question', 'Discount?', 'mcp_session_id', 'm', 'retell_call_id', 'task-2', 'retell_agent_id', 'x',
  'timeout_seconds', 60)) as opened;
select public.hitl_task_create(jsonb_build_object(
  'id', repeat('u', 43), 'owner', (select mine from k),
  'case_id', (select opened ->> 'case_id' from c2), 'tool', 'ask_human', 'era', '2025-11-25',
  'timeout_seconds', 60, 'ttl_ms', 600000, 'poll_interval_ms', 1000));
select is(public.hitl_task_cancel(repeat('u', 43), (select other from k)), null,
  'another key cannot cancel it');
select is(public.hitl_task_cancel(repeat('u', 43), (select mine from k)) -> 'task' ->> 'status',
  'cancelled', 'the owner cancels it');
select is((select status from public.hil_sessions where id = (select (opened ->> 'session_id')::uuid from c2)),
  'cancelled', 'its waiting session closes cancelled');
select is((select status from public.cases where id = (select (opened ->> 'case_id')::uuid from c2)),
  'open', 'the case stays open for operators');
select is(public.hitl_task_finish(repeat('u', 43), 'completed', null, '{}'::jsonb, null) ->> 'status',
  'cancelled', 'a cancelled task stays cancelled');
select is((public.hitl_task_cancel(repeat('u', 43), (select mine from k)) ->> 'terminal')::boolean,
  true, 'cancelling it again: terminal');

-- input_required (the operator asked back) may move to cancelled (both eras' lifecycles)
create temp table c3 as select public.hitl_open_case(jsonb_build_object(
  'question', 'Ship today?', 'mcp_session_id', 'm', 'retell_call_id', 'task-3', 'retell_agent_id', 'x',
  'timeout_seconds', 60)) as opened;
select public.hitl_task_create(jsonb_build_object(
  'id', repeat('v', 43), 'owner', (select mine from k),
  'case_id', (select opened ->> 'case_id' from c3), 'tool', 'ask_human', 'era', '2025-11-25',
  'timeout_seconds', 60, 'ttl_ms', 600000, 'poll_interval_ms', 1000));
insert into public.messages (case_id, sender_type, sender_id, content, kind)
values ((select (opened ->> 'case_id')::uuid from c3), 'human', gen_random_uuid(), 'Which order?',
        'clarification');
select is(public.hitl_task_get(repeat('v', 43), (select mine from k)) -> 'reply' -> 'clarification' ->> 'content',
  'Which order?', 'a poll sees the operator''s question');
select is((public.hitl_task_cancel(repeat('v', 43), (select mine from k)) ->> 'terminal')::boolean,
  false, 'a task waiting for the caller''s reply is not terminal');
select is(public.hitl_task_get(repeat('v', 43), (select mine from k)) ->> 'status',
  'cancelled', 'it is cancelled');

update public.hil_tasks set expires_at = now() - interval '1 second' where id = repeat('u', 43);
select is(public.hitl_task_get(repeat('u', 43), (select mine from k)), null,
  'an expired task is gone for polls');
select cmp_ok(public.hitl_tasks_purge(), '>=', 1, 'and the purge deletes it');

select * from finish();
rollback;
