// PostgREST as hosted Supabase runs it, through supabase-js.
//   service role: unfiltered delete/update -> 21000 "… requires a WHERE clause" (pg-safeupdate)
//   a random three-part bearer -> PGRST301 "JWT cryptographic operation failed"
//   .rollback() (Prefer: tx=rollback) on an insert -> ignored: the row is committed
//   a signed-in non-operator's message insert -> 42501 "new row violates row-level security …"
import { client, env, run } from '../lib/harness.mjs'

const shape = (r) => ({ data: r.data, error: r.error, status: r.status })
const subject = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).sub

run(async () => {
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY') })
  const random = 'quifquirndsjagnrgniur.fonvoienqhhdj.iuqvnvhojah'
  const bad = await client('bad', { extra: { global: { headers: { Authorization: `Bearer ${random}` } } } })
  const user = await client('user', { token: env('HITL_USER_TOKEN') })
  const message = {
    case_id: env('HITL_CASE_ID'),
    sender_type: 'human',
    sender_id: subject(env('HITL_USER_TOKEN')),
    content: 'not mine to answer',
  }
  return {
    delete_all: shape(await service.from('hil_audit').delete()),
    update_all: shape(await service.from('cases').update({ priority: 1 })),
    random_token: shape(await bad.from('cases').select('id')),
    rollback: shape(
      await service.from('hil_audit').insert({ actor: 'js', action: 'tx-rollback' }).select('action').rollback(),
    ),
    rls_denied: shape(await user.from('messages').insert(message)),
  }
})
