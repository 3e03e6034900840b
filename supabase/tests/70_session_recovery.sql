-- Session recovery: a session records the relay instance (x-hitl-instance request header) that
-- waits on it; hitl_recover_sessions(instance) closes that instance's waiting sessions.
begin;
select plan(10);

select set_config('request.headers', '{"x-hitl-instance": "relay-a"}', true);
create temp table a as select public.hitl_open_case(jsonb_build_object(
  'question', 'Late?', 'mcp_session_id', 'm', 'retell_call_id', 'rec-1', 'retell_agent_id', 'x',
  'timeout_seconds', 30)) as late, public.hitl_open_case(jsonb_build_object(
  'question', 'Waiting?', 'mcp_session_id', 'm', 'retell_call_id', 'rec-2', 'retell_agent_id', 'x',
  'timeout_seconds', 30)) as waiting;
select set_config('request.headers', '{"x-hitl-instance": "relay-b"}', true);
create temp table b as select public.hitl_open_case(jsonb_build_object(
  'question', 'Elsewhere?', 'mcp_session_id', 'm', 'retell_call_id', 'rec-3', 'retell_agent_id', 'x',
  'timeout_seconds', 30)) as elsewhere;
select set_config('request.headers', '', true);
create temp table n as select public.hitl_open_case(jsonb_build_object(
  'question', 'Nobody?', 'mcp_session_id', 'm', 'retell_call_id', 'rec-4', 'retell_agent_id', 'x',
  'timeout_seconds', 30)) as nobody;

select is((select instance_id from public.hil_sessions where id = (select (late ->> 'session_id')::uuid from a)),
  'relay-a', 'a session records the instance named by the request header');
select is((select instance_id from public.hil_sessions where id = (select (nobody ->> 'session_id')::uuid from n)),
  null, 'no header: no instance');

update public.hil_sessions set expires_at = now() - interval '1 second'
 where id = (select (late ->> 'session_id')::uuid from a);
select is(public.hitl_recover_sessions('relay-a'), '{"expired": 1, "cancelled": 1}'::jsonb,
  'recovery closes the instance''s waiting sessions: past the deadline expired, the rest cancelled');
select is((select status || ':' || (metadata -> 'close' ->> 'reason') from public.hil_sessions
            where id = (select (waiting ->> 'session_id')::uuid from a)),
  'cancelled:relay restarted', 'the reason is recorded');
select is((select status from public.cases where id = (select (waiting ->> 'case_id')::uuid from a)),
  'open', 'the case stays open and answerable');
select is((select status from public.hil_sessions where id = (select (elsewhere ->> 'session_id')::uuid from b)),
  'waiting', 'another instance''s session is untouched');
select is((select count(*)::int from public.hil_audit where action = 'recover_session'), 2,
  'each recovered session is audited');
select is(public.hitl_recover_sessions('relay-a'), '{"expired": 0, "cancelled": 0}'::jsonb,
  'recovering twice changes nothing');

select set_config('request.headers', '{"x-hitl-instance": "relay-a2"}', true);
select public.hitl_open_case(jsonb_build_object(
  'question', 'Waiting?', 'mcp_session_id', 'm', 'retell_call_id', 'rec-2', 'retell_agent_id', 'x',
  'timeout_seconds', 30));
select is((select status || ':' || instance_id from public.hil_sessions
            where id = (select (waiting ->> 'session_id')::uuid from a)),
  'waiting:relay-a2', 'a retried call re-opens the session for the instance now waiting on it');
select throws_ok($$select public.hitl_recover_sessions('  ')$$, 'P0001', null,
  'an empty instance id is refused');

select * from finish();
rollback;
