// PostgREST reads through supabase-js, with RLS deciding who sees what.
//   operator: filters (in, eq, gte, order, limit, single) over two cases the test created
//   anon / non-operator user: the same query returns [] (RLS), not an error
//   service role: sees the cases
//   errors: unknown column -> 42703/400; unknown table -> PGRST205/404; single() on 2 rows -> PGRST116/406
//   secrets: an operator reading hil_case_secrets gets nothing
import { client, env, run } from '../lib/harness.mjs'

const shape = (r) => ({ data: r.data, error: r.error, status: r.status, count: r.count ?? null })

run(async () => {
  const ids = [env('HITL_CASE_ID'), env('HITL_CASE_ID_2')]
  const op = await client('operator', { token: env('HITL_OPERATOR_TOKEN') })
  const user = await client('user', { token: env('HITL_USER_TOKEN') })
  const anon = await client('anon')
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY') })
  const cols = 'id,title,status,priority,urgency,source'
  const list = (c) => c.from('cases').select(cols).in('id', ids).order('priority', { ascending: false })
  return {
    ids,
    operator: {
      list: shape(await list(op)),
      eq_single: shape(await op.from('cases').select(cols).eq('id', ids[0]).single()),
      gte_limit: shape(await op.from('cases').select('id,priority').in('id', ids).gte('priority', 1).order('priority').limit(1)),
      neq: shape(await op.from('cases').select('id').in('id', ids).neq('id', ids[0])),
      count: shape(await op.from('cases').select('id', { count: 'exact', head: true }).in('id', ids)),
      bad_column: shape(await op.from('cases').select('id,no_such_column').in('id', ids)),
      bad_table: shape(await op.from('no_such_table').select('*')),
      single_of_two: shape(await op.from('cases').select('id').in('id', ids).single()),
      secrets: shape(await op.from('hil_case_secrets').select('*').in('case_id', ids)),
    },
    anon: { list: shape(await list(anon)) },
    user: { list: shape(await list(user)) },
    service: { list: shape(await list(service)) },
  }
})
