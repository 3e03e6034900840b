// supabase.rpc() against the relay's functions, as the service role and as others.
//   open: hitl_open_case({p}) as service role -> the case json
//   retry: the same idempotency key -> the same case, existed: true
//   bad: priority 9 -> PostgREST error object {code P0001, message "invalid priority: ...", details, hint}, status 400
//   missing: an unknown function -> PGRST202, 404
//   anon / operator: hitl_open_case is not theirs to call -> an error, nothing written
import { client, env, run } from '../lib/harness.mjs'

const shape = (r) => ({ data: r.data, error: r.error, status: r.status, statusText: r.statusText, count: r.count })

run(async () => {
  const service = await client('service', { key: env('SUPABASE_SERVICE_ROLE_KEY') })
  const anon = await client('anon')
  const op = await client('operator', { token: env('HITL_OPERATOR_TOKEN') })
  const call = env('HITL_CALL_ID')
  const p = {
    case_id: env('HITL_CASE_ID'),
    question: 'Can we waive the late fee for order 1234?',
    context: 'Caller is a long-time customer; fee is 12 EUR.',
    mcp_session_id: `mcp-${call}`,
    retell_call_id: call,
    retell_agent_id: 'agent_js_conformance',
    caller_info: { name: 'Ada', phone: '+15550100' },
    priority: 4,
    urgency: 'high',
    conversation_history: [
      { role: 'user', content: 'I was charged a late fee.' },
      { role: 'agent', content: 'Let me check with a colleague.' },
    ],
    timeout_seconds: 30,
  }
  const open = shape(await service.rpc('hitl_open_case', { p }))
  const retry = shape(await service.rpc('hitl_open_case', { p: { ...p, case_id: env('HITL_CASE_ID_2') } }))
  const bad = shape(await service.rpc('hitl_open_case', { p: { ...p, retell_call_id: `${call}-bad`, priority: 9 } }))
  const missing = shape(await service.rpc('hitl_no_such_function', { x: 1 }))
  const asAnon = shape(await anon.rpc('hitl_open_case', { p: { ...p, retell_call_id: `${call}-anon` } }))
  const asOperator = shape(await op.rpc('hitl_open_case', { p: { ...p, retell_call_id: `${call}-op` } }))
  return { input: p, open, retry, bad, missing, anon: asAnon, operator: asOperator }
})
