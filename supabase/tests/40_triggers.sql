-- Triggers broadcast through realtime.send (rows in realtime.messages, extension 'broadcast',
-- private): 'message' on case:<id> for every message, 'case_opened' on operators for relay cases,
-- 'session' on case:<id> for a session status change. Also realtime.send/broadcast_changes as
-- Supabase defines them. (The devstack's NOTIFY hook on realtime.messages exists only on the
-- local stack, not on a hosted project: tests/db/test_realtime_notify.py tests it.)
begin;
select plan(25);

-- realtime.messages belongs to supabase_realtime_admin: the migration role may not delete from
-- it (Realtime's janitor drops whole daily partitions). A mark hides what was there before.
create temp table rt_mark (id uuid primary key);
create function pg_temp.rt_mark() returns void language sql as $$
  insert into rt_mark select id from realtime.messages on conflict do nothing
$$;
create temp view rt as
  select * from realtime.messages m where not exists (select 1 from rt_mark k where k.id = m.id);

select public.hitl_open_case(jsonb_build_object(
  'case_id', 'e0000000-0000-0000-0000-000000000001', 'question', 'Is the store open on Sunday?',
  'mcp_session_id', 'm', 'retell_call_id', 'call-9', 'retell_agent_id', 'a', 'priority', 5,
  'urgency', 'high', 'timeout_seconds', 45));

-- case_opened ---------------------------------------------------------------------------------------
select results_eq(
  $$select topic, event, extension, private from pg_temp.rt where event = 'case_opened'$$,
  $$values ('operators', 'case_opened', 'broadcast', true)$$,
  'a relay case is announced once, privately, on operators');
select is((select payload - 'id' - 'thread' - 'sig' from pg_temp.rt where event = 'case_opened'),
  jsonb_build_object(
    'case_id', 'e0000000-0000-0000-0000-000000000001', 'priority', 5, 'urgency', 'high',
    'question', 'Is the store open on Sunday?', 'title', 'Is the store open on Sunday?',
    'deadline_at', (select metadata ->> 'deadline_at' from public.cases),
    'expires_at', now() + interval '1 hour', 'retell_call_id', 'call-9', 'source', 'mcp_voice'),
  'case_opened carries the case, its deadline and its answerable window');
select is((select (payload ->> 'deadline_at')::timestamptz from pg_temp.rt where event = 'case_opened'),
  now() + interval '45 seconds', 'deadline_at is when the caller stops waiting');
select ok((select (payload ->> 'id')::uuid is not null from pg_temp.rt where event = 'case_opened'),
  'realtime.send gave the payload an id');
select is((select payload -> 'thread' from pg_temp.rt where event = 'case_opened'), '[]'::jsonb,
  'the first case of a call has an empty thread');

insert into public.cases (id, source, description) values ('e0000000-0000-0000-0000-0000000000ff', 'crm', 'platform');
select is((select count(*)::int from pg_temp.rt where event = 'case_opened'), 1,
  'the platform''s own cases are not announced');

-- message, for every sender type ---------------------------------------------------------------------
select pg_temp.rt_mark();
insert into public.messages (id, case_id, sender_type, sender_id, content, kind, created_at) values
  ('f0000000-0000-0000-0000-000000000001', 'e0000000-0000-0000-0000-000000000001', 'ai', null, 'Checking.', 'note', now()),
  ('f0000000-0000-0000-0000-000000000002', 'e0000000-0000-0000-0000-000000000001', 'system', null, 'Joined.', 'note', now()),
  ('f0000000-0000-0000-0000-000000000003', 'e0000000-0000-0000-0000-000000000001', 'human',
   '0e000000-0000-0000-0000-000000000001', 'Yes, 10 to 4.', 'answer', now());
select results_eq(
  $$select topic, event, extension, private, payload ->> 'sender_type' from pg_temp.rt
     where event = 'message' order by payload ->> 'id'$$,
  $$values ('case:e0000000-0000-0000-0000-000000000001', 'message', 'broadcast', true, 'ai'),
           ('case:e0000000-0000-0000-0000-000000000001', 'message', 'broadcast', true, 'system'),
           ('case:e0000000-0000-0000-0000-000000000001', 'message', 'broadcast', true, 'human')$$,
  'every message, whoever sent it, is broadcast privately on its case topic');
select is((select payload - 'sig' from pg_temp.rt where payload ->> 'id' = 'f0000000-0000-0000-0000-000000000003'),
  jsonb_build_object('id', 'f0000000-0000-0000-0000-000000000003',
                     'case_id', 'e0000000-0000-0000-0000-000000000001', 'sender_type', 'human',
                     'sender_id', '0e000000-0000-0000-0000-000000000001', 'content', 'Yes, 10 to 4.',
                     'kind', 'answer', 'created_at', now(), 'is_answer', true,
                     'option_index', null, 'option', null),
  'the message payload is the message (its own id kept), whether it is the answer, and the option chosen');
select is((select id from pg_temp.rt where payload ->> 'id' = 'f0000000-0000-0000-0000-000000000003')
            <> 'f0000000-0000-0000-0000-000000000003'::uuid, true,
  'the realtime row has its own id, the payload keeps the message id');
select is((select count(*)::int from pg_temp.rt where event = 'session'), 0,
  'an answer alone changes no session');

-- session ---------------------------------------------------------------------------------------------
select pg_temp.rt_mark();
select public.hitl_close_session((select id from public.hil_sessions), 'answered');
select results_eq(
  $$select topic, event, private, payload - 'id' - 'sig' from pg_temp.rt$$,
  $$select 'case:e0000000-0000-0000-0000-000000000001', 'session', true,
           jsonb_build_object('session_id', s.id, 'case_id', s.case_id, 'status', 'answered',
                              'expires_at', s.expires_at)
      from public.hil_sessions s$$,
  'a status change is broadcast on the case topic');
update public.hil_sessions set metadata = metadata || '{"touched": true}';
update public.hil_sessions set status = status;
select is((select count(*)::int from pg_temp.rt), 1,
  'an update that keeps the status broadcasts nothing');

-- the thread: a second case of the same call carries the first Q&A --------------------------------------
select pg_temp.rt_mark();
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'e0000000-0000-0000-0000-000000000002', 'question', 'And on Monday?',
  'mcp_session_id', 'm', 'retell_call_id', 'call-9', 'retell_agent_id', 'a'));
select is((select jsonb_array_length(payload -> 'thread') from pg_temp.rt where event = 'case_opened'), 1,
  'a later case of the same call is announced with the call''s thread');
select is((select payload -> 'thread' -> 0 ->> 'answer' from pg_temp.rt where event = 'case_opened'),
  'Yes, 10 to 4.', 'the thread carries the earlier answer');

-- realtime.send as Supabase defines it ---------------------------------------------------------------------
select pg_temp.rt_mark();
select realtime.send('{"a": 1}', 'ping', 'room-1', false);
select results_eq(
  $$select topic, event, extension, private, payload - 'id', (payload ->> 'id')::uuid = id from pg_temp.rt$$,
  $$values ('room-1', 'ping', 'broadcast', false, '{"a": 1}'::jsonb, true)$$,
  'send adds the row id to a payload without one');
select is(realtime.topic(), 'room-1', 'send sets realtime.topic for the transaction');
select realtime.send('{"id": "mine", "b": 2}', 'ping', 'room-2');
select results_eq(
  $$select private, payload from pg_temp.rt where topic = 'room-2'$$,
  $$values (true, '{"id": "mine", "b": 2}'::jsonb)$$,
  'send keeps a payload''s own id and defaults to private');
set local client_min_messages = error;  -- the expected WarnSendingBroadcastMessage
select lives_ok($$select realtime.send('{}', 'ping', null)$$,
  'a failing send warns instead of failing the caller''s transaction');
reset client_min_messages;
select is((select count(*)::int from pg_temp.rt where topic is null), 0, 'and writes nothing');

create temp table probe (id int primary key, v text);
create function pg_temp.probe_changes() returns trigger language plpgsql as $$
begin
  perform realtime.broadcast_changes('probe:' || coalesce(new.id, old.id), tg_op, tg_op, tg_table_name,
                                     tg_table_schema, new, old);
  return null;
end;
$$;
create trigger probe_changes after insert or update or delete on probe
  for each row execute function pg_temp.probe_changes();
insert into probe values (1, 'x');
update probe set v = 'y';
delete from probe;
select results_eq(
  $$select event, private, payload ->> 'operation', payload -> 'record' ->> 'v', payload -> 'old_record' ->> 'v',
           payload ->> 'table'
      from pg_temp.rt where topic = 'probe:1'
     order by array_position(array['INSERT', 'UPDATE', 'DELETE'], event)$$,
  $$values ('INSERT', true, 'INSERT', 'x', null, 'probe'),
           ('UPDATE', true, 'UPDATE', 'y', 'x', 'probe'),
           ('DELETE', true, 'DELETE', null, 'y', 'probe')$$,
  'broadcast_changes sends {old_record, record, operation, table, schema} privately');
select throws_ok(
  $$select realtime.broadcast_changes('t', 'e', 'TRUNCATE', 'probe', 'pg_temp', null::record, null::record)$$,
  'P0001', null, 'broadcast_changes refuses an unknown operation');

-- messages on a case id that is not a case are refused (foreign key), before any broadcast
select pg_temp.rt_mark();
select throws_ok($$insert into public.messages (case_id, sender_type, content) values
  ('e0000000-0000-0000-0000-00000000dead', 'human', 'x')$$, '23503', null,
  'a message needs an existing case');
select is((select count(*)::int from pg_temp.rt), 0, 'and nothing was broadcast');

-- operators' messages: the trigger runs as its owner, so an operator's insert broadcasts too
set local role authenticated;
set local request.jwt.claims to '{"role": "authenticated", "sub": "0e000000-0000-0000-0000-000000000001", "app_metadata": {"hitl_role": "operator"}}';
insert into public.messages (case_id, sender_type, sender_id, content, kind) values
  ('e0000000-0000-0000-0000-000000000002', 'human', '0e000000-0000-0000-0000-000000000001', 'Closed on Monday.', 'answer');
reset role;
select is((select count(*)::int from pg_temp.rt where topic = 'case:e0000000-0000-0000-0000-000000000002'
             and (payload ->> 'is_answer')::boolean), 1,
  'an operator''s answer is broadcast as the answer');
select is((public.hitl_answer('e0000000-0000-0000-0000-000000000002') ->> 'content'), 'Closed on Monday.',
  'and decides the case');

select * from finish();
rollback;
