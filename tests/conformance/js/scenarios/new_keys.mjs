// The new API keys through the unmodified supabase-js, as an operators' app would use them.
//   publishable key alone      -> REST as anon: cases [] (RLS); a private join is refused
//   publishable key + session  -> REST and a private join as the operator
//   secret key                 -> REST as the service role: both cases
//   no key at all (plain fetch)-> the gateway's 401 before PostgREST
import { client, env, run, subscribe } from '../lib/harness.mjs'

const shape = (r) => ({ data: r.data, error: r.error, status: r.status })

run(async () => {
  const ids = [env('HITL_CASE_ID'), env('HITL_CASE_ID_2')]
  const publishable = env('SUPABASE_PUBLISHABLE_KEY')
  const anon = await client('publishable', { key: publishable })
  const op = await client('operator', { key: publishable, token: env('HITL_OPERATOR_TOKEN') })
  const service = await client('secret', { key: env('SUPABASE_SECRET_KEY') })
  const list = (c) => c.from('cases').select('id').in('id', ids).order('priority', { ascending: false })
  const joins = {}
  for (const [name, c] of Object.entries({ operator: op, publishable: anon })) {
    const rec = (joins[name] = {})
    const ch = c.channel(`case:${ids[0]}`, { config: { private: true } })
    const first = await subscribe(ch, rec)
    rec.first = first.status
    if (first.status !== 'SUBSCRIBED') await c.removeChannel(ch)
  }
  const bare = await fetch(`${env('SUPABASE_URL')}/rest/v1/cases?select=id`)
  return {
    ids,
    publishable: shape(await list(anon)),
    operator: shape(await list(op)),
    secret: shape(await list(service)),
    joins: { operator: joins.operator.first, publishable: joins.publishable.first },
    no_key: { status: bare.status, body: await bare.json() },
  }
})
