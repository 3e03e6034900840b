// Private channel authorisation on join.
//   operator (accessToken option)     -> SUBSCRIBED
//   anon key only                      -> CHANNEL_ERROR "Unauthorized: You do not have permissions to read from this Channel topic: case:<id>"
//   authenticated but not an operator  -> CHANNEL_ERROR, same reason
//   anon on the PUBLIC channel of the same name -> SUBSCRIBED (public and private topics are distinct)
//   heartbeat: realtime.sendHeartbeat() on the operator's socket -> the callback sees 'sent', 'ok'
import { client, env, poke, run, subscribe, waitFor } from '../lib/harness.mjs'

run(async () => {
  const vsn = env('REALTIME_VSN', '2.0.0')
  const topic = `case:${env('HITL_CASE_ID')}`
  const roles = {
    operator: await client('operator', { token: env('HITL_OPERATOR_TOKEN'), vsn }),
    anon: await client('anon', { vsn }),
    user: await client('user', { token: env('HITL_USER_TOKEN'), vsn }),
  }
  const result = {}
  const channels = {}
  // Joins run concurrently: refusals come after the server's error backoff (5 s on Supabase).
  await Promise.all(
    Object.entries(roles).map(async ([name, c]) => {
      const rec = (result[name] = {})
      const ch = (channels[name] = c.channel(topic, { config: { private: true } }))
      const first = await subscribe(ch, rec)
      rec.first = first.status
      rec.error = first.error ?? null
      // phoenix rejoins a refused channel after 1 s; leave it so the script ends cleanly.
      if (first.status !== 'SUBSCRIBED') await c.removeChannel(ch)
    }),
  )
  const pub = await client('anon_public', { vsn })
  const pubRec = (result.anon_public = {})
  const first = await subscribe(pub.channel(topic), pubRec)
  pubRec.first = first.status
  pubRec.error = first.error ?? null
  // Heartbeat on demand (the client's own timer fires only every 25 s).
  const beats = []
  roles.operator.realtime.onHeartbeat((status) => {
    beats.push(status)
    poke()
  })
  roles.operator.realtime.sendHeartbeat()
  await waitFor(() => beats.some((b) => b !== 'sent'), 'heartbeat reply')
  result.heartbeat = beats
  result.topic = topic
  result.vsn = vsn
  return result
})
