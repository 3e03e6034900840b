// REST broadcast with channel.httpSend() (POST /realtime/v1/api/broadcast/<topic>/events/<event>).
//   operator S (channel never subscribed) httpSend on private case:<id> -> {success: true};
//   subscriber O (operator, private) receives it with the payload intact.
//   anon httpSend on the same private topic -> rejected (the server answers 403 "Unauthorized"),
//   and O receives nothing from it (barrier: a second operator httpSend arrives after it).
//   send() on the never-joined channel falls back to the batch endpoint POST /api/broadcast
//   (deprecated, still shipped) -> 'ok'; O receives it.
import { client, env, record, run, subscribe, waitFor } from '../lib/harness.mjs'

const has = (rec, marker) => rec.broadcasts.find((m) => m.payload?.marker === marker)

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const topic = `case:${env('HITL_CASE_ID')}`
  const o = await client('subscriber', { token: env('HITL_OPERATOR_TOKEN'), vsn })
  const s = await client('sender', { token: env('HITL_OPERATOR2_TOKEN') })
  const anon = await client('anon')
  const recO = {}
  const chO = record(o.channel(topic, { config: { private: true } }), recO)
  const so = await subscribe(chO, recO)
  if (so.status !== 'SUBSCRIBED') throw new Error(`subscribe: ${so.status} ${so.error ?? ''}`)

  const payload = { marker: 'h1', text: 'via REST ✓', nested: { n: [1, 2, 3] } }
  const sendCh = s.channel(topic, { config: { private: true } })
  const first = await sendCh.httpSend('rest-note', payload).then((v) => ({ value: v }), (e) => ({ error: e.message }))
  await waitFor(() => has(recO, 'h1'), 'REST broadcast at the subscriber')

  const anonCh = anon.channel(topic, { config: { private: true } })
  const denied = await anonCh.httpSend('rest-note', { marker: 'anon' }).then((v) => ({ value: v }), (e) => ({ error: e.message }))
  const second = await sendCh.httpSend('rest-note', { marker: 'h2' }).then((v) => ({ value: v }), (e) => ({ error: e.message }))
  await waitFor(() => has(recO, 'h2'), 'second REST broadcast at the subscriber')
  const fallback = await sendCh.send({ type: 'broadcast', event: 'rest-note', payload: { marker: 'h3' } })
  await waitFor(() => has(recO, 'h3'), 'batch REST broadcast (send() fallback) at the subscriber')
  return { vsn, topic, sent: payload, results: { first, denied, second, fallback }, subscriber: recO }
})
