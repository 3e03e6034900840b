// Broadcast on a private case channel between two operators.
//   A: config {broadcast: {ack: true, self: true}}   B: default config (ack false, self false)
//   1. A sends P1 -> send() resolves 'ok' only after the server's ack; A (self) and B receive P1.
//   2. B sends P2 -> resolves 'ok' at once (no ack); A receives P2.
//   3. A sends P3 (ack); B receives P3. B must never have received its own P2 (self: false);
//      P3 reaching B after P2 was fanned out is the barrier for that check.
// A uses REALTIME_VSN, B uses REALTIME_VSN_B (default: the same), so V2<->V1 fan-out is covered.
import { client, env, obs, record, run, subscribe, waitFor } from '../lib/harness.mjs'

const seen = (rec, marker) => rec.broadcasts.find((m) => m.payload?.marker === marker)

run(async () => {
  const vsnA = env('REALTIME_VSN', '2.0.0')
  const vsnB = env('REALTIME_VSN_B', vsnA)
  const topic = `case:${env('HITL_CASE_ID')}`
  const a = await client('a', { token: env('HITL_OPERATOR_TOKEN'), vsn: vsnA })
  const b = await client('b', { token: env('HITL_OPERATOR2_TOKEN'), vsn: vsnB })
  const recA = {}
  const recB = {}
  const chA = record(a.channel(topic, { config: { private: true, broadcast: { ack: true, self: true } } }), recA)
  const chB = record(b.channel(topic, { config: { private: true } }), recB)
  const [sa, sb] = await Promise.all([subscribe(chA, recA), subscribe(chB, recB)])
  if (sa.status !== 'SUBSCRIBED' || sb.status !== 'SUBSCRIBED') {
    throw new Error(`subscribe: A ${sa.status} ${sa.error ?? ''} / B ${sb.status} ${sb.error ?? ''}`)
  }
  const sent = {
    p1: { marker: 'p1', text: 'héllo ✓ 🚀 "quoted" \\ back', n: 42, f: 1.5, neg: -7, t: true, nil: null, nested: { arr: [1, '2', null, false, { deep: ['x'] }] }, long: 'x'.repeat(2000) },
    p2: { marker: 'p2', from: 'b', empty: {}, list: [] },
    p3: { marker: 'p3', last: true },
  }
  const results = {}
  results.p1 = await chA.send({ type: 'broadcast', event: 'note', payload: sent.p1 })
  await waitFor(() => seen(recA, 'p1') && seen(recB, 'p1'), 'P1 at A (self) and B')
  results.p2 = await chB.send({ type: 'broadcast', event: 'Note-B', payload: sent.p2 })
  await waitFor(() => seen(recA, 'p2'), 'P2 at A')
  results.p3 = await chA.send({ type: 'broadcast', event: 'note', payload: sent.p3 })
  await waitFor(() => seen(recB, 'p3'), 'P3 at B')
  return { topic, vsn_a: vsnA, vsn_b: vsnB, sent, results, a: recA, b: recB }
})
