// Token changes on a joined private channel (the `access_token` push).
//   R: createClient(url, anon, {accessToken: cb}); subscribe -> SUBSCRIBED.
//      cb switches to a fresh operator token; realtime.setAuth() pushes it; R keeps working
//      (ack + self broadcast round trip). cb switches to an EXPIRED token; setAuth() pushes it;
//      the server sends system {status: "error", message: "Token has expired <n> seconds ago"}
//      and closes the channel -> CLOSED.
//   M: createClient(url, anon, {global: {headers: {Authorization}}}) + realtime.setAuth(op).
//      supabase-js re-reads its own token source on connect and after the join (no session ->
//      the anon key) and sends that, so the join is refused (CHANNEL_ERROR) or, if the operator
//      token won the race, the channel is revoked (system error + CLOSED). This is why
//      the console must use the accessToken option, not setAuth(token).
import { client, env, record, run, subscribe, waitFor } from '../lib/harness.mjs'

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const topic = `case:${env('HITL_CASE_ID')}`
  let token = env('HITL_OPERATOR_TOKEN')
  const r = client('refresh', { token: async () => token, vsn })
  const recR = {}
  const chR = record(r.channel(topic, { config: { private: true, broadcast: { ack: true, self: true } } }), recR)
  const sr = await subscribe(chR, recR)
  if (sr.status !== 'SUBSCRIBED') throw new Error(`R subscribe: ${sr.status} ${sr.error ?? ''}`)

  token = env('HITL_OPERATOR2_TOKEN')
  await r.realtime.setAuth()
  recR.after_refresh_send = await chR.send({ type: 'broadcast', event: 'after-refresh', payload: { ok: 1 } })
  await waitFor(() => recR.broadcasts.some((m) => m.event === 'after-refresh'), 'self broadcast after a token refresh')

  token = env('HITL_EXPIRED_OPERATOR_TOKEN')
  await r.realtime.setAuth()
  await waitFor(() => recR.statuses.some((s) => s.status === 'CLOSED'), 'channel closed after an expired token')

  const op = env('HITL_OPERATOR_TOKEN')
  const m = client('manual', { vsn, extra: { global: { headers: { Authorization: `Bearer ${op}` } } } })
  await m.realtime.setAuth(op)
  const recM = {}
  const chM = record(m.channel(topic, { config: { private: true } }), recM)
  const sm = await subscribe(chM, recM)
  // Either the join already carries the anon key (refused) or the anon key follows the join
  // (revoked); both are the real client's behaviour, and neither leaves the channel usable.
  await waitFor(
    () => recM.statuses.some((s) => s.status === 'CLOSED' || s.status === 'CHANNEL_ERROR'),
    'manual-token channel refused or closed',
    12000,
  )
  if (recM.statuses.some((s) => s.status === 'CHANNEL_ERROR')) await m.removeChannel(chM)
  recM.first = sm.status
  return { vsn, topic, refresh: recR, manual: recM }
})
