-- The relay's periodic catch-up in one round trip for many cases: Realtime drops broadcasts
-- without telling any client (over a plan's messages per second, or while it has lost its
-- database connection), so a relay with calls waiting reads their cases every few seconds.
-- One entry per case that has a reply: {case_id} plus exactly what hitl_case_reply returns for
-- it (an answer wins over a clarification); cases with neither, and unknown ids, are left out.
-- At most 500 ids per call (hitl_relay.ports.CATCH_UP_BATCH_MAX): the relay sends several
-- calls when more cases wait, so one statement stays short.
create or replace function public.hitl_case_replies(p_case_ids uuid[]) returns jsonb
language plpgsql stable security definer set search_path = public, pg_temp as $$
begin
  if p_case_ids is null then
    perform public.hitl_invalid('p_case_ids', 'is required');
  end if;
  if cardinality(p_case_ids) > 500 then
    perform public.hitl_invalid('p_case_ids', 'must hold at most 500 case ids');
  end if;
  return coalesce((
    -- Most waiting cases have no reply yet: only a case with an answer or a human question back
    -- can have one, and finding those as a set (joins, not a function call per id) keeps a read
    -- of 500 waiting cases cheap; hitl_case_reply then decides for the few found.
    with ids as (
      select distinct t.id from unnest(p_case_ids) as t(id) where t.id is not null
    ), candidates as (
      select c.id from public.cases c join ids on ids.id = c.id
       where c.answer_message_id is not null
      union
      select m.case_id from public.messages m join ids on ids.id = m.case_id
       where m.sender_type = 'human' and m.kind = 'clarification'
    )
    select jsonb_agg(jsonb_build_object('case_id', k.id) || r.reply order by k.id)
      from candidates k
      cross join lateral (select public.hitl_case_reply(k.id) as reply) r
     where r.reply ->> 'answer' is not null or r.reply ->> 'clarification' is not null
  ), '[]'::jsonb);
end $$;

revoke all on function public.hitl_case_replies(uuid[]) from public, anon, authenticated;
grant execute on function public.hitl_case_replies(uuid[]) to service_role;
