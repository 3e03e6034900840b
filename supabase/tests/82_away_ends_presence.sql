-- Going away (hitl_operator_heartbeat('away')) ends an operator's presence for claims at once:
-- their claims are released and others may take the cases; availability ends at that moment;
-- the next available heartbeat starts a new interval rather than covering the time away.
begin;
select plan(12);

create function pg_temp.as_operator(p_uid text) returns void language plpgsql as $$
begin
  perform set_config('request.jwt.claims', jsonb_build_object(
    'sub', p_uid, 'role', 'authenticated',
    'app_metadata', jsonb_build_object('hitl_role', 'operator'))::text, true);
  perform set_config('request.jwt.claim.sub', p_uid, true);
  set local role authenticated;
end;
$$;
create function pg_temp.changed(p_sql text) returns integer language plpgsql as $$
declare n integer;
begin
  execute p_sql;
  get diagnostics n = row_count;
  return n;
end;
$$;

select public.hitl_open_case(jsonb_build_object(
  'case_id', 'c2000000-0000-0000-0000-000000000001', 'question', 'Refund 30 euros?',
  'mcp_session_id', 'm', 'retell_call_id', 'away-1', 'retell_agent_id', 'a', 'priority', 3,
  'timeout_seconds', 60));
-- ada has been available for five minutes (her last beat 10 s ago); grace is available now
insert into public.operator_activity (operator_id, started_at, last_seen_at) values
  ('0c000000-0000-0000-0000-000000000001', now() - interval '5 minutes', now() - interval '10 seconds');

select pg_temp.as_operator('0c000000-0000-0000-0000-000000000002');
select public.hitl_operator_heartbeat('available');
reset role;
select pg_temp.as_operator('0c000000-0000-0000-0000-000000000001');
select is(pg_temp.changed($$update public.cases set claimed_by = '0c000000-0000-0000-0000-000000000001'
  where id = 'c2000000-0000-0000-0000-000000000001'$$), 1, 'ada claims the case');
select is((public.hitl_operator_heartbeat('away') ->> 'released_claims')::int, 1,
  'going away releases her claim in the same call');
reset role;

select is(public.hitl_operator_present('0c000000-0000-0000-0000-000000000001'), false,
  'ada is not present the moment she goes away (not 90 s later)');
select is(public.hitl_operator_present('0c000000-0000-0000-0000-000000000002'), true,
  'grace, who did not, still is');
select is((select claimed_by from public.cases where id = 'c2000000-0000-0000-0000-000000000001'), null,
  'the case is unclaimed');
select is((select count(*)::int from public.hil_audit
            where case_id = 'c2000000-0000-0000-0000-000000000001' and action = 'release'), 1,
  'the release is audited (and broadcast, by hitl_on_claim)');
select is((select last_seen_at from public.operator_activity
            where operator_id = '0c000000-0000-0000-0000-000000000001' and status = 'available'),
  now(), 'her availability ends when she went away, not at her last beat');
select is((select status from public.operator_activity
            where operator_id = '0c000000-0000-0000-0000-000000000001'
            order by last_seen_at desc, id desc limit 1), 'away', 'going away is recorded');

-- A claim held by ada before she went away, restored by hand, is not live: others may take it.
update public.cases set claimed_by = '0c000000-0000-0000-0000-000000000001', claimed_at = now(),
       claim_expires_at = now() + interval '2 minutes'
 where id = 'c2000000-0000-0000-0000-000000000001';
select is(public.hitl_claim_live('0c000000-0000-0000-0000-000000000001', now() + interval '2 minutes'),
  false, 'an away operator''s unexpired claim is not live');
select pg_temp.as_operator('0c000000-0000-0000-0000-000000000002');
select is(pg_temp.changed($$update public.cases set claimed_by = '0c000000-0000-0000-0000-000000000002'
  where id = 'c2000000-0000-0000-0000-000000000001'$$), 1, 'grace takes it over at once');
reset role;

-- Back from away: a new availability interval, not the old one stretched over the absence.
select pg_temp.as_operator('0c000000-0000-0000-0000-000000000001');
select public.hitl_operator_heartbeat('available');
reset role;
select is((select count(*)::int from public.operator_activity
            where operator_id = '0c000000-0000-0000-0000-000000000001' and status = 'available'), 2,
  'the available beat after going away starts a new interval');
select is(public.hitl_operator_present('0c000000-0000-0000-0000-000000000001'), true,
  'and she is present again');

select * from finish();
rollback;
