-- Claims (one holder, under RLS, stamped and broadcast), claim expiry (time and presence),
-- routing (skills and order), one-tap options, and escalation (hitl_escalate).
begin;
select plan(41);

create function pg_temp.state(p_sql text) returns text language plpgsql as $$
begin
  execute p_sql;
  return 'ok';
exception when others then
  return sqlstate;
end;
$$;
create function pg_temp.changed(p_sql text) returns integer language plpgsql as $$
declare n integer;
begin
  execute p_sql;
  get diagnostics n = row_count;
  return n;
exception when insufficient_privilege then
  return 0;
end;
$$;
create function pg_temp.as_operator(p_uid text, p_skills jsonb default '[]') returns void
language plpgsql as $$
begin
  perform set_config('request.jwt.claims', jsonb_build_object(
    'sub', p_uid, 'role', 'authenticated',
    'app_metadata', jsonb_build_object('hitl_role', 'operator', 'hitl_skills', p_skills))::text, true);
  perform set_config('request.jwt.claim.sub', p_uid, true);
  set local role authenticated;
end;
$$;
create temp table rt_mark (id uuid primary key);
insert into rt_mark select id from realtime.messages;
create temp view rt as
  select * from realtime.messages m where not exists (select 1 from rt_mark k where k.id = m.id);
grant select on rt, rt_mark to authenticated;

-- fixture: three relay cases, two operators present (heartbeat), one away
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'c1000000-0000-0000-0000-000000000001', 'question', 'Refund 30 euros?',
  'mcp_session_id', 'm', 'retell_call_id', 'call-1', 'retell_agent_id', 'a', 'priority', 3,
  'timeout_seconds', 60, 'options', jsonb_build_array('approve', 'deny', ' approve up to 50 euros ')));
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'c1000000-0000-0000-0000-000000000002', 'question', 'Waive the fee?',
  'mcp_session_id', 'm', 'retell_call_id', 'call-2', 'retell_agent_id', 'a', 'priority', 3,
  'timeout_seconds', 30));
insert into public.hil_agent_skills (agent_id, skills) values ('billing-agent', '{billing}');
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'c1000000-0000-0000-0000-000000000003', 'question', 'Change the IBAN?',
  'mcp_session_id', 'm', 'retell_call_id', 'call-3', 'retell_agent_id', 'billing-agent',
  'priority', 4, 'timeout_seconds', 45, 'skills', jsonb_build_array('German')));
insert into public.operator_activity (operator_id) values
  ('0b000000-0000-0000-0000-000000000001'), ('0b000000-0000-0000-0000-000000000002');

-- options ----------------------------------------------------------------------------------------
select is((select options from public.cases where id = 'c1000000-0000-0000-0000-000000000001'),
  '["approve", "deny", "approve up to 50 euros"]'::jsonb, 'the options are stored with the case, trimmed');
select is((select skills from public.cases where id = 'c1000000-0000-0000-0000-000000000003'),
  '{billing,german}'::text[], 'skills come from the arguments and the agent id''s configuration');
select throws_ok($$select public.hitl_open_case(jsonb_build_object('question', 'q', 'mcp_session_id', 'm',
  'retell_call_id', 'x', 'retell_agent_id', 'a', 'options', jsonb_build_array('only one')))$$,
  'P0001', 'invalid options: must have 2 to 6 items', 'one option is too few');
select throws_ok($$select public.hitl_open_case(jsonb_build_object('question', 'q', 'mcp_session_id', 'm',
  'retell_call_id', 'x', 'retell_agent_id', 'a', 'options', jsonb_build_array('yes', 'YES')))$$,
  'P0001', 'invalid options: must not repeat an option', 'duplicates are refused');
select throws_ok($$select public.hitl_open_case(jsonb_build_object('question', 'q', 'mcp_session_id', 'm',
  'retell_call_id', 'x', 'retell_agent_id', 'a', 'options', jsonb_build_array('yes', repeat('n', 81))))$$,
  'P0001', 'invalid options: each must be at most 80 characters', 'a long option is refused');
select throws_ok($$select public.hitl_open_case(jsonb_build_object('question', 'q', 'mcp_session_id', 'm',
  'retell_call_id', 'x', 'retell_agent_id', 'a', 'options', jsonb_build_array('yes', ' ')))$$,
  'P0001', 'invalid options: each must be a non-empty string', 'a blank option is refused');

-- routing ----------------------------------------------------------------------------------------
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000001');
select results_eq($$select case_id from public.hitl_operator_queue()$$,
  $$values ('c1000000-0000-0000-0000-000000000002'::uuid), ('c1000000-0000-0000-0000-000000000001'::uuid)$$,
  'an operator without skills is offered the unskilled cases, nearest deadline first at equal priority');
reset role;
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000002', '["billing", "German"]');
select results_eq($$select case_id from public.hitl_operator_queue()$$,
  $$values ('c1000000-0000-0000-0000-000000000003'::uuid), ('c1000000-0000-0000-0000-000000000002'::uuid),
           ('c1000000-0000-0000-0000-000000000001'::uuid)$$,
  'an operator with the skills is offered the skilled case too, highest priority first');
reset role;

-- a caller who is gone: their case stays answerable but comes after every waiting caller
update public.hil_sessions set status = 'timed_out' where case_id = 'c1000000-0000-0000-0000-000000000003';
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000002', '["billing", "German"]');
select results_eq($$select case_id from public.hitl_operator_queue()$$,
  $$values ('c1000000-0000-0000-0000-000000000002'::uuid), ('c1000000-0000-0000-0000-000000000001'::uuid),
           ('c1000000-0000-0000-0000-000000000003'::uuid)$$,
  'a case whose caller is gone comes after the waiting callers, whatever its priority');
reset role;
update public.hil_sessions set status = 'waiting' where case_id = 'c1000000-0000-0000-0000-000000000003';

-- claims ----------------------------------------------------------------------------------------
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000001');
select is(pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000001'
  where id = 'c1000000-0000-0000-0000-000000000003'$$), 0, 'a case needing skills one lacks cannot be claimed');
select is(pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000001'
  where id = 'c1000000-0000-0000-0000-000000000001'$$), 1, 'an operator claims a case with one row update');
select is(pg_temp.state($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000002'
  where id = 'c1000000-0000-0000-0000-000000000002'$$), '42501', 'nobody claims for someone else');
select is(pg_temp.state($$update public.cases set priority = 5, claimed_by = '0b000000-0000-0000-0000-000000000001'
  where id = 'c1000000-0000-0000-0000-000000000002'$$), '42501', 'a claim cannot change anything else');
reset role;
select ok((select claimed_at = now() and claim_expires_at = now() + interval '120 seconds'
  from public.cases where id = 'c1000000-0000-0000-0000-000000000001'), 'the claim is stamped with the configured time');
select is((select count(*)::int from pg_temp.rt where event = 'claim'
  and payload ->> 'claimed_by' = '0b000000-0000-0000-0000-000000000001'
  and payload ->> 'case_id' = 'c1000000-0000-0000-0000-000000000001'), 2,
  'the claim is broadcast on its case topic and on operators');
select is((select actor from public.hil_audit where action = 'claim'), '0b000000-0000-0000-0000-000000000001',
  'the audit records who claimed');

select pg_temp.as_operator('0b000000-0000-0000-0000-000000000002', '["billing", "german"]');
select is(pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000002'
  where id = 'c1000000-0000-0000-0000-000000000001'$$), 0, 'a second operator cannot take a held claim');
select is(pg_temp.state($$insert into public.messages (case_id, sender_type, sender_id, content, kind)
  values ('c1000000-0000-0000-0000-000000000001', 'human', '0b000000-0000-0000-0000-000000000002', 'deny', 'answer')$$),
  'P0001', 'nor answer a case someone else holds');
select ok(not exists (select 1 from public.hitl_operator_queue() where case_id = 'c1000000-0000-0000-0000-000000000001'),
  'a case held by someone else is not offered');
reset role;

-- option answers ----------------------------------------------------------------------------------
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000001');
select is(pg_temp.state($$insert into public.messages (case_id, sender_type, sender_id, content, kind, option_index)
  values ('c1000000-0000-0000-0000-000000000001', 'human', '0b000000-0000-0000-0000-000000000001', '', 'answer', 3)$$),
  'P0001', 'an option index outside the case''s options is refused');
select is(pg_temp.state($$insert into public.messages (case_id, sender_type, sender_id, content, kind, option_index)
  values ('c1000000-0000-0000-0000-000000000001', 'human', '0b000000-0000-0000-0000-000000000001', 'yes', 'answer', 1)$$),
  'P0001', 'an option answer whose text is not the option''s is refused');
select is(pg_temp.state($$insert into public.messages (case_id, sender_type, sender_id, content, kind, option_index)
  values ('c1000000-0000-0000-0000-000000000002', 'human', '0b000000-0000-0000-0000-000000000001', '', 'answer', 0)$$),
  'P0001', 'a case without options takes no option answer');
select is(pg_temp.state($$insert into public.messages (case_id, sender_type, sender_id, content, kind, option_index)
  values ('c1000000-0000-0000-0000-000000000001', 'human', '0b000000-0000-0000-0000-000000000001', '', 'answer', 2)$$),
  'ok', 'the holder answers with one tap');
reset role;
select is(public.hitl_answer('c1000000-0000-0000-0000-000000000001') - 'message_id' - 'created_at',
  jsonb_build_object('case_id', 'c1000000-0000-0000-0000-000000000001', 'content', 'approve up to 50 euros',
    'kind', 'answer', 'sender_id', '0b000000-0000-0000-0000-000000000001', 'option_index', 2,
    'option', 'approve up to 50 euros'),
  'the answer carries the option''s index and text and who answered');
select is((select payload ->> 'option_index' || ':' || (payload ->> 'option') from pg_temp.rt
  where event = 'message' and (payload ->> 'is_answer')::boolean
    and payload ->> 'case_id' = 'c1000000-0000-0000-0000-000000000001'),
  '2:approve up to 50 euros', 'the message broadcast names the chosen option');
select is((select outcome || ':' || (detail ->> 'claimed_by') from public.hil_audit
  where action = 'answer' and actor = '0b000000-0000-0000-0000-000000000001'),
  'decided:0b000000-0000-0000-0000-000000000001', 'the audit records who answered, and their claim');

-- claim expiry ------------------------------------------------------------------------------------
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000001');
select is(pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000001'
  where id = 'c1000000-0000-0000-0000-000000000002'$$), 1, 'operator 1 claims the second case');
reset role;
update public.cases set claim_expires_at = now() - interval '1 second'
 where id = 'c1000000-0000-0000-0000-000000000002';
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000002');
select is(pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000002'
  where id = 'c1000000-0000-0000-0000-000000000002'$$), 1, 'a claim past its time is taken over');
reset role;
-- operator 2 stops heartbeating: their claim lapses without waiting for its time
update public.operator_activity set started_at = now() - interval '10 minutes', last_seen_at = now() - interval '2 minutes'
 where operator_id = '0b000000-0000-0000-0000-000000000002';
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000001');
select is((select claim_live from public.hitl_operator_queue() where case_id = 'c1000000-0000-0000-0000-000000000002'),
  false, 'a claim whose holder left presence (no heartbeat for 90 s) is not live');
select is(pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000001'
  where id = 'c1000000-0000-0000-0000-000000000002'$$), 1, 'and another operator takes it over');
select is(public.hitl_release_claims(), 1, 'going away releases one''s claims');
reset role;
select is((select claimed_by from public.cases where id = 'c1000000-0000-0000-0000-000000000002'), null,
  'the released case is unclaimed again');

-- escalation --------------------------------------------------------------------------------------
select is(public.hitl_escalate(), 0, 'nothing waited long enough yet');
update public.cases set created_at = now() - interval '13 seconds' where id = 'c1000000-0000-0000-0000-000000000002';
select is(public.hitl_escalate(), 1, 'an unclaimed case past its priority''s threshold (3: 10 s) is escalated');
select is((select priority || '/' || escalation_level from public.cases where id = 'c1000000-0000-0000-0000-000000000002'),
  '4/1', 'its priority is raised');
select is((select count(*)::int from pg_temp.rt where event = 'escalated' and topic = 'operators'), 1,
  'consoles are alerted on operators');
select is((select reason from public.hil_notifications where case_id = 'c1000000-0000-0000-0000-000000000002'),
  'unclaimed', 'a notification is queued');
-- claimed near the deadline
select pg_temp.as_operator('0b000000-0000-0000-0000-000000000001');
select pg_temp.changed($$update public.cases set claimed_by = '0b000000-0000-0000-0000-000000000001'
  where id = 'c1000000-0000-0000-0000-000000000002'$$);
reset role;
update public.hil_sessions set expires_at = now() + interval '5 seconds'
 where case_id = 'c1000000-0000-0000-0000-000000000002';
select is(public.hitl_escalate(), 1, 'a claimed case unanswered close to its deadline is escalated');
select is(public.hitl_escalate(), 0, 'each reason escalates a case once');
-- the holder stops heartbeating: the next round releases the claim, and says so
update public.operator_activity set started_at = now() - interval '10 minutes', last_seen_at = now() - interval '2 minutes'
 where operator_id = '0b000000-0000-0000-0000-000000000001';
select public.hitl_escalate();
select is((select claimed_by from public.cases where id = 'c1000000-0000-0000-0000-000000000002'), null,
  'an escalation round releases a claim whose holder left');
select is((select action || ':' || actor from public.hil_audit
            where case_id = 'c1000000-0000-0000-0000-000000000002' and action in ('claim', 'release')
            order by id desc limit 1),
  'release:0b000000-0000-0000-0000-000000000001', 'the release is audited (and broadcast by the same trigger)');

select * from finish();
rollback;
