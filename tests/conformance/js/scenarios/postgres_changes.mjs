// postgres_changes, as an operators' app built on supabase-js listens to cases and messages.
//   1. operator O, a signed-in non-operator U and anon A each subscribe to INSERTs on
//      public.cases and public.messages; O also subscribes with `filter: priority=eq.5` on a
//      second channel, and to a table that does not exist on a third.
//   2. all wait for the server's system messages (Subscribed to PostgreSQL / the error).
//   3. the service role opens two cases through the relay's RPC (priority 2, then 5); O answers
//      the second through REST under RLS, like the console does.
//   4. O must receive both cases and the answer; the filtered channel only the priority-5 case.
//   5. barrier for U and A: a self-broadcast on their channel comes back after everything O got.
// Inputs: HITL_CASE_INPUT_LOW / HITL_CASE_INPUT_HIGH (hitl_open_case arguments, JSON).
import { client, env, poke, record, run, subscribe, waitFor } from '../lib/harness.mjs'

const rand = () => Math.random().toString(16).slice(2, 10)
const pgEvents = (rec) => rec.changes

function watch(c, topic, bindings, rec) {
  rec.changes = []
  const ch = record(c.channel(topic, { config: { broadcast: { self: true, ack: true } } }), rec)
  for (const b of bindings) {
    ch.on('postgres_changes', b, (payload) => {
      rec.changes.push(payload)
      poke()
    })
  }
  return ch
}

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const op = await client('operator', { token: env('HITL_OPERATOR_TOKEN'), vsn })
  const user = await client('user', { token: env('HITL_USER_TOKEN'), vsn })
  const anon = await client('anon', { vsn })
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY'), vsn })
  const both = [
    { event: 'INSERT', schema: 'public', table: 'cases' },
    { event: 'INSERT', schema: 'public', table: 'messages' },
  ]
  const recO = {}
  const recU = {}
  const recA = {}
  const recF = {}
  const recM = {}
  const topics = { operator: `pc-o-${rand()}`, filtered: `pc-f-${rand()}`, missing: `pc-m-${rand()}` }
  const chO = watch(op, topics.operator, both, recO)
  const chU = watch(user, `pc-u-${rand()}`, both, recU)
  const chA = watch(anon, `pc-a-${rand()}`, both, recA)
  const chF = watch(op, topics.filtered, [{ event: 'INSERT', schema: 'public', table: 'cases', filter: 'priority=eq.5' }], recF)
  const chM = watch(op, topics.missing, [{ event: 'INSERT', schema: 'public', table: 'no_such_table' }], recM)
  const subs = await Promise.all([
    subscribe(chO, recO),
    subscribe(chU, recU),
    subscribe(chA, recA),
    subscribe(chF, recF),
    subscribe(chM, recM),
  ])
  for (const s of subs) if (s.status !== 'SUBSCRIBED') throw new Error(`subscribe: ${s.status} ${s.error ?? ''}`)
  for (const [rec, name] of [[recO, 'operator'], [recU, 'user'], [recA, 'anon'], [recF, 'filtered'], [recM, 'missing']]) {
    await waitFor(() => rec.system.some((m) => m.extension === 'postgres_changes'), `${name}: postgres_changes system message`)
  }

  const low = await service.rpc('hitl_open_case', { p: JSON.parse(env('HITL_CASE_INPUT_LOW')) })
  if (low.error) throw new Error(`rpc low: ${JSON.stringify(low.error)}`)
  const high = await service.rpc('hitl_open_case', { p: JSON.parse(env('HITL_CASE_INPUT_HIGH')) })
  if (high.error) throw new Error(`rpc high: ${JSON.stringify(high.error)}`)
  const answer = await op
    .from('messages')
    .insert({ case_id: high.data.case_id, sender_type: 'human', sender_id: env('HITL_OPERATOR_ID'), content: 'Waive it.', kind: 'answer' })
    .select('id')
    .single()
  if (answer.error) throw new Error(`operator insert: ${JSON.stringify(answer.error)}`)

  await waitFor(() => pgEvents(recO).length >= 3, 'the operator: two cases and the answer')
  await waitFor(() => pgEvents(recF).length >= 1, 'the filtered channel: one case')
  for (const [ch, rec, name] of [[chU, recU, 'user'], [chA, recA, 'anon'], [chF, recF, 'filtered']]) {
    rec.barrier = await ch.send({ type: 'broadcast', event: 'barrier', payload: { b: 1 } })
    await waitFor(() => rec.broadcasts.some((m) => m.event === 'barrier'), `${name}: barrier broadcast`)
  }
  return {
    vsn,
    topics,
    cases: { low: low.data.case_id, high: high.data.case_id },
    answer_id: answer.data.id,
    operator: recO,
    user: recU,
    anon: recA,
    filtered: recF,
    missing: recM,
  }
})
