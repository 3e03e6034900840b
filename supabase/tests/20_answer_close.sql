-- hitl_answer returns the case's one answer (its first human answer / cannot_answer message),
-- hitl_close_session moves only a waiting session, once.
begin;
select plan(24);

create temp table opened as select public.hitl_open_case(jsonb_build_object(
  'case_id', 'aaaaaaaa-0000-0000-0000-000000000001', 'question', 'Refund allowed?',
  'mcp_session_id', 'm', 'retell_call_id', 'c', 'retell_agent_id', 'a', 'timeout_seconds', 30)) as r;
create temp table ids as select (r ->> 'case_id')::uuid as case_id, (r ->> 'session_id')::uuid as session_id
  from opened;

select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000001'), null, 'no message yet: no answer');
select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-00000000ffff'), null, 'an unknown case has no answer');

insert into public.messages (id, case_id, sender_type, content, kind, created_at) values
  ('bbbbbbbb-0000-0000-0000-000000000001', 'aaaaaaaa-0000-0000-0000-000000000001', 'ai', 'Let me check.', 'note', now()),
  ('bbbbbbbb-0000-0000-0000-000000000002', 'aaaaaaaa-0000-0000-0000-000000000001', 'system', 'Operator joined.', 'note', now());
select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000001'), null,
  'ai and system messages are not answers');

insert into public.messages (id, case_id, sender_type, sender_id, content, kind) values
  ('bbbbbbbb-0000-0000-0000-000000000003', 'aaaaaaaa-0000-0000-0000-000000000001', 'human',
   'cccccccc-0000-0000-0000-000000000001', 'Which order?', 'clarification');
select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000001'), null,
  'a clarification question from the operator is not the answer');
select is((select status from public.cases where id = 'aaaaaaaa-0000-0000-0000-000000000001'), 'open',
  'a clarification leaves the case open');

insert into public.messages (id, case_id, sender_type, sender_id, content, kind) values
  ('bbbbbbbb-0000-0000-0000-000000000004', 'aaaaaaaa-0000-0000-0000-000000000001', 'human',
   'cccccccc-0000-0000-0000-000000000001', 'Yes, within 30 days.', 'answer');
insert into public.messages (id, case_id, sender_type, sender_id, content, kind) values
  ('bbbbbbbb-0000-0000-0000-000000000005', 'aaaaaaaa-0000-0000-0000-000000000001', 'human',
   'cccccccc-0000-0000-0000-000000000002', 'No!', 'answer');

select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000001') - 'created_at',
  jsonb_build_object('message_id', 'bbbbbbbb-0000-0000-0000-000000000004',
                     'case_id', 'aaaaaaaa-0000-0000-0000-000000000001',
                     'content', 'Yes, within 30 days.', 'kind', 'answer',
                     'sender_id', 'cccccccc-0000-0000-0000-000000000001',
                     'option_index', null, 'option', null),
  'the first human answer is the answer, a later one is not');
select is((public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000001') ->> 'created_at')::timestamptz,
  (select created_at from public.messages where id = 'bbbbbbbb-0000-0000-0000-000000000004'),
  'the answer carries its message''s created_at');
select results_eq(
  $$select status, answer_message_id, answered_at from public.cases where id = 'aaaaaaaa-0000-0000-0000-000000000001'$$,
  $$values ('answered', 'bbbbbbbb-0000-0000-0000-000000000004'::uuid, now())$$,
  'the case is answered by that message');
select is((select array_agg((payload ->> 'is_answer')::boolean order by payload ->> 'id')
             from realtime.messages where event = 'message'),
  array[false, false, false, true, false],
  'only the deciding message is broadcast with is_answer');

-- cannot_answer decides the case too
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'aaaaaaaa-0000-0000-0000-000000000002', 'question', 'Unknowable?',
  'mcp_session_id', 'm', 'retell_call_id', 'c', 'retell_agent_id', 'a'));
insert into public.messages (case_id, sender_type, sender_id, content, kind) values
  ('aaaaaaaa-0000-0000-0000-000000000002', 'human', 'cccccccc-0000-0000-0000-000000000001', 'I cannot say.', 'cannot_answer');
select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000002') ->> 'kind', 'cannot_answer',
  'an operator''s "cannot answer" is the case''s answer, with its kind');
select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000002') ->> 'content', 'I cannot say.',
  'with the operator''s note');

-- an answer that arrives after the case expired is still the answer (get_human_answer later)
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'aaaaaaaa-0000-0000-0000-000000000003', 'question', 'Late?',
  'mcp_session_id', 'm', 'retell_call_id', 'c', 'retell_agent_id', 'a'));
update public.cases set status = 'expired' where id = 'aaaaaaaa-0000-0000-0000-000000000003';
insert into public.messages (case_id, sender_type, sender_id, content) values
  ('aaaaaaaa-0000-0000-0000-000000000003', 'human', 'cccccccc-0000-0000-0000-000000000001', 'Late yes.');
select is(public.hitl_answer('aaaaaaaa-0000-0000-0000-000000000003') ->> 'content', 'Late yes.',
  'a late answer is still readable');
select is((select status from public.cases where id = 'aaaaaaaa-0000-0000-0000-000000000003'), 'expired',
  'a late answer does not re-open an expired case''s status');

-- hitl_close_session ---------------------------------------------------------------------------------
select is(public.hitl_close_session((select session_id from ids), 'answered', '{"delivery_ms": 12}'),
  jsonb_build_object('session_id', (select session_id from ids), 'status', 'answered', 'changed', true),
  'closing a waiting session changes it');
select results_eq(
  $$select status, closed_at, metadata -> 'close' from public.hil_sessions where id = (select session_id from ids)$$,
  $$values ('answered', now(), '{"delivery_ms": 12}'::jsonb)$$,
  'the session records when and how it closed');
select is(public.hitl_close_session((select session_id from ids), 'timed_out'),
  jsonb_build_object('session_id', (select session_id from ids), 'status', 'answered', 'changed', false),
  'a closed session is not moved again and reports its status');
select is((select count(*)::int from public.hil_audit where action = 'close_session'), 1,
  'only the change is audited');
select is((select count(*)::int from realtime.messages where event = 'session'
            and payload ->> 'session_id' = (select session_id::text from ids)), 1,
  'only the change is broadcast');

select throws_ok(format($$select public.hitl_close_session(%L, 'done')$$, (select session_id from ids)),
  'P0001', 'invalid p_status: must be one of answered, needs_info, timed_out, expired, failed, cancelled',
  'an unknown status is refused by name');
select throws_ok($$select public.hitl_close_session('dddddddd-0000-0000-0000-000000000000', 'failed')$$,
  'P0001', 'invalid p_session_id: no such session', 'an unknown session is refused by name');
select throws_ok(format($$select public.hitl_close_session(%L, 'waiting')$$, (select session_id from ids)),
  'P0001', null, 'a session cannot be closed to waiting');

select is((select public.hitl_close_session(s.id, st) ->> 'status' from public.hil_sessions s,
                  (values ('needs_info')) v(st)
            where s.case_id = 'aaaaaaaa-0000-0000-0000-000000000002'),
  'needs_info', 'needs_info closes a session (the operator asked back)');

-- hil_audit is append-only
select throws_ok($$update public.hil_audit set actor = 'someone else'$$, '42501',
  'hil_audit is append-only', 'audit rows cannot be rewritten, even by the owner');
select lives_ok($$delete from public.hil_audit where at < now() - interval '1 year'$$,
  'old audit rows can still be purged');

select * from finish();
rollback;
