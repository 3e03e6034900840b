-- Row-level security matrix: (anon, an operator, a non-operator authenticated user, a user who
-- wrote "operator" into their own user_metadata, service_role) × (every table, the stats view,
-- the RPCs, realtime.messages topics). Roles are switched the way PostgREST and Realtime do it:
-- `set local role` + `request.jwt.claims`. Nothing leaks; webhook secrets never reach operators.
begin;
select plan(72);

-- helpers (run as whichever role is current) -------------------------------------------------
-- rows a statement sees; 0 when the role may not even look (permission denied)
create function pg_temp.seen(p_sql text) returns integer language plpgsql as $$
declare n integer;
begin
  execute format('select count(*) from (%s) t', p_sql) into n;
  return n;
exception when insufficient_privilege then
  return 0;
end;
$$;
-- the SQLSTATE a statement raises, or 'ok' (changes are kept when it succeeds)
create function pg_temp.state(p_sql text) returns text language plpgsql as $$
begin
  execute p_sql;
  return 'ok';
exception when others then
  return sqlstate;
end;
$$;
-- rows a write changed; 0 when refused
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
create function pg_temp.as_user(p_role text, p_claims jsonb) returns void language plpgsql as $$
begin
  perform set_config('request.jwt.claims', p_claims::text, true);
  perform set_config('request.jwt.claim.sub', coalesce(p_claims ->> 'sub', ''), true);
  execute format('set local role %I', p_role);
end;
$$;

-- fixture (as the superuser) --------------------------------------------------------------------
select public.hitl_open_case(jsonb_build_object(
  'case_id', 'a0000000-0000-0000-0000-000000000001', 'question', 'Discount for order 12?',
  'mcp_session_id', 'm', 'retell_call_id', 'c', 'retell_agent_id', 'a',
  'webhook_secret', 'whsec-rls-canary', 'callback_url', 'https://example.test/cb'));
insert into public.cases (id, source, status, description) values
  ('a0000000-0000-0000-0000-0000000000ff', 'crm', 'new', 'the platform''s own case');
insert into public.messages (case_id, sender_type, content, kind) values
  ('a0000000-0000-0000-0000-000000000001', 'ai', 'context for the operator', 'note'),
  ('a0000000-0000-0000-0000-0000000000ff', 'human', 'platform chatter', 'note');
insert into public.operator_activity (operator_id) values
  ('0a000000-0000-0000-0000-000000000001'), ('0a000000-0000-0000-0000-000000000002');
select realtime.send('{"x": 1}', 'ping', 'room-x', true);

-- anon ------------------------------------------------------------------------------------------------
select pg_temp.as_user('anon', '{"role": "anon"}');
select is(pg_temp.seen('select * from public.cases'), 0, 'anon sees no case');
select is(pg_temp.seen('select * from public.messages'), 0, 'anon sees no message');
select is(pg_temp.seen('select * from public.hil_sessions'), 0, 'anon sees no session');
select is(pg_temp.seen('select * from public.hil_audit'), 0, 'anon sees no audit row');
select is(pg_temp.seen('select * from public.hil_case_secrets'), 0, 'anon sees no secret');
select is(pg_temp.seen('select * from public.operator_activity'), 0, 'anon sees no availability');
select is(pg_temp.seen('select * from public.hitl_stats where invocations > 0'), 0, 'anon sees no stats');
select is(pg_temp.changed($$insert into public.messages (case_id, sender_type, content)
  values ('a0000000-0000-0000-0000-000000000001', 'human', 'anon answer')$$), 0, 'anon cannot post a message');
select is(pg_temp.changed($$update public.cases set status = 'closed'$$), 0, 'anon cannot update cases');
select is(pg_temp.state($$select public.hitl_open_case('{}')$$), '42501', 'anon cannot open cases');
select is(pg_temp.state($$select public.hitl_answer('a0000000-0000-0000-0000-000000000001')$$), '42501',
  'anon cannot read answers through the RPC');
select is(public.hitl_is_operator(), false, 'anon is not an operator');
set local realtime.topic = 'operators';
select is(pg_temp.seen('select * from realtime.messages'), 0, 'anon receives nothing on operators');
select is(pg_temp.state($$insert into realtime.messages (topic, extension) values ('operators', 'broadcast')$$),
  '42501', 'anon cannot broadcast on operators');
set local realtime.topic = 'case:a0000000-0000-0000-0000-000000000001';
select is(pg_temp.seen('select * from realtime.messages'), 0, 'anon receives nothing on a case topic');
select is(pg_temp.state($$insert into realtime.messages (topic, extension) values ('case:a0000000-0000-0000-0000-000000000001', 'presence')$$),
  '42501', 'anon cannot track presence on a case topic');
reset role;

-- a non-operator authenticated user, and one who claims operator in their own user_metadata -----------
select pg_temp.as_user('authenticated', '{"role": "authenticated", "sub": "0b000000-0000-0000-0000-000000000001"}');
select is(pg_temp.seen('select * from public.cases'), 0, 'a non-operator sees no case');
select is(pg_temp.seen('select * from public.messages'), 0, 'a non-operator sees no message');
select is(pg_temp.seen('select * from public.hil_sessions'), 0, 'a non-operator sees no session');
select is(pg_temp.seen('select * from public.hil_audit'), 0, 'a non-operator sees no audit row');
select is(pg_temp.seen('select * from public.hil_case_secrets'), 0, 'a non-operator sees no secret');
select is(pg_temp.seen('select * from public.operator_activity'), 0, 'a non-operator sees no availability');
select is(pg_temp.changed($$insert into public.messages (case_id, sender_type, sender_id, content)
  values ('a0000000-0000-0000-0000-000000000001', 'human', '0b000000-0000-0000-0000-000000000001', 'x')$$), 0,
  'a non-operator cannot post a message');
select is(pg_temp.state($$select public.hitl_operator_heartbeat()$$), '42501',
  'a non-operator cannot record availability');
set local realtime.topic = 'operators';
select is(pg_temp.seen('select * from realtime.messages'), 0, 'a non-operator receives nothing on operators');
select is(pg_temp.state($$insert into realtime.messages (topic, extension) values ('operators', 'broadcast')$$),
  '42501', 'a non-operator cannot broadcast on operators');
reset role;

select pg_temp.as_user('authenticated',
  '{"role": "authenticated", "sub": "0b000000-0000-0000-0000-000000000002", "user_metadata": {"hitl_role": "operator"}}');
select is(public.hitl_is_operator(), false, 'user_metadata (which users edit themselves) does not make an operator');
select is(pg_temp.seen('select * from public.cases'), 0, 'so that user sees no case');
set local realtime.topic = 'case:a0000000-0000-0000-0000-000000000001';
select is(pg_temp.seen('select * from realtime.messages'), 0, 'and receives nothing on a case topic');
reset role;

-- an operator -----------------------------------------------------------------------------------------
select pg_temp.as_user('authenticated',
  '{"role": "authenticated", "sub": "0a000000-0000-0000-0000-000000000001", "app_metadata": {"hitl_role": "operator"}}');
select is(public.hitl_is_operator(), true, 'app_metadata.hitl_role = operator makes an operator');
select is(pg_temp.seen('select * from public.cases'), 1, 'an operator sees the relay''s case');
select is(pg_temp.seen($$select * from public.cases where source is distinct from 'mcp_voice'$$), 0,
  'an operator gains no view of the platform''s own cases');
select is(pg_temp.seen('select * from public.messages'), 1, 'an operator sees the relay case''s messages only');
select is(pg_temp.seen('select * from public.hil_sessions'), 1, 'an operator sees the relay''s sessions');
select is(pg_temp.seen('select * from public.hil_audit'), 0, 'an operator sees no audit row');
select is(pg_temp.seen('select * from public.hitl_stats where invocations > 0'), 0, 'an operator sees no stats');
select is(pg_temp.seen('select * from public.operator_activity'), 1, 'an operator sees only their own availability');

-- webhook secrets
select is(pg_temp.state('select * from public.hil_case_secrets'), '42501',
  'an operator reading hil_case_secrets gets permission denied');
select is(pg_temp.seen($$select * from public.cases c where c::text like '%whsec-rls-canary%'$$), 0,
  'the secret is in no case column an operator reads');
select is(pg_temp.seen($$select * from public.hil_sessions s where s::text like '%whsec-rls-canary%'$$), 0,
  'the secret is in no session an operator reads');
select is(pg_temp.seen($$select * from public.messages m where m::text like '%whsec-rls-canary%'$$), 0,
  'the secret is in no message an operator reads');
set local realtime.topic = 'operators';
select is(pg_temp.seen($$select * from realtime.messages r where r::text like '%whsec-rls-canary%'$$), 0,
  'the secret is in no broadcast an operator receives');
select is(pg_temp.state($$select public.hitl_call_history('c')$$), '42501',
  'an operator cannot call the service-only RPCs');

-- writes
select is(pg_temp.changed($$insert into public.messages (case_id, sender_type, sender_id, content, kind)
  values ('a0000000-0000-0000-0000-000000000001', 'human', '0a000000-0000-0000-0000-000000000001', 'Yes, 10 %.', 'answer')$$), 1,
  'an operator posts a human message as themselves');
select is(pg_temp.changed($$insert into public.messages (case_id, sender_type, sender_id, content)
  values ('a0000000-0000-0000-0000-000000000001', 'human', '0a000000-0000-0000-0000-000000000002', 'as someone else')$$), 0,
  'an operator cannot post as another operator');
select is(pg_temp.changed($$insert into public.messages (case_id, sender_type, sender_id, content)
  values ('a0000000-0000-0000-0000-000000000001', 'ai', '0a000000-0000-0000-0000-000000000001', 'as the ai')$$), 0,
  'an operator cannot post as the ai');
select is(pg_temp.changed($$insert into public.messages (case_id, sender_type, sender_id, content)
  values ('a0000000-0000-0000-0000-0000000000ff', 'human', '0a000000-0000-0000-0000-000000000001', 'x')$$), 0,
  'an operator cannot post into the platform''s own cases');
select is(pg_temp.changed($$update public.cases set status = 'closed'$$), 0, 'an operator cannot update cases');
select is(pg_temp.changed($$delete from public.cases$$), 0, 'an operator cannot delete cases');
select is(pg_temp.changed($$update public.messages set content = 'rewritten'$$), 0, 'an operator cannot edit messages');
select is(pg_temp.changed($$delete from public.messages$$), 0, 'an operator cannot delete messages');
select is(pg_temp.changed($$update public.hil_sessions set status = 'answered'$$), 0, 'an operator cannot move sessions');
select is(pg_temp.changed($$insert into public.hil_case_secrets (case_id, webhook_secret)
  values ('a0000000-0000-0000-0000-0000000000ff', 'planted')$$), 0, 'an operator cannot plant secrets');
select is(pg_temp.state($$select public.hitl_open_case('{}')$$), '42501', 'an operator cannot open cases');
select is(pg_temp.state($$select public.hitl_close_session('a0000000-0000-0000-0000-000000000001', 'failed')$$),
  '42501', 'an operator cannot close sessions');
select is(pg_temp.state($$select public.hitl_operator_heartbeat()$$), 'ok', 'an operator records availability');

-- realtime topics
set local realtime.topic = 'operators';
select ok(pg_temp.seen($$select * from realtime.messages where topic = 'operators'$$) > 0,
  'an operator receives broadcasts on operators');
select is(pg_temp.changed($$insert into realtime.messages (topic, extension) values ('operators', 'presence')$$), 1,
  'an operator tracks presence on operators');
set local realtime.topic = 'case:a0000000-0000-0000-0000-000000000001';
select ok(pg_temp.seen($$select * from realtime.messages where topic = 'case:a0000000-0000-0000-0000-000000000001'$$) > 0,
  'an operator receives broadcasts on a case topic');
-- Realtime's write check sees only (topic, extension), so an operator who could broadcast
-- `typing` could broadcast a forged `message`: the console sends nothing, so nobody may.
select is(pg_temp.state($$insert into realtime.messages (topic, extension, event, payload)
  values ('case:a0000000-0000-0000-0000-000000000001', 'broadcast', 'typing', '{}')$$), '42501',
  'an operator may not broadcast on a case topic (the console only listens there)');
select is(pg_temp.state($$insert into realtime.messages (topic, extension)
  values ('case:a0000000-0000-0000-0000-000000000001', 'presence')$$), '42501',
  'an operator may not track presence on a case topic');
set local realtime.topic = 'operators';
select is(pg_temp.state($$insert into realtime.messages (topic, extension, event, payload)
  values ('operators', 'broadcast', 'case_opened', '{}')$$), '42501',
  'an operator may not broadcast on operators (no forged case_opened)');
set local realtime.topic = 'case:a0000000-0000-0000-0000-000000000001';
select is(pg_temp.state($$insert into realtime.messages (topic, extension) values ('case:x', 'postgres_changes')$$),
  '42501', 'an operator may not use other realtime extensions');
set local realtime.topic = 'room-x';
select is(pg_temp.seen('select * from realtime.messages'), 0, 'an operator receives nothing on other topics');
select is(pg_temp.state($$insert into realtime.messages (topic, extension) values ('room-x', 'broadcast')$$),
  '42501', 'an operator cannot broadcast on other topics');
reset role;

-- service_role (the relay) ------------------------------------------------------------------------
select pg_temp.as_user('service_role', '{"role": "service_role"}');
select is(pg_temp.seen('select * from public.cases'), 2, 'the service role sees every case');
select is(pg_temp.seen('select * from public.hil_case_secrets'), 1, 'the service role reads webhook secrets');
select ok(pg_temp.seen('select * from public.hil_audit') > 0, 'the service role reads the audit log');
select is(pg_temp.seen('select * from public.hitl_stats where invocations = 1'), 1, 'the service role reads stats');
select is(pg_temp.state($$select public.hitl_open_case(jsonb_build_object('question', 'q', 'mcp_session_id', 'm',
  'retell_call_id', 'c2', 'retell_agent_id', 'a'))$$), 'ok', 'the service role opens cases');
select is(pg_temp.state($$select public.hitl_expire_sessions()$$), 'ok', 'the service role runs expiry');
set local realtime.topic = 'room-x';
select is(pg_temp.seen($$select * from realtime.messages where topic = 'room-x'$$), 1,
  'the service role receives on any topic');
reset role;

select * from finish();
rollback;
