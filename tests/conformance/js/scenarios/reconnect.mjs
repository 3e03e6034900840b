// Server restart: the client reconnects and rejoins on its own.
//   O (operator, private case:<id>, ack + self) subscribes, then prints step "subscribed"; the
//   test stops the server (sockets closed with 1001) and starts a new one on the same port.
//   O must report CHANNEL_ERROR, reconnect (phoenix backoff 1 s, 2 s, ...), rejoin ->
//   SUBSCRIBED again, and then broadcasts (ack + self) and database broadcasts flow again.
import { client, env, record, run, step, subscribe, waitFor } from '../lib/harness.mjs'

const subscribedCount = (rec) => rec.statuses.filter((s) => s.status === 'SUBSCRIBED').length

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const caseId = env('HITL_CASE_ID')
  const topic = `case:${caseId}`
  const o = await client('operator', { token: env('HITL_OPERATOR_TOKEN'), vsn })
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY') })
  const rec = {}
  const ch = record(o.channel(topic, { config: { private: true, broadcast: { ack: true, self: true } } }), rec)
  const first = await subscribe(ch, rec)
  if (first.status !== 'SUBSCRIBED') throw new Error(`subscribe: ${first.status} ${first.error ?? ''}`)
  step('subscribed')
  await waitFor(() => subscribedCount(rec) >= 2, 'a second SUBSCRIBED after the restart', 15000)
  rec.send_after = await ch.send({ type: 'broadcast', event: 'after-restart', payload: { n: 1 } })
  await waitFor(() => rec.broadcasts.some((m) => m.event === 'after-restart'), 'self broadcast after the restart')
  const row = await service
    .from('messages')
    .insert({ case_id: caseId, sender_type: 'ai', content: 'still there?', kind: 'note' })
    .select('id')
    .single()
  if (row.error) throw new Error(`insert after restart: ${JSON.stringify(row.error)}`)
  await waitFor(
    () => rec.broadcasts.some((m) => m.event === 'message' && m.payload?.id === row.data.id),
    'database broadcast after the restart',
  )
  return { vsn, topic, operator: rec, row: row.data }
})
