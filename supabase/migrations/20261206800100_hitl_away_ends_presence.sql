-- Going away ends an operator's presence for claims at once.
--
-- hitl_operator_heartbeat('away') recorded nothing, so an operator who went away stayed
-- "present" (hitl_operator_present) until their last available heartbeat was
-- claim_presence_seconds (90 s) old: their claims held, and nobody else could take those cases,
-- unless the console also called hitl_release_claims. Now 'away':
-- * ends the current availability interval now (availability counts up to the moment they left,
--   not to their last beat),
-- * records an `away` row in operator_activity (the operator's newest row), and
-- * releases the operator's claims, as hitl_release_claims does (every console hears it).
-- Presence is the operator's newest operator_activity row being `available` and recent, so an
-- away operator is not present, and their next available heartbeat starts a new interval
-- instead of stretching the old one over the time they were away. Utilisation still reads only
-- the `available` rows.

create or replace function public.hitl_operator_present(p_operator uuid) returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce((
    select a.status = 'available'
           and a.last_seen_at >= now() - make_interval(
                 secs => (public.hitl_setting('claim_presence_seconds', '90') #>> '{}')::int)
      from public.operator_activity a
     where a.operator_id = p_operator
     order by a.last_seen_at desc, a.id desc
     limit 1), false)
$$;
revoke all on function public.hitl_operator_present(uuid) from public, anon;
grant execute on function public.hitl_operator_present(uuid) to authenticated, service_role;

create or replace function public.hitl_operator_heartbeat(p_status text default 'available')
returns jsonb
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_uid uuid := auth.uid();
  a public.operator_activity;
  v_released integer;
begin
  if not public.hitl_is_operator() or v_uid is null then
    raise exception using errcode = '42501', message = 'only operators record availability';
  end if;
  if p_status not in ('available', 'away') then
    perform public.hitl_invalid('p_status', 'must be available or away');
  end if;
  -- The operator's newest row: an available interval still running (seen within 90 s) is
  -- extended or ended; an `away` row or an old interval means the next beat starts a new one.
  select * into a from public.operator_activity
   where operator_id = v_uid
   order by last_seen_at desc, id desc limit 1 for update;
  if not found or a.status <> 'available' or a.last_seen_at < now() - interval '90 seconds' then
    a := null;
  end if;
  if p_status = 'away' then
    if a.id is not null then
      update public.operator_activity set last_seen_at = now() where id = a.id;
    end if;
    insert into public.operator_activity (operator_id, status) values (v_uid, 'away');
    update public.cases set claimed_by = null, claimed_at = null, claim_expires_at = null
     where claimed_by = v_uid and source = 'mcp_voice' and status = 'open';
    get diagnostics v_released = row_count;
    return jsonb_build_object('operator_id', v_uid, 'status', 'away', 'interval_id', a.id,
                              'released_claims', v_released);
  end if;
  if a.id is not null then
    update public.operator_activity set last_seen_at = now() where id = a.id returning * into a;
  else
    insert into public.operator_activity (operator_id) values (v_uid) returning * into a;
  end if;
  return jsonb_build_object('operator_id', v_uid, 'status', 'available', 'interval_id', a.id,
                            'started_at', a.started_at, 'last_seen_at', a.last_seen_at);
end;
$$;
revoke all on function public.hitl_operator_heartbeat(text) from public, anon;
grant execute on function public.hitl_operator_heartbeat(text) to authenticated, service_role;
