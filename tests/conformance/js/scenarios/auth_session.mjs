// The operators' console flow: sign in with Supabase Auth (email + password), then REST and
// Realtime run under the session's access token with no token plumbing by the app.
//   wrong password -> AuthApiError 400 invalid_credentials "Invalid login credentials"
//   right password -> session; cases visible through RLS; private `operators` -> SUBSCRIBED
//   signOut -> the same select returns [] again (back to the anon key)
import { client, env, run, subscribe } from '../lib/harness.mjs'

run(async () => {
  const email = env('HITL_OPERATOR_EMAIL')
  const password = env('HITL_OPERATOR_PASSWORD')
  const caseId = env('HITL_CASE_ID')
  const c = await client('console', { extra: { auth: { persistSession: false } } })
  const bad = await c.auth.signInWithPassword({ email, password: `${password}-wrong` })
  const good = await c.auth.signInWithPassword({ email, password })
  if (good.error) throw new Error(`sign-in: ${good.error.message}`)
  const session = good.data.session
  const select = async () => {
    const r = await c.from('cases').select('id').eq('id', caseId)
    return { data: r.data, error: r.error, status: r.status }
  }
  const signedIn = await select()
  const rec = {}
  const first = await subscribe(c.channel('operators', { config: { private: true } }), rec)
  const user = await c.auth.getUser()
  await c.removeAllChannels()
  const out = await c.auth.signOut()
  const signedOut = await select()
  return {
    bad: { status: bad.error?.status, code: bad.error?.code, message: bad.error?.message, session: bad.data?.session ?? null },
    session: {
      token_type: session.token_type,
      expires_in: session.expires_in,
      has_refresh_token: typeof session.refresh_token === 'string' && session.refresh_token.length > 0,
      user_email: session.user.email,
      user_id: session.user.id,
      hitl_role: session.user.app_metadata?.hitl_role ?? null,
    },
    get_user: { email: user.data.user?.email ?? null, error: user.error?.message ?? null },
    signed_in_select: signedIn,
    channel: { first: first.status, error: first.error ?? null },
    sign_out_error: out.error?.message ?? null,
    signed_out_select: signedOut,
  }
})
