// Database broadcasts: rows inserted into public.messages reach subscribers of the private
// channel `case:<case_id>` as event `message` with the contract payload and `meta.id`.
//   1. operator O subscribes to private case:<id>; an anon client subscribes to the PUBLIC
//      channel of the same name (must receive nothing: database broadcasts are private).
//   2. the service role inserts an `ai` message through REST (insert().select().single()).
//   3. the operator inserts a `human` answer through REST under RLS, like the console does.
//   4. O must receive both, in commit order; the payloads must equal the rows REST returned.
//   5. barrier for the public listener: an anon self-broadcast on the public channel comes back.
import { client, env, record, run, subscribe, waitFor } from '../lib/harness.mjs'

const FIELDS = 'id,case_id,sender_type,sender_id,content,kind,created_at'
const got = (rec, id) => rec.broadcasts.find((m) => m.event === 'message' && m.payload?.id === id)

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const caseId = env('HITL_CASE_ID')
  const topic = `case:${caseId}`
  const op = await client('operator', { token: env('HITL_OPERATOR_TOKEN'), vsn })
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY'), vsn })
  const anon = await client('anon_public', { vsn })
  const recO = {}
  const recP = {}
  const chO = record(op.channel(topic, { config: { private: true } }), recO)
  const chP = record(anon.channel(topic, { config: { broadcast: { self: true, ack: true } } }), recP)
  const [so, sp] = await Promise.all([subscribe(chO, recO), subscribe(chP, recP)])
  if (so.status !== 'SUBSCRIBED' || sp.status !== 'SUBSCRIBED') {
    throw new Error(`subscribe: operator ${so.status} ${so.error ?? ''} / public ${sp.status} ${sp.error ?? ''}`)
  }

  const ai = await service
    .from('messages')
    .insert({ case_id: caseId, sender_type: 'ai', content: 'Which account do you mean?', kind: 'clarification' })
    .select(FIELDS)
    .single()
  if (ai.error) throw new Error(`service insert: ${JSON.stringify(ai.error)}`)
  const human = await op
    .from('messages')
    .insert({ case_id: caseId, sender_type: 'human', sender_id: env('HITL_OPERATOR_ID'), content: 'Yes — the 2nd one, «ok» ✓', kind: 'answer' })
    .select(FIELDS)
    .single()
  if (human.error) throw new Error(`operator insert: ${JSON.stringify(human.error)}`)

  await waitFor(() => got(recO, ai.data.id) && got(recO, human.data.id), 'both message broadcasts at the operator')
  const order = recO.broadcasts.filter((m) => m.event === 'message').map((m) => m.payload.id)
  recP.barrier = await chP.send({ type: 'broadcast', event: 'barrier', payload: { b: 1 } })
  await waitFor(() => recP.broadcasts.some((m) => m.event === 'barrier'), 'public barrier broadcast')
  return {
    vsn,
    topic,
    rows: { ai: ai.data, human: human.data },
    statuses: { ai: ai.status, human: human.status },
    order,
    operator: recO,
    public: recP,
  }
})
