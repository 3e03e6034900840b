-- hitl_case_replies: the batched catch-up read. Per case that has a reply, {case_id} plus what
-- hitl_case_reply returns for it (an answer wins over a clarification); the rest left out; at
-- most 500 ids; the service role's only.
begin;
select plan(12);

select public.hitl_open_case(jsonb_build_object(
  'case_id', id, 'question', 'Refund allowed?',
  'mcp_session_id', 'm', 'retell_call_id', 'c-' || id, 'retell_agent_id', 'a', 'timeout_seconds', 30))
  from (values ('dddddddd-0000-0000-0000-00000000000a'::uuid), ('dddddddd-0000-0000-0000-00000000000b'),
               ('dddddddd-0000-0000-0000-00000000000c'), ('dddddddd-0000-0000-0000-00000000000d')) v(id);

select has_function('public', 'hitl_case_replies', array['uuid[]'], 'hitl_case_replies(uuid[]) exists');
select is(public.hitl_case_replies(array['dddddddd-0000-0000-0000-00000000000a'::uuid,
                                         'dddddddd-0000-0000-0000-00000000ffff']),
  '[]'::jsonb, 'a case without a reply and an unknown case are left out');
select is(public.hitl_case_replies(array[]::uuid[]), '[]'::jsonb, 'no ids: an empty array');

-- a: answered; b: a pending question back; c: asked back, then answered; d: nothing.
insert into public.messages (case_id, sender_type, sender_id, content, kind) values
  ('dddddddd-0000-0000-0000-00000000000a', 'human', 'cccccccc-0000-0000-0000-000000000001', 'Yes.', 'answer'),
  ('dddddddd-0000-0000-0000-00000000000b', 'human', 'cccccccc-0000-0000-0000-000000000001', 'Which order?', 'clarification'),
  ('dddddddd-0000-0000-0000-00000000000c', 'human', 'cccccccc-0000-0000-0000-000000000001', 'Which order?', 'clarification');
insert into public.messages (case_id, sender_type, sender_id, content, kind) values
  ('dddddddd-0000-0000-0000-00000000000c', 'human', 'cccccccc-0000-0000-0000-000000000001', 'No.', 'answer');

create temp table got as select public.hitl_case_replies(array[
  'dddddddd-0000-0000-0000-00000000000d', 'dddddddd-0000-0000-0000-00000000000c',
  'dddddddd-0000-0000-0000-00000000000b', 'dddddddd-0000-0000-0000-00000000000a']::uuid[]) as r;

select is((select jsonb_array_length(r) from got), 3, 'one entry per case that has a reply');
select is((select array_agg(e ->> 'case_id' order by e ->> 'case_id') from got, jsonb_array_elements(r) e),
  array['dddddddd-0000-0000-0000-00000000000a', 'dddddddd-0000-0000-0000-00000000000b',
        'dddddddd-0000-0000-0000-00000000000c'],
  'each entry names its case; the case without a reply is left out');
select is((select jsonb_agg(e - 'case_id' order by e ->> 'case_id') from got, jsonb_array_elements(r) e),
  jsonb_build_array(public.hitl_case_reply('dddddddd-0000-0000-0000-00000000000a'),
                    public.hitl_case_reply('dddddddd-0000-0000-0000-00000000000b'),
                    public.hitl_case_reply('dddddddd-0000-0000-0000-00000000000c')),
  'each entry is exactly what hitl_case_reply returns for its case');
select is((select e -> 'answer' ->> 'content' from got, jsonb_array_elements(r) e
            where e ->> 'case_id' = 'dddddddd-0000-0000-0000-00000000000a'), 'Yes.',
  'an answered case: its answer');
select is((select array[e -> 'clarification' ->> 'content', e ->> 'answer']
             from got, jsonb_array_elements(r) e
            where e ->> 'case_id' = 'dddddddd-0000-0000-0000-00000000000b'),
  array['Which order?', null], 'a case asked back: its pending clarification, no answer');
select is((select array[e -> 'answer' ->> 'content', e ->> 'clarification']
             from got, jsonb_array_elements(r) e
            where e ->> 'case_id' = 'dddddddd-0000-0000-0000-00000000000c'),
  array['No.', null], 'an answer wins over a clarification');

select is(jsonb_array_length(public.hitl_case_replies(array[
    'dddddddd-0000-0000-0000-00000000000a', 'dddddddd-0000-0000-0000-00000000000a', null]::uuid[])),
  1, 'a repeated id is read once, a null id is ignored');

select throws_ok(
  $$select public.hitl_case_replies((select array_agg(gen_random_uuid()) from generate_series(1, 501)))$$,
  'P0001', 'invalid p_case_ids: must hold at most 500 case ids', 'at most 500 ids per call');

select ok(has_function_privilege('service_role', 'public.hitl_case_replies(uuid[])', 'execute')
          and not has_function_privilege('anon', 'public.hitl_case_replies(uuid[])', 'execute')
          and not has_function_privilege('authenticated', 'public.hitl_case_replies(uuid[])', 'execute'),
  'the service role may call it, anonymous and operator users may not');

select * from finish();
rollback;
