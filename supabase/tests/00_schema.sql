-- Tables, columns, functions, triggers and the Supabase stand-ins the relay relies on exist with
-- the shapes of the data contract (design.md "Data contract", COMMON.md "SQL").
begin;
select plan(71);

-- tables ------------------------------------------------------------------------------------
-- (not exclusive: later migrations may add tables; every table's RLS is checked below)
select has_table('public', t, format('public.%s exists', t))
  from unnest(array['cases', 'messages', 'hil_sessions', 'hil_audit', 'hil_case_secrets',
                    'operator_activity']) t;
select columns_are('public', 'cases',
  array['id', 'created_at', 'title', 'description', 'status', 'priority', 'urgency', 'source',
        'metadata', 'answered_at', 'expires_at', 'answer_message_id', 'options', 'skills',
        'claimed_by', 'claimed_at', 'claim_expires_at', 'escalated_at', 'escalation_level',
        'escalated_for'],
  'cases has the contract''s columns');
select col_type_is('public', 'cases', 'id', 'uuid', 'cases.id is a uuid');
select col_type_is('public', 'cases', 'metadata', 'jsonb', 'cases.metadata is jsonb');
select col_type_is('public', 'cases', 'priority', 'integer', 'cases.priority is an integer');
select col_type_is('public', 'cases', 'expires_at', 'timestamp with time zone', 'cases.expires_at is timestamptz');
select col_is_pk('public', 'cases', 'id', 'cases is keyed by id');

select columns_are('public', 'messages',
  array['id', 'case_id', 'created_at', 'sender_type', 'sender_id', 'content', 'kind', 'option_index'],
  'messages has the contract''s columns');
select col_not_null('public', 'messages', 'kind', 'messages.kind is not null');
select col_default_is('public', 'messages', 'kind', 'answer', 'messages.kind defaults to answer');
select fk_ok('public', 'messages', 'case_id', 'public', 'cases', 'id');
select col_type_is('public', 'messages', 'sender_id', 'uuid', 'messages.sender_id is a uuid (auth.uid())');

select columns_are('public', 'hil_sessions',
  array['id', 'mcp_session_id', 'retell_call_id', 'retell_agent_id', 'case_id', 'idempotency_key',
        'status', 'created_at', 'expires_at', 'closed_at', 'metadata', 'instance_id'],
  'hil_sessions has the contract''s columns');
select fk_ok('public', 'hil_sessions', 'case_id', 'public', 'cases', 'id');
select col_not_null('public', 'hil_sessions', 'idempotency_key', 'every session has an idempotency key');
select index_is_unique('public', 'hil_sessions', 'hil_sessions_idempotency_key_idx',
  'one session per idempotency key');
select col_default_is('public', 'hil_sessions', 'status', 'waiting', 'a session starts waiting');

select columns_are('public', 'hil_audit',
  array['id', 'at', 'actor', 'action', 'case_id', 'session_id', 'outcome', 'detail'],
  'hil_audit records who, what and when');
select columns_are('public', 'hil_case_secrets', array['case_id', 'webhook_secret', 'created_at'],
  'webhook secrets live in their own table');
select hasnt_column('public', 'cases', 'webhook_secret', 'cases has no webhook_secret column');

-- checks --------------------------------------------------------------------------------------
select throws_ok(
  $$insert into public.cases (source, status) values ('mcp_voice', 'pending')$$,
  '23514', null, 'a relay case''s status is one of the contract''s');
select throws_ok(
  $$insert into public.cases (source, priority) values ('mcp_voice', 9)$$,
  '23514', null, 'a relay case''s priority is 1-5');
select throws_ok(
  $$insert into public.cases (source, urgency) values ('mcp_voice', 'asap')$$,
  '23514', null, 'a relay case''s urgency is low, medium or high');
select lives_ok(
  $$insert into public.cases (id, source, status, priority) values
      ('00000000-0000-0000-0000-0000000000c1', 'crm', 'pending', 42)$$,
  'the platform''s own cases keep their own statuses and priorities');
select throws_ok(
  $$insert into public.messages (case_id, sender_type, content)
      values ('00000000-0000-0000-0000-0000000000c1', 'robot', 'x')$$,
  '23514', null, 'sender_type is human, ai or system');
select throws_ok(
  $$insert into public.messages (case_id, sender_type, content, kind)
      values ('00000000-0000-0000-0000-0000000000c1', 'human', 'x', 'shrug')$$,
  '23514', null, 'kind is answer, clarification, cannot_answer or note');
select throws_ok(
  $$insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key, status, expires_at)
      values ('s', 'c', '00000000-0000-0000-0000-0000000000c1', 'k', 'sleeping', now())$$,
  '23514', null, 'a session''s status is one of the contract''s');

-- functions -----------------------------------------------------------------------------------
select function_returns('public', 'hitl_open_case', array['jsonb'], 'jsonb');
select function_returns('public', 'hitl_answer', array['uuid'], 'jsonb');
select function_returns('public', 'hitl_close_session', array['uuid', 'text', 'jsonb'], 'jsonb');
select function_returns('public', 'hitl_expire_sessions', array[]::text[], 'integer');
select function_returns('public', 'hitl_purge', array['interval'], 'jsonb');
select function_returns('public', 'hitl_is_operator', array[]::text[], 'boolean');
select volatility_is('public', 'hitl_is_operator', array[]::text[], 'stable',
  'hitl_is_operator is stable');
select is_definer('public', 'hitl_open_case', array['jsonb'],
  'hitl_open_case runs with its owner''s rights (one transaction across RLS tables)');
select has_view('public', 'hitl_stats', 'the hitl_stats view exists');
select columns_are('public', 'hitl_stats',
  array['invocations', 'answered', 'timed_out', 'expired', 'waiting', 'failed_or_cancelled',
        'avg_response_ms', 'p50_response_ms', 'p90_response_ms', 'p99_response_ms',
        'success_rate', 'timeout_rate'],
  'hitl_stats reports invocations, response times and rates');

-- triggers ------------------------------------------------------------------------------------
select has_trigger('public', 'messages', 'hitl_on_message', 'messages broadcast on insert');
select trigger_is('public', 'messages', 'hitl_on_message', 'public', 'hitl_on_message');
select has_trigger('public', 'cases', 'hitl_on_case_opened', 'relay cases broadcast case_opened');
select has_trigger('public', 'hil_sessions', 'hitl_on_session_change', 'session changes broadcast');
select has_trigger('public', 'hil_audit', 'hitl_audit_append_only', 'the audit log is append-only');

-- row-level security on every table -------------------------------------------------------------
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity),
  null, 'row-level security is enabled on every public table');
select policies_are('public', 'cases', array['hitl_operators_read_cases', 'hitl_operators_claim_cases'],
  'cases: operators read, and claim (a trigger lets the claim columns alone change)');
select policies_are('public', 'messages',
  array['hitl_operators_read_messages', 'hitl_operators_insert_messages'],
  'messages: operators read and insert');
select policies_are('public', 'hil_case_secrets', array[]::name[],
  'hil_case_secrets has no policy: only the service role reads it');
select policies_are('public', 'hil_audit', array[]::name[],
  'hil_audit has no policy: only the service role reads it');
select policy_cmd_is('public', 'messages', 'hitl_operators_insert_messages', 'insert',
  'operators may only insert messages');
select policy_roles_are('public', 'cases', 'hitl_operators_read_cases', array['authenticated'],
  'the cases policy applies to authenticated users only');

-- the Supabase stand-ins (supabase/local) ---------------------------------------------------------
select has_role('anon');
select has_role('authenticated');
select has_role('service_role');
select ok((select rolbypassrls from pg_roles where rolname = 'service_role'),
  'service_role bypasses row-level security');
select ok((select rolcanlogin and not rolinherit from pg_roles where rolname = 'authenticator'),
  'authenticator logs in and does not inherit');
select is_member_of('authenticated', 'authenticator');
select function_returns('auth', 'uid', array[]::text[], 'uuid');
select function_returns('auth', 'jwt', array[]::text[], 'jsonb');
select columns_are('realtime', 'messages',
  array['topic', 'extension', 'payload', 'event', 'private', 'updated_at', 'inserted_at', 'id',
        'binary_payload'],
  'realtime.messages has Supabase''s columns');
select is((select c.relkind::text from pg_class c where c.oid = 'realtime.messages'::regclass), 'p',
  'realtime.messages is partitioned (by day, as Realtime partitions it)');
select table_owner_is('realtime', 'messages', 'supabase_realtime_admin',
  'realtime.messages belongs to supabase_realtime_admin, not to the migration role');
select ok(not (select rolsuper from pg_roles where rolname = current_user),
  'these tests run as a role that is not a superuser, like postgres on a hosted project');
select col_is_pk('realtime', 'messages', array['id', 'inserted_at'],
  'realtime.messages is keyed by (id, inserted_at) like Supabase''s');
select function_returns('realtime', 'send', array['jsonb', 'text', 'text', 'boolean'], 'void');
select function_returns('realtime', 'broadcast_changes',
  array['text', 'text', 'text', 'text', 'text', 'record', 'record', 'text'], 'void');
select function_returns('realtime', 'topic', array[]::text[], 'text');
select policies_are('realtime', 'messages', array['hitl_operators_receive', 'hitl_operators_send'],
  'realtime.messages: operators receive and send');

select * from finish();
rollback;
