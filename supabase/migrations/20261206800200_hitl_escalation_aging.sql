-- Escalation ages a waiting case: priority 1 callers no longer time out behind everyone else.
--
-- Measured on the real stack (scripts/bench operators --real, 20 operators, 1,000 calls in 10
-- minutes, docs/benchmarks.md): with the queue ordered by priority and each case escalated once,
-- 44 of the 47 timeouts of a run were priority-1 cases (40 % of them), 35 of those never claimed:
-- escalated once (1 → 2) after 30 s, they still sat behind every fresher case of priority 2-5,
-- whose callers were claimed within 1-4 s. Now:
-- * a case still unclaimed escalates AGAIN each time it has waited its (new) priority's
--   threshold since its last escalation, up to priority 5: its priority grows with its wait, so
--   an old low-priority case overtakes fresh higher-priority ones instead of starving;
-- * the thresholds are shorter for the low priorities: 5 s for priority 5, 8 s for 4, and 10 s
--   for 3, 2 and 1 (they were 12, 20 and 30 s). A priority-1 case unclaimed for 10 s becomes 2,
--   at 20 s 3, at 30 s 4, at 38 s 5.
-- * the outbox (Slack, e-mail) gets one notification per case and reason, as before; the repeats
--   raise the priority and alert the consoles only.
-- The "claimed and near its deadline" rule is unchanged (once per case). A project that set its
-- own thresholds keeps them: only the previous default is replaced.

update public.hil_settings
   set value = '{"5": 5, "4": 8, "3": 10, "2": 10, "1": 10}'::jsonb, updated_at = now()
 where key = 'escalate_unclaimed_seconds'
   and value = '{"5": 5, "4": 8, "3": 12, "2": 20, "1": 30}'::jsonb;

-- Escalate what waits too long: a case unclaimed past its priority's threshold (again after each
-- threshold, until priority 5), or claimed and unanswered close to its caller's deadline (once).
-- Each escalation: priority + 1 (at most 5) and a console alert (`escalated` on operators); the
-- first of each reason also queues a notification in the outbox.
-- Safe to call from several places at once (pg_cron, every relay): locked rows are skipped.
create or replace function public.hitl_escalate() returns integer
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  v_unclaimed jsonb := public.hitl_setting('escalate_unclaimed_seconds', '{}');
  v_before int := (public.hitl_setting('escalate_before_deadline_seconds', '10') #>> '{}')::int;
  r record;
  v_reason text;
  n integer := 0;
  v_payload jsonb;
begin
  -- Claims that lapsed (their time, or their holder's heartbeat) are released here, so every
  -- console hears the release (hitl_on_claim) within one round instead of judging it alone.
  update public.cases c set claimed_by = null, claimed_at = null, claim_expires_at = null
   where c.source = 'mcp_voice' and c.status = 'open' and c.claimed_by is not null
     and not public.hitl_claim_live(c.claimed_by, c.claim_expires_at);
  for r in
    select c.id, c.priority, c.created_at, c.claimed_by, c.claim_expires_at, c.escalated_for,
           c.escalated_at,
           c.description, c.metadata ->> 'retell_call_id' as call_id,
           (select max(h.expires_at) from public.hil_sessions h
             where h.case_id = c.id and h.status = 'waiting') as deadline
      from public.cases c
     where c.source = 'mcp_voice' and c.status = 'open' and c.answer_message_id is null
       and (c.expires_at is null or c.expires_at > now())
     order by c.priority desc, c.created_at
       for update of c skip locked
  loop
    v_reason := null;
    if not public.hitl_claim_live(r.claimed_by, r.claim_expires_at)
       and (not ('unclaimed' = any (r.escalated_for)) or r.priority < 5)
       and v_unclaimed ? r.priority::text
       and now() - greatest(r.created_at, r.escalated_at)
           >= make_interval(secs => (v_unclaimed ->> r.priority::text)::int) then
      v_reason := 'unclaimed';
    elsif public.hitl_claim_live(r.claimed_by, r.claim_expires_at)
       and not ('deadline' = any (r.escalated_for))
       and r.deadline is not null and r.deadline > now()
       and r.deadline - now() <= make_interval(secs => v_before) then
      v_reason := 'deadline';
    end if;
    continue when v_reason is null;
    update public.cases
       set priority = least(5, priority + 1), escalated_at = now(),
           escalation_level = escalation_level + 1,
           escalated_for = case when v_reason = any (escalated_for) then escalated_for
                                else escalated_for || v_reason end
     where id = r.id;
    v_payload := jsonb_build_object(
      'case_id', r.id, 'reason', v_reason, 'priority', least(5, r.priority + 1),
      'previous_priority', r.priority, 'claimed_by', r.claimed_by, 'deadline_at', r.deadline,
      'question', r.description, 'retell_call_id', r.call_id, 'escalated_at', now());
    perform realtime.send(v_payload, 'escalated', 'operators', true);
    perform realtime.send(v_payload, 'escalated', 'case:' || r.id::text, true);
    if not (v_reason = any (r.escalated_for)) then
      insert into public.hil_notifications (case_id, reason, payload) values (r.id, v_reason, v_payload);
    end if;
    insert into public.hil_audit (actor, action, case_id, outcome, detail)
    values ('escalation', 'escalate', r.id, v_reason, v_payload);
    n := n + 1;
  end loop;
  return n;
end;
$$;
revoke all on function public.hitl_escalate() from public, anon, authenticated;
grant execute on function public.hitl_escalate() to service_role;
