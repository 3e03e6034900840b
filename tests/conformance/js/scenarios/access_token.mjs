// Token changes on a joined private channel (the `access_token` push).
//   R: createClient(url, anon, {accessToken: cb}); subscribe -> SUBSCRIBED.
//      cb switches to a fresh operator token; realtime.setAuth() pushes it; R keeps working
//      (ack + self broadcast round trip). cb switches to an EXPIRED token; setAuth() pushes it;
//      the server sends system {status: "error", message: "Token has expired <n> seconds ago"}
//      and closes the channel -> CLOSED.
import { client, env, record, run, subscribe, waitFor } from '../lib/harness.mjs'

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const topic = `case:${env('HITL_CASE_ID')}`
  let token = env('HITL_OPERATOR_TOKEN')
  const r = await client('refresh', { token: async () => token, vsn })
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

  return { vsn, topic, refresh: recR }
})
