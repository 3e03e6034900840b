-- hitl_open_case: one case + one waiting session + audit, idempotent on call id + question hash,
-- every bad input a named error (P0001 'invalid <field>: <rule>', DETAIL field, HINT rule) that
-- writes nothing.
begin;
select plan(48);

-- The error a statement raises, as {sqlstate, message, detail, hint} (null when it succeeds).
create function pg_temp.err(p_sql text) returns jsonb language plpgsql as $$
declare
  v_state text; v_message text; v_detail text; v_hint text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v_state = returned_sqlstate, v_message = message_text,
                          v_detail = pg_exception_detail, v_hint = pg_exception_hint;
  return jsonb_build_object('sqlstate', v_state, 'message', v_message, 'detail', v_detail,
                            'hint', v_hint);
end;
$$;

create function pg_temp.req(p_extra jsonb default '{}') returns jsonb language sql as $$
  select jsonb_build_object(
    'case_id', '11111111-1111-1111-1111-111111111111',
    'question', 'Can we deliver on Saturday?', 'context', 'order 4411',
    'mcp_session_id', 'mcp-1', 'retell_call_id', 'call-1', 'retell_agent_id', 'agent-1',
    'caller_info', jsonb_build_object('name', 'Ada'), 'priority', 4, 'urgency', 'high',
    'conversation_history', jsonb_build_array(jsonb_build_object('role', 'caller', 'content', 'hi')),
    'timeout_seconds', 30, 'webhook_secret', 'whsec-do-not-leak',
    'callback_url', 'https://example.test/hook') || p_extra
$$;

create temp table first as select public.hitl_open_case(pg_temp.req()) as r;

-- a new case ----------------------------------------------------------------------------------
select is((select r ->> 'case_id' from first), '11111111-1111-1111-1111-111111111111',
  'the case gets the id the relay made');
select is((select (r ->> 'existed')::boolean from first), false, 'a first call opens a new case');
select is((select r ->> 'status' from first), 'waiting', 'the session starts waiting');
select is((select (r ->> 'expires_at')::timestamptz from first), now() + interval '30 seconds',
  'expires_at is the call''s deadline (now + timeout_seconds)');
select is((select array_agg(k order by k) from first, jsonb_object_keys(r) k),
  array['case_id', 'existed', 'expires_at', 'session_id', 'status'], 'the result has the contract''s keys');

select results_eq(
  $$select source, status, priority, urgency, title, description from public.cases$$,
  $$values ('mcp_voice', 'open', 4, 'high', 'Can we deliver on Saturday?', 'Can we deliver on Saturday?')$$,
  'the case row carries the question, priority and urgency');
select is((select expires_at from public.cases), now() + interval '1 hour',
  'a case stays answerable for an hour by default');
select is((select metadata ->> 'retell_call_id' from public.cases), 'call-1', 'metadata has the call id');
select is((select metadata -> 'caller_info' from public.cases), '{"name": "Ada"}'::jsonb,
  'metadata has the caller info');
select is((select (metadata ->> 'response_timeout')::int from public.cases), 30,
  'metadata has the response timeout');
select is((select jsonb_array_length(metadata -> 'conversation_history') from public.cases), 1,
  'metadata has the conversation history');
select is((select (metadata ->> 'deadline_at')::timestamptz from public.cases), now() + interval '30 seconds',
  'metadata has the deadline for the console''s countdown');
select ok((select not (metadata ? 'webhook_secret') and position('whsec' in cases::text) = 0 from public.cases),
  'the webhook secret is nowhere in the case row');
select is((select webhook_secret from public.hil_case_secrets), 'whsec-do-not-leak',
  'the webhook secret is kept in hil_case_secrets');
select results_eq(
  $$select mcp_session_id, retell_call_id, retell_agent_id, status, expires_at from public.hil_sessions$$,
  $$values ('mcp-1', 'call-1', 'agent-1', 'waiting', now() + interval '30 seconds')$$,
  'the waiting session records the MCP session, the call and the agent');
select is((select idempotency_key from public.hil_sessions),
  'call-1:' || encode(sha256(convert_to('Can we deliver on Saturday?', 'UTF8')), 'hex'),
  'the idempotency key is the call id and the question''s sha256');
select results_eq($$select actor, action, outcome from public.hil_audit$$,
  $$values ('relay', 'open_case', 'opened')$$, 'opening is audited');

-- retries ---------------------------------------------------------------------------------------
create temp table retry as select public.hitl_open_case(pg_temp.req(
  '{"case_id": "22222222-2222-2222-2222-222222222222", "mcp_session_id": "mcp-2"}')) as r;
select is((select r ->> 'case_id' from retry), '11111111-1111-1111-1111-111111111111',
  'a retry returns the existing case, not the id it proposed');
select is((select (r ->> 'existed')::boolean from retry), true, 'a retry says the case existed');
select is((select r ->> 'session_id' from retry), (select r ->> 'session_id' from first),
  'a retry joins the same session');
select is((select count(*)::int from public.cases), 1, 'a retry opens no second case');
select is((select count(*)::int from public.hil_audit where outcome = 'joined_existing'), 1,
  'the retry is audited as joining the existing case');

select isnt((select public.hitl_open_case(pg_temp.req(
  '{"case_id": "33333333-3333-3333-3333-333333333333", "question": "Another question?"}')) ->> 'case_id'),
  '11111111-1111-1111-1111-111111111111', 'another question in the same call opens another case');
select is((select public.hitl_open_case(pg_temp.req(
  '{"case_id": "44444444-4444-4444-4444-444444444444", "retell_call_id": "call-2"}')) ->> 'case_id'),
  '44444444-4444-4444-4444-444444444444', 'the same question in another call opens another case');
select is((select public.hitl_open_case(pg_temp.req(
  '{"case_id": "55555555-5555-5555-5555-555555555555", "retell_call_id": "call-2", "idempotency_key": "k-1"}')) ->> 'case_id'),
  '55555555-5555-5555-5555-555555555555', 'an explicit idempotency key replaces the default one');

-- a retry after the call's deadline waits again on the same case
update public.hil_sessions set status = 'timed_out', closed_at = now()
 where case_id = '11111111-1111-1111-1111-111111111111';
create temp table again as select public.hitl_open_case(pg_temp.req('{"timeout_seconds": 60}')) as r;
select results_eq(
  $$select r ->> 'case_id', r ->> 'status', (r ->> 'existed')::boolean, (r ->> 'expires_at')::timestamptz from again$$,
  $$values ('11111111-1111-1111-1111-111111111111', 'waiting', true, now() + interval '60 seconds')$$,
  'a retry after a timeout re-opens the same session with a new deadline');
select is((select count(*)::int from public.hil_sessions where case_id = '11111111-1111-1111-1111-111111111111'), 1,
  'the re-opened session is the same row');

-- ... and revives its case if that had expired unanswered
update public.hil_sessions set status = 'expired' where case_id = '11111111-1111-1111-1111-111111111111';
update public.cases set status = 'expired', expires_at = now() - interval '1 minute'
 where id = '11111111-1111-1111-1111-111111111111';
select is((select public.hitl_open_case(pg_temp.req()) ->> 'status'), 'waiting',
  'a retry after the case expired waits again');
select results_eq(
  $$select status, expires_at from public.cases where id = '11111111-1111-1111-1111-111111111111'$$,
  $$values ('open', now() + interval '1 hour')$$, 'the expired case is open again for an hour');

-- bad input: named errors, nothing written --------------------------------------------------------
create temp table before as
  select (select count(*) from public.cases) c, (select count(*) from public.hil_sessions) s,
         (select count(*) from public.hil_audit) a, (select count(*) from public.hil_case_secrets) k,
         (select count(*) from realtime.messages) m;

select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req() - 'question' || '{"case_id": "66666666-6666-6666-6666-666666666666"}')$$),
  '{"sqlstate": "P0001", "message": "invalid question: is required", "detail": "question", "hint": "is required"}',
  'a missing question is named, with the field as DETAIL and the rule as HINT');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"question": "   ", "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid question: must not be empty', 'a blank question is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"priority": 9, "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid priority: must be an integer from 1 to 5', 'priority 9 is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"priority": 2.5, "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid priority: must be an integer from 1 to 5', 'a fractional priority is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"urgency": "asap", "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid urgency: must be one of low, medium, high', 'an unknown urgency is refused');
select is(pg_temp.err(format($$select public.hitl_open_case(pg_temp.req(%L::jsonb))$$,
  jsonb_build_object('question', repeat('x', 1048576), 'case_id', '66666666-6666-6666-6666-666666666666'))),
  '{"sqlstate": "P0001", "message": "invalid question: must be at most 2000 characters", "detail": "question", "hint": "must be at most 2000 characters"}',
  'a 1 MB question is refused by name');
select is(pg_temp.err(format($$select public.hitl_open_case(pg_temp.req(%L::jsonb))$$,
  jsonb_build_object('context', repeat('x', 8001), 'case_id', '66666666-6666-6666-6666-666666666666'))) ->> 'message',
  'invalid context: must be at most 8000 characters', 'context over 8000 characters is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"timeout_seconds": 4, "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid timeout_seconds: must be an integer from 5 to 600', 'a timeout under 5 s is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"timeout_seconds": 601, "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid timeout_seconds: must be an integer from 5 to 600', 'a timeout over 600 s is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"retell_call_id": "", "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid retell_call_id: must not be empty', 'an empty call id is refused');
select is(pg_temp.err(format($$select public.hitl_open_case(pg_temp.req(%L::jsonb))$$,
  jsonb_build_object('mcp_session_id', repeat('s', 129), 'case_id', '66666666-6666-6666-6666-666666666666'))) ->> 'message',
  'invalid mcp_session_id: must be at most 128 characters', 'an id over 128 characters is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"caller_info": [1], "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid caller_info: must be an object', 'caller_info must be an object');
select is(pg_temp.err(format($$select public.hitl_open_case(pg_temp.req(%L::jsonb))$$,
  jsonb_build_object('caller_info', jsonb_build_object('notes', repeat('x', 16400)), 'case_id', '66666666-6666-6666-6666-666666666666'))) ->> 'message',
  'invalid caller_info: must be at most 16 KB as JSON', 'caller_info over 16 KB is refused');
select is(pg_temp.err(format($$select public.hitl_open_case(pg_temp.req(%L::jsonb))$$,
  jsonb_build_object('conversation_history',
    (select jsonb_agg(jsonb_build_object('role', 'caller', 'content', 'x')) from generate_series(1, 201)),
    'case_id', '66666666-6666-6666-6666-666666666666'))) ->> 'message',
  'invalid conversation_history: must have at most 200 turns', 'more than 200 turns are refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"conversation_history": [{"role": "caller", "content": "hi"}, {"content": "no role"}], "case_id": "66666666-6666-6666-6666-666666666666"}'))$$) ->> 'message',
  'invalid conversation_history: turn 1 must be {role: 1-64 characters, content: at most 8000 characters}',
  'a turn without a role is refused by its index');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"case_id": "not-a-uuid"}'))$$) ->> 'message',
  'invalid case_id: must be a UUID', 'a case id that is not a UUID is refused');
select is(pg_temp.err($$select public.hitl_open_case(pg_temp.req('{"question": "A new question", "case_id": "44444444-4444-4444-4444-444444444444"}'))$$) ->> 'message',
  'invalid case_id: is already used by another case', 'a case id another case holds is refused');
select is(pg_temp.err($$select public.hitl_open_case('[1, 2]')$$) ->> 'message',
  'invalid p: must be a JSON object', 'input that is not an object is refused');

select results_eq(
  $$select (select count(*) from public.cases), (select count(*) from public.hil_sessions),
           (select count(*) from public.hil_audit), (select count(*) from public.hil_case_secrets),
           (select count(*) from realtime.messages)$$,
  $$select c, s, a, k, m from before$$,
  'refused calls write no case, session, audit row, secret or broadcast');

select * from finish();
rollback;
