// PostgREST as hosted Supabase runs it, through supabase-js.
//   service role: unfiltered delete/update -> 21000 "… requires a WHERE clause" (pg-safeupdate)
//   a random three-part bearer -> PGRST301 "JWT cryptographic operation failed"
import { client, env, run } from '../lib/harness.mjs'

const shape = (r) => ({ data: r.data, error: r.error, status: r.status })

run(async () => {
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY') })
  const random = 'quifquirndsjagnrgniur.fonvoienqhhdj.iuqvnvhojah'
  const bad = await client('bad', { extra: { global: { headers: { Authorization: `Bearer ${random}` } } } })
  return {
    delete_all: shape(await service.from('hil_audit').delete()),
    update_all: shape(await service.from('cases').update({ priority: 1 })),
    random_token: shape(await bad.from('cases').select('id')),
  }
})
