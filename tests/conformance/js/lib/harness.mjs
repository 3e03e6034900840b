// Shared plumbing for the supabase-js conformance scenarios.
//
// Each scenario is a small Node 22 program that drives the UNMODIFIED @supabase/supabase-js
// against a Supabase URL (the devstack in tests, a real project if you point it there), prints
// exactly one JSON line of observations on stdout and exits on its own. Assertions live in
// tests/conformance/test_supabase_js.py; the scripts only observe.
//
// Inputs (environment):
//   SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY
//   HITL_OPERATOR_TOKEN, HITL_OPERATOR_ID        an operator user's JWT and its `sub`
//   HITL_OPERATOR2_TOKEN                         a second operator (presence, fan-out)
//   HITL_USER_TOKEN                              an authenticated user who is NOT an operator
//   HITL_EXPIRED_OPERATOR_TOKEN                  an operator token whose exp is in the past
//   HITL_CASE_ID, HITL_CASE_ID_2                 cases created by the test (uuid)
//   REALTIME_VSN / REALTIME_VSN_B                serializer of client A / B: "2.0.0" (default) or "1.0.0"
//   SCENARIO_TIMEOUT_MS                          hard deadline for the whole script (default 20000)
//
// Output: zero or more `{"step": name}` lines (see `step`), then one line
// `{"ok": true, ...observations}` (exit 0), or `{"ok": false, "error": ...,
// "partial": {...}}` (exit 1) when a wait timed out or something threw. The `frames` array is a
// passive tap of every WebSocket frame each client sent and received (tokens redacted).

import { createClient } from '@supabase/supabase-js'

const started = Date.now()
export const env = (name, fallback) => {
  const v = process.env[name]
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback
    throw new Error(`missing environment variable ${name}`)
  }
  return v
}

// Observations accumulate here; `finish` prints them, a failure prints them as `partial`.
export const obs = { node: process.version, frames: {} }

// ---- event-driven waiting (no sleeps) ------------------------------------------------------
const waiters = new Set()
/** Re-check every pending `waitFor` predicate; call after recording anything. */
export function poke() {
  for (const w of [...waiters]) {
    let v
    try {
      v = w.pred()
    } catch (e) {
      waiters.delete(w)
      clearTimeout(w.timer)
      w.reject(e)
      continue
    }
    if (v) {
      waiters.delete(w)
      clearTimeout(w.timer)
      w.resolve(v)
    }
  }
}
/** Resolve with the predicate's first truthy value; reject after `ms` naming `what`. */
export function waitFor(pred, what, ms = 8000) {
  return new Promise((resolve, reject) => {
    const w = { pred, resolve, reject }
    w.timer = setTimeout(() => {
      waiters.delete(w)
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`))
    }, ms)
    waiters.add(w)
    poke()
  })
}
/** Resolve when the promise settles, or with `onTimeout` after `ms` (for best-effort cleanup). */
export function within(promise, ms, onTimeout = 'timed out') {
  let t
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((resolve) => {
      t = setTimeout(() => resolve(onTimeout), ms)
    }),
  ])
}

// ---- wire tap ------------------------------------------------------------------------------
// supabase-js builds its realtime socket on Node's native WebSocket; after createClient the
// phoenix socket's transport class is swapped for a subclass that only records frames, so the
// client runs with its default options and its own WebSocket behaviour.
const NativeWebSocket = globalThis.WebSocket
if (!NativeWebSocket) throw new Error('this Node has no global WebSocket: run Node 22+')
const JWT_RE = /eyJ[\w-]+\.[\w-]+\.[\w-]+/g
// Tokens are replaced by the name of their role, so frames show WHICH token was sent.
const TOKEN_NAMES = Object.fromEntries(
  [
    ['SUPABASE_ANON_KEY', 'anon'],
    ['SUPABASE_SERVICE_ROLE_KEY', 'service_role'],
    ['HITL_OPERATOR_TOKEN', 'operator'],
    ['HITL_OPERATOR2_TOKEN', 'operator2'],
    ['HITL_USER_TOKEN', 'user'],
    ['HITL_EXPIRED_OPERATOR_TOKEN', 'expired_operator'],
  ]
    .filter(([k]) => process.env[k])
    .map(([k, name]) => [process.env[k], `<${name}>`]),
)
const redact = (s) => s.replace(JWT_RE, (t) => TOKEN_NAMES[t] ?? '<jwt>')
const textDecoder = new TextDecoder()

function decodeBinary(buf) {
  const v = new DataView(buf)
  const b = new Uint8Array(buf)
  const kind = v.getUint8(0)
  const str = (o, n) => textDecoder.decode(b.subarray(o, o + n))
  if (kind === 3) {
    // client -> server USER_BROADCAST_PUSH
    const [jr, r, t, e, m, enc] = [1, 2, 3, 4, 5, 6].map((i) => v.getUint8(i))
    let o = 7
    const join_ref = str(o, jr); o += jr
    const ref = str(o, r); o += r
    const topic = str(o, t); o += t
    const event = str(o, e); o += e
    const meta = str(o, m); o += m
    const body = b.subarray(o)
    return { kind, join_ref, ref, topic, event, meta, encoding: enc, payload: enc === 1 ? JSON.parse(textDecoder.decode(body)) : `<${body.length} bytes>` }
  }
  if (kind === 4) {
    // server -> client USER_BROADCAST
    const [t, e, m, enc] = [1, 2, 3, 4].map((i) => v.getUint8(i))
    let o = 5
    const topic = str(o, t); o += t
    const event = str(o, e); o += e
    const meta = str(o, m); o += m
    const body = b.subarray(o)
    return { kind, topic, event, meta, encoding: enc, payload: enc === 1 ? JSON.parse(textDecoder.decode(body)) : `<${body.length} bytes>` }
  }
  return { kind, length: buf.byteLength }
}

function summarise(dir, data) {
  if (typeof data === 'string') {
    let msg
    try {
      msg = JSON.parse(redact(data))
    } catch {
      return { dir, fmt: 'text', unparsable: data.slice(0, 200) }
    }
    if (Array.isArray(msg)) {
      const [join_ref, ref, topic, event, payload] = msg
      return { dir, fmt: 'v2', join_ref, ref, topic, event, payload }
    }
    return { dir, fmt: 'v1', ...msg }
  }
  const buf = data instanceof ArrayBuffer ? data : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
  return { dir, fmt: 'binary', ...decodeBinary(buf) }
}

/** A native WebSocket subclass that records every frame under `label` in `obs.frames`. */
function tapTransport(label) {
  const list = (obs.frames[label] ??= [])
  return class TapWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols)
      obs.urls = obs.urls ?? {}
      obs.urls[label] = redact(String(url))
      list.push({ t: Date.now() - started, dir: 'connect' })
      this.addEventListener('message', (ev) => {
        list.push({ t: Date.now() - started, ...summarise('in', ev.data) })
        poke()
      })
      this.addEventListener('close', (ev) => {
        list.push({ t: Date.now() - started, dir: 'close', code: ev.code, reason: ev.reason })
        poke()
      })
    }
    send(data) {
      list.push({ t: Date.now() - started, ...summarise('out', data) })
      return super.send(data)
    }
  }
}

// ---- clients -------------------------------------------------------------------------------
const clients = []
/**
 * A supabase-js client created the documented way.
 *   role 'anon' | 'service': createClient(url, key[, {realtime: {vsn}}])
 *   a JWT: createClient(url, anonKey, {accessToken: async () => jwt}) — supabase-js's option for
 *   tokens minted outside Supabase Auth; it authorises both REST and Realtime.
 * `label` names the client's frames in `obs.frames`. Realtime options stay default except vsn
 * when it is "1.0.0".
 *
 * With a token, this waits for `realtime.setAuth()` before returning: supabase-js hands the
 * accessToken result to realtime in a fire-and-forget promise, and a subscribe() issued in the
 * same tick as createClient sends its phx_join WITHOUT access_token (so the server would judge
 * the anon key). An app that subscribes later never sees this; a script must wait.
 */
export async function client(label, { key, token, vsn = '2.0.0', extra = {} } = {}) {
  const url = env('SUPABASE_URL')
  const options = { ...extra }
  if (vsn !== '2.0.0') options.realtime = { ...(options.realtime ?? {}), vsn }
  if (token !== undefined) options.accessToken = typeof token === 'function' ? token : async () => token
  const c = createClient(url, key ?? env('SUPABASE_ANON_KEY'), options)
  const socket = c.realtime.socketAdapter.getSocket()
  if (socket.transport !== NativeWebSocket) throw new Error('realtime transport is not the native WebSocket')
  socket.transport = tapTransport(label) // created lazily on the first subscribe()
  clients.push(c)
  if (token !== undefined) await c.realtime.setAuth()
  return c
}

/**
 * subscribe() and record every status; resolves on the first status. `rec.statuses` keeps the
 * full list ({status, error}) so later CLOSED/CHANNEL_ERROR transitions are visible.
 */
export function subscribe(channel, rec) {
  rec.statuses = rec.statuses ?? []
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      const entry = { status, t: Date.now() - started }
      if (err) entry.error = err.message
      // Reported during the script's own cleanup (leave), not by the scenario itself. A flag, not
      // a timestamp comparison: main's end and the first cleanup status can share a millisecond.
      if (cleaningUp) entry.cleanup = true
      rec.statuses.push(entry)
      poke()
      resolve(entry)
    })
  })
}

/** Record every broadcast (any event) and system message a channel receives. */
export function record(channel, rec) {
  rec.broadcasts = rec.broadcasts ?? []
  rec.system = rec.system ?? []
  channel.on('broadcast', { event: '*' }, (msg) => {
    rec.broadcasts.push(msg)
    poke()
  })
  channel.on('system', {}, (msg) => {
    rec.system.push(msg)
    poke()
  })
  return channel
}

/**
 * Tell the test a step was reached: one `{"step": name}` line on stdout before the final line.
 * The test may act on it (restart the server) while the script keeps waiting on events.
 */
export function step(name) {
  process.stdout.write(JSON.stringify({ step: name }) + '\n')
}

export function elapsed() {
  return Date.now() - started
}

// ---- lifecycle -----------------------------------------------------------------------------
let done = false
let cleaningUp = false
function emit(obj, code) {
  if (done) return
  done = true
  obj.elapsed_ms = Date.now() - started
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code))
}

async function closeAll() {
  // Leave politely (phx_leave + socket close); never let cleanup hold the process.
  await within(Promise.allSettled(clients.map((c) => c.removeAllChannels())), 1500)
}

/** Run `main`, then print the observations and exit. */
export function run(main) {
  const timeoutMs = Number(process.env.SCENARIO_TIMEOUT_MS ?? 20000)
  const watchdog = setTimeout(() => {
    emit({ ok: false, error: `scenario exceeded ${timeoutMs} ms`, partial: obs }, 2)
  }, timeoutMs)
  main()
    .then(async (result) => {
      Object.assign(obs, result ?? {})
      obs.main_done_ms = Date.now() - started // what follows is the scripts' own cleanup (leave)
      cleaningUp = true
      await closeAll()
      clearTimeout(watchdog)
      emit({ ok: true, ...obs }, 0)
    })
    .catch(async (e) => {
      cleaningUp = true
      await closeAll()
      clearTimeout(watchdog)
      emit({ ok: false, error: String(e?.message ?? e), stack: e?.stack, partial: obs }, 1)
    })
}
