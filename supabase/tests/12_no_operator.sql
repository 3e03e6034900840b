-- hitl_open_case_no_operator: with nobody on duty the question is recorded all the same (the
-- case with everything the agent sent, open in the queue) and its session closed as
-- `no_operator`; a later answer is found by hitl_answer as after a timeout.
begin;
select plan(19);

create function pg_temp.req(p_extra jsonb default '{}') returns jsonb language sql as $$
  select jsonb_build_object(
    'case_id', '22222222-2222-2222-2222-222222222222',
    'question', 'Can I get a refund on order 4411?', 'context', 'order 4411, paid by card',
    'mcp_session_id', 'mcp-9', 'retell_call_id', 'call-9', 'retell_agent_id', 'agent-9',
    'caller_info', jsonb_build_object('name', 'Grace', 'phone', '+15550100'), 'priority', 2,
    'urgency', 'low',
    'conversation_history', jsonb_build_array(jsonb_build_object('role', 'caller', 'content', 'hello')),
    'timeout_seconds', 30) || p_extra
$$;

create temp table first as select public.hitl_open_case_no_operator(pg_temp.req()) as r;

select is((select r ->> 'case_id' from first), '22222222-2222-2222-2222-222222222222',
  'the case gets the id the relay made');
select is((select r ->> 'status' from first), 'no_operator', 'the result says no_operator');
select is((select (r ->> 'existed')::boolean from first), false, 'a first call records a new case');
select is((select status from public.cases where id = '22222222-2222-2222-2222-222222222222'), 'open',
  'the case is open: it is in the operators'' queue');
select is((select description from public.cases where id = '22222222-2222-2222-2222-222222222222'),
  'Can I get a refund on order 4411?', 'the question is recorded');
select is((select metadata - 'deadline_at' - 'thread' from public.cases
            where id = '22222222-2222-2222-2222-222222222222'),
  jsonb_build_object('context', 'order 4411, paid by card', 'mcp_session_id', 'mcp-9',
    'retell_call_id', 'call-9', 'retell_agent_id', 'agent-9',
    'caller_info', jsonb_build_object('name', 'Grace', 'phone', '+15550100'),
    'conversation_history', jsonb_build_array(jsonb_build_object('role', 'caller', 'content', 'hello')),
    'response_timeout', 30, 'callback_url', null),
  'everything the agent sent is in the case');
select is((select priority || '/' || urgency from public.cases
            where id = '22222222-2222-2222-2222-222222222222'), '2/low', 'priority and urgency kept');
select is((select status from public.hil_sessions where case_id = '22222222-2222-2222-2222-222222222222'),
  'no_operator', 'the session is closed as no_operator');
select isnt((select closed_at from public.hil_sessions
              where case_id = '22222222-2222-2222-2222-222222222222'), null, 'with a closing time');
select is((select array_agg(outcome order by id) from public.hil_audit
            where case_id = '22222222-2222-2222-2222-222222222222'),
  array['opened', 'no_operator'], 'the audit records the opening and the no_operator close');

-- a retry with still nobody on duty: the same case, nothing new
create temp table again as select public.hitl_open_case_no_operator(pg_temp.req(
  jsonb_build_object('case_id', '22222222-2222-2222-2222-999999999999'))) as r;
select is((select r ->> 'case_id' from again), '22222222-2222-2222-2222-222222222222',
  'a retried call names the same case');
select is((select r ->> 'status' from again), 'no_operator', 'and is recorded as no_operator again');
select is((select count(*)::int from public.cases where metadata ->> 'retell_call_id' = 'call-9'), 1,
  'one case, not two');
select is((select count(*)::int from public.hil_sessions where retell_call_id = 'call-9'), 1,
  'one session, not two');

-- an operator answers later: hitl_answer finds it, as after a timeout
insert into public.messages (case_id, sender_type, sender_id, content, kind) values
  ('22222222-2222-2222-2222-222222222222', 'human', 'cccccccc-0000-0000-0000-000000000009',
   'Yes, refund approved.', 'answer');
select is(public.hitl_answer('22222222-2222-2222-2222-222222222222') ->> 'content',
  'Yes, refund approved.', 'the later answer is the case''s answer');
create temp table answered as select public.hitl_open_case_no_operator(pg_temp.req()) as r;
select is((select r ->> 'status' from answered), 'waiting',
  'a retry after the answer is not closed as no_operator (the relay reads the answer)');

-- a session another relay is waiting on is left waiting
select public.hitl_open_case(pg_temp.req(jsonb_build_object(
  'case_id', '33333333-3333-3333-3333-333333333333', 'retell_call_id', 'call-10')));
create temp table waiting as select public.hitl_open_case_no_operator(pg_temp.req(jsonb_build_object(
  'case_id', '33333333-3333-3333-3333-444444444444', 'retell_call_id', 'call-10'))) as r;
select is((select r ->> 'status' from waiting), 'waiting',
  'an identical call another relay waits on stays waiting');

-- hitl_case_status tells an unknown case from one without an answer
select is(public.hitl_case_status('33333333-3333-3333-3333-333333333333'), 'open', 'a known case');
select is(public.hitl_case_status('00000000-0000-0000-0000-00000000dead'), null, 'an unknown case');

select * from finish();
rollback;
