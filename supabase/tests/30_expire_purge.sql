-- hitl_expire_sessions (pg_cron, every minute) and hitl_purge (pg_cron, daily) as plain functions:
-- expire touches only overdue waiting sessions and open relay cases past their answerable window;
-- purge drops only old finished relay cases and old audit rows.
begin;
select plan(23);

-- realtime.messages belongs to supabase_realtime_admin: the migration role may not delete from
-- it (Realtime's janitor drops whole daily partitions). A mark hides what was there before.
create temp table rt_mark (id uuid primary key);
create function pg_temp.rt_mark() returns void language sql as $$
  insert into rt_mark select id from realtime.messages on conflict do nothing
$$;
create temp view rt as
  select * from realtime.messages m where not exists (select 1 from rt_mark k where k.id = m.id);

-- cases: c1 open, answerable for a while; c2 open, past its window; c3 answered, past its window;
-- c4 a platform case (not the relay's) past its expires_at; c5 open, within its window.
insert into public.cases (id, source, status, description, created_at, expires_at) values
  ('c0000000-0000-0000-0000-000000000001', 'mcp_voice', 'open', 'q1', now() - interval '2 minutes', now() + interval '58 minutes'),
  ('c0000000-0000-0000-0000-000000000002', 'mcp_voice', 'open', 'q2', now() - interval '2 hours', now() - interval '1 hour'),
  ('c0000000-0000-0000-0000-000000000003', 'mcp_voice', 'answered', 'q3', now() - interval '2 hours', now() - interval '1 hour'),
  ('c0000000-0000-0000-0000-000000000004', 'crm', 'open', 'q4', now() - interval '2 hours', now() - interval '1 hour'),
  ('c0000000-0000-0000-0000-000000000005', 'mcp_voice', 'open', 'q5', now(), now() + interval '1 hour');
-- sessions: s1 waiting past its deadline (its relay died); s2 waiting on the case past its window
-- but within its own deadline; s3 answered long ago; s5 waiting within its deadline.
insert into public.hil_sessions (id, mcp_session_id, retell_call_id, case_id, idempotency_key, status, created_at, expires_at) values
  ('50000000-0000-0000-0000-000000000001', 'm', 'c', 'c0000000-0000-0000-0000-000000000001', 'k1', 'waiting', now() - interval '2 minutes', now() - interval '90 seconds'),
  ('50000000-0000-0000-0000-000000000002', 'm', 'c', 'c0000000-0000-0000-0000-000000000002', 'k2', 'waiting', now() - interval '10 seconds', now() + interval '20 seconds'),
  ('50000000-0000-0000-0000-000000000003', 'm', 'c', 'c0000000-0000-0000-0000-000000000003', 'k3', 'answered', now() - interval '2 hours', now() - interval '2 hours'),
  ('50000000-0000-0000-0000-000000000005', 'm', 'c', 'c0000000-0000-0000-0000-000000000005', 'k5', 'waiting', now(), now() + interval '30 seconds');
select pg_temp.rt_mark();

select is(public.hitl_expire_sessions(), 3, 'one case and two sessions expire');
select results_eq(
  $$select id::text, status from public.hil_sessions order by id$$,
  $$values ('50000000-0000-0000-0000-000000000001', 'expired'),
           ('50000000-0000-0000-0000-000000000002', 'expired'),
           ('50000000-0000-0000-0000-000000000003', 'answered'),
           ('50000000-0000-0000-0000-000000000005', 'waiting')$$,
  'overdue waiting sessions and sessions of an expired case expire; the others stay');
select is((select closed_at from public.hil_sessions where id = '50000000-0000-0000-0000-000000000001'), now(),
  'an expired session records when it closed');
select results_eq(
  $$select id::text, status from public.cases order by id$$,
  $$values ('c0000000-0000-0000-0000-000000000001', 'open'),
           ('c0000000-0000-0000-0000-000000000002', 'expired'),
           ('c0000000-0000-0000-0000-000000000003', 'answered'),
           ('c0000000-0000-0000-0000-000000000004', 'open'),
           ('c0000000-0000-0000-0000-000000000005', 'open')$$,
  'only the open relay case past its window expires; a case whose call gave up stays answerable');
select results_eq(
  $$select topic, event, payload ->> 'status' from pg_temp.rt order by topic$$,
  $$values ('case:c0000000-0000-0000-0000-000000000001', 'session', 'expired'),
           ('case:c0000000-0000-0000-0000-000000000002', 'session', 'expired')$$,
  'each expired session is broadcast on its case topic');
select results_eq(
  $$select action, outcome, count(*)::int from public.hil_audit group by 1, 2 order by 1$$,
  $$values ('expire_case', 'expired', 1), ('expire_session', 'expired', 2)$$,
  'expiry is audited as the cron''s');
select is(public.hitl_expire_sessions(), 0, 'a second run changes nothing');

-- purge -------------------------------------------------------------------------------------------
-- old (40 days) relay cases: p1 answered, p2 expired with messages, p3 open, p4 timed out but with a
-- waiting session (retried), p6 a platform case; recent: p5 answered yesterday.
insert into public.cases (id, source, status, description, created_at, expires_at) values
  ('d0000000-0000-0000-0000-000000000001', 'mcp_voice', 'answered', 'p1', now() - interval '40 days', now() - interval '40 days'),
  ('d0000000-0000-0000-0000-000000000002', 'mcp_voice', 'expired', 'p2', now() - interval '40 days', now() - interval '40 days'),
  ('d0000000-0000-0000-0000-000000000003', 'mcp_voice', 'open', 'p3', now() - interval '40 days', now() + interval '1 day'),
  ('d0000000-0000-0000-0000-000000000004', 'mcp_voice', 'answered', 'p4', now() - interval '40 days', now() - interval '40 days'),
  ('d0000000-0000-0000-0000-000000000005', 'mcp_voice', 'answered', 'p5', now() - interval '1 day', now() - interval '1 day'),
  ('d0000000-0000-0000-0000-000000000006', 'crm', 'closed', 'p6', now() - interval '40 days', null);
insert into public.hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key, status, created_at, expires_at) values
  ('m', 'c', 'd0000000-0000-0000-0000-000000000002', 'kp2', 'expired', now() - interval '40 days', now() - interval '40 days'),
  ('m', 'c', 'd0000000-0000-0000-0000-000000000004', 'kp4', 'waiting', now() - interval '40 days', now() + interval '30 seconds');
insert into public.hil_case_secrets (case_id, webhook_secret) values ('d0000000-0000-0000-0000-000000000002', 's');
insert into public.messages (case_id, sender_type, content, kind) values
  ('d0000000-0000-0000-0000-000000000002', 'ai', 'old note', 'note');
insert into public.hil_audit (at, actor, action) values (now() - interval '40 days', 'relay', 'old');
-- (only rows in a partition Realtime keeps: yesterday to three days ahead)
insert into realtime.messages (topic, extension, event, payload, inserted_at) values
  ('case:new', 'broadcast', 'message', '{}', now() - interval '1 day');
create temp table counts_before as
  select (select count(*) from public.hil_audit) as audit, (select count(*) from pg_temp.rt) as rt;

create temp table purged as select public.hitl_purge(interval '30 days') as r;
select is((select (r ->> 'cases')::int from purged), 2, 'two old finished relay cases are purged');
select ok(not exists (select 1 from public.cases where id in
  ('d0000000-0000-0000-0000-000000000001', 'd0000000-0000-0000-0000-000000000002')),
  'old answered and expired relay cases are gone');
select is((select count(*)::int from public.messages where case_id = 'd0000000-0000-0000-0000-000000000002'), 0,
  'their messages are gone');
select is((select count(*)::int from public.hil_sessions where case_id = 'd0000000-0000-0000-0000-000000000002'), 0,
  'their sessions are gone');
select is((select count(*)::int from public.hil_case_secrets where case_id = 'd0000000-0000-0000-0000-000000000002'), 0,
  'their secrets are gone');
select ok(exists (select 1 from public.cases where id = 'd0000000-0000-0000-0000-000000000003'),
  'an old case still open is kept');
select ok(exists (select 1 from public.cases where id = 'd0000000-0000-0000-0000-000000000004'),
  'an old case with a waiting session is kept');
select ok(exists (select 1 from public.cases where id = 'd0000000-0000-0000-0000-000000000005'),
  'a recent answered case is kept');
select ok(exists (select 1 from public.cases where id = 'd0000000-0000-0000-0000-000000000006'),
  'the platform''s own old cases are never purged');
select is((select (r ->> 'audit')::int from purged), 1, 'the old audit row is purged');
select is((select count(*) from public.hil_audit), (select audit - 1 from counts_before),
  'recent audit rows are kept');
-- as on a hosted project, the migration role may not delete from realtime.messages: the purge
-- skips it (Realtime's janitor drops partitions older than 72 hours) and says so with null
select is((select r -> 'realtime_messages' from purged), 'null'::jsonb,
  'without delete on realtime.messages the purge reports null for them');
select is((select array_agg(topic) from pg_temp.rt where topic = 'case:new'),
  array['case:new'], 'and leaves realtime.messages alone');
select ok((select count(*) from public.cases where id::text like 'c0%') = 5,
  'cases from the expiry fixture (recent) are all kept');

select throws_ok($$select public.hitl_purge(interval '5 minutes')$$, 'P0001',
  'invalid p_older_than: must be at least 1 hour', 'purging recent rows is refused');
select throws_ok($$select public.hitl_purge(null)$$, 'P0001',
  'invalid p_older_than: must be at least 1 hour', 'a null interval is refused');

select * from finish();
rollback;
