// Realtime's per-project join rate as supabase-js meets it, on a stack whose limit is small.
//   HITL_JOINS public channels subscribed at once on one socket -> the first joins SUBSCRIBED,
//   then one CHANNEL_ERROR "ClientJoinRateLimitReached: Too many joins per second"
//   (realtime_channel.ex join/3 after limit_joins/2), and the server closes the whole socket
//   (a Phoenix "disconnect" broadcast: close code 1001), every channel on it with it.
import { client, env, obs, run, subscribe, waitFor } from '../lib/harness.mjs'

const REFUSAL = 'ClientJoinRateLimitReached'

run(async () => {
  const n = Number(env('HITL_JOINS'))
  const c = await client('burst')
  const recs = Array.from({ length: n }, () => ({}))
  recs.forEach((rec, i) => subscribe(c.channel(`burst-${i}`), rec))
  const refused = await waitFor(
    () => recs.flatMap((r) => r.statuses ?? []).find((s) => s.error?.startsWith(REFUSAL)),
    'a join refused for the rate',
    15000,
  )
  const closed = await waitFor(
    () => (obs.frames.burst ?? []).find((f) => f.dir === 'close'),
    'the socket closed by the server',
    15000,
  )
  return {
    refused,
    close: { code: closed.code, reason: closed.reason },
    subscribed_before: recs.filter((r) => r.statuses?.[0]?.status === 'SUBSCRIBED' && r.statuses[0].t <= refused.t).length,
  }
})
