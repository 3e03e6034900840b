// Presence on the private `operators` channel between two operators.
//   A (key op-a) and B (key op-b) subscribe and track(); A must see B join (join event + sync
//   state), B must see A in its state; then B's socket disconnects without untrack/leave and A
//   must see B leave.
import { client, elapsed, env, obs, poke, run, subscribe, waitFor } from '../lib/harness.mjs'

function watch(channel, rec) {
  rec.events = []
  for (const event of ['sync', 'join', 'leave']) {
    channel.on('presence', { event }, (p) => {
      rec.events.push({ event, t: elapsed(), key: p?.key, new: p?.newPresences, left: p?.leftPresences })
      poke()
    })
  }
  return channel
}
const keys = (ch) => Object.keys(ch.presenceState()).sort()

run(async () => {
  const vsnA = env('REALTIME_VSN', '2.0.0')
  const vsnB = env('REALTIME_VSN_B', vsnA)
  const a = await client('a', { token: env('HITL_OPERATOR_TOKEN'), vsn: vsnA })
  const b = await client('b', { token: env('HITL_OPERATOR2_TOKEN'), vsn: vsnB })
  const recA = {}
  const recB = {}
  const chA = watch(a.channel('operators', { config: { private: true, presence: { key: 'op-a' } } }), recA)
  const chB = watch(b.channel('operators', { config: { private: true, presence: { key: 'op-b' } } }), recB)
  const sa = await subscribe(chA, recA)
  if (sa.status !== 'SUBSCRIBED') throw new Error(`A subscribe: ${sa.status} ${sa.error ?? ''}`)
  recA.track = await chA.track({ name: 'Operator A', online_at: '2026-01-01T00:00:00Z' })
  await waitFor(() => keys(chA).includes('op-a'), 'A sees itself in presence state')
  const sb = await subscribe(chB, recB)
  if (sb.status !== 'SUBSCRIBED') throw new Error(`B subscribe: ${sb.status} ${sb.error ?? ''}`)
  recB.track = await chB.track({ name: 'Operator B', langs: ['en', 'fr'] })
  await waitFor(() => keys(chA).includes('op-b'), 'A sees op-b join')
  await waitFor(() => keys(chB).includes('op-a') && keys(chB).includes('op-b'), 'B sees op-a and op-b')
  recA.state_after_join = chA.presenceState()
  recB.state_after_join = chB.presenceState()
  recB.untrack = await chB.untrack()
  await waitFor(() => !keys(chA).includes('op-b'), 'A sees op-b untrack')
  recA.state_after_untrack = chA.presenceState()
  recB.retrack = await chB.track({ name: 'Operator B', langs: ['en', 'fr'], back: true })
  await waitFor(() => chA.presenceState()['op-b']?.[0]?.back === true, 'A sees op-b track again')
  const leavesBefore = recA.events.filter((e) => e.event === 'leave' && e.key === 'op-b').length
  await b.realtime.disconnect() // the socket closes; no phx_leave, no untrack
  await waitFor(() => !keys(chA).includes('op-b'), 'A sees op-b leave')
  await waitFor(
    () => recA.events.filter((e) => e.event === 'leave' && e.key === 'op-b').length > leavesBefore,
    'A leave event for op-b after the disconnect',
  )
  recA.state_after_leave = chA.presenceState()
  return { vsn_a: vsnA, vsn_b: vsnB, a: recA, b: recB }
})
