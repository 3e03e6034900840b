// hitl-relay operator console: plain JavaScript on supabase-js (window.supabase), no build step.
//
// Data flow (docs/operator-guide.md has the operator's view of it):
//   sign in  → Supabase Auth (email + password) or an access token (devstack / platform-issued)
//   queue    → REST: open cases; Realtime: private `operators` channel, `case_opened` broadcasts
//   presence → track {operator_id, status: 'available'} on `operators`; the relay counts us there
//   a case   → REST: its row and messages; Realtime: private `case:<id>`, `message` and `session`
//   answer   → REST insert into `messages` as ourselves (row-level security decides)
//   activity → RPC hitl_operator_heartbeat every 30 s while available (utilisation metric)
//
// Operator-facing text is plain text: everything reaches the page through textContent or text
// nodes (the `el` helper below); nothing here ever assigns HTML.
'use strict'
;(function () {
  const CONFIG = window.HITL_CONSOLE_CONFIG
  const WARN_MS = 10_000 // the countdown turns to a warning in its last 10 s
  const TICK_MS = 250
  const HEARTBEAT_MS = 30_000
  const RECONCILE_MS = 20_000
  const MAX_CASE_CHANNELS = 90 // Supabase allows 100 channels per connection; keep headroom
  const MUTE_KEY = 'hitl.console.muted'
  const TOKEN_KEY = 'hitl.console.token'
  const AUTH_STORAGE_KEY = 'hitl-console-auth'
  const URGENCY_RANK = { high: 3, medium: 2, low: 1 }
  const OPEN = 'open'
  const CASE_COLUMNS =
    'id,title,description,status,priority,urgency,source,metadata,created_at,expires_at,answered_at,answer_message_id,' +
    'options,skills,claimed_by,claimed_at,claim_expires_at,escalation_level'
  const MESSAGE_COLUMNS = 'id,case_id,sender_type,sender_id,content,kind,created_at,option_index'
  // A claim held this long without an answer shows as idle (the holder may be stuck).
  const CLAIM_IDLE_MS = 15000
  const ANSWERED_FIRST = 'Another operator answered first; their answer was delivered and yours is kept on the case.'
  const KIND_LABEL = {
    answer: 'Answer',
    clarification: 'Asked back',
    cannot_answer: 'Cannot answer',
    note: 'Note',
  }

  const $ = (id) => document.getElementById(id)

  // ---- DOM: text only -----------------------------------------------------------------------
  const SAFE_ATTRS = new Set(['id', 'role', 'title', 'type', 'tabindex', 'datetime', 'lang'])
  /** createElement with a class, safe attributes and children (strings become text nodes). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag)
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue
      if (k === 'class') node.className = v
      else if (k === 'text') node.textContent = String(v)
      else if (k.startsWith('data-') || k.startsWith('aria-') || SAFE_ATTRS.has(k)) node.setAttribute(k, String(v))
      else throw new Error(`el(): attribute ${k} is not allowed`)
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue
      node.append(child instanceof Node ? child : document.createTextNode(String(child)))
    }
    return node
  }
  function setText(node, text) {
    node.textContent = text === null || text === undefined ? '' : String(text)
  }
  function clear(node) {
    node.replaceChildren()
  }
  function show(node, visible) {
    node.hidden = !visible
  }

  // ---- state ---------------------------------------------------------------------------------
  const state = {
    client: null,
    passwordClient: null,
    mode: null, // 'password' | 'token'
    user: null, // {id, email, exp}
    cases: new Map(), // id → case record (see caseFromRow)
    selectedId: null,
    operators: null, // the `operators` channel
    caseChannels: new Map(), // case id → channel
    timers: [],
    available: true,
    muted: false,
    audio: null,
    live: 'connecting',
    signingOut: false,
    routable: null, // case ids this operator can take (hitl_operator_queue), null until read
    routingRead: 0, // the number of the routing read `routable` came from (reads are numbered as they start)
  }

  // ---- helpers -------------------------------------------------------------------------------
  const ms = (iso) => {
    if (!iso) return null
    const t = Date.parse(iso)
    return Number.isNaN(t) ? null : t
  }
  const asObject = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {})
  const asArray = (v) => (Array.isArray(v) ? v : [])
  const asText = (v) => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v))
  const clampPriority = (p) => Math.min(5, Math.max(1, Number.parseInt(p, 10) || 3))
  const shortId = (id) => String(id || '').slice(0, 8)

  function formatRemaining(remaining) {
    const s = Math.max(0, Math.ceil(remaining / 1000))
    const m = Math.floor(s / 60)
    return `${m}:${String(s % 60).padStart(2, '0')}`
  }
  function formatAge(created) {
    if (!created) return ''
    const s = Math.max(0, Math.round((Date.now() - created) / 1000))
    if (s < 60) return `${s} s ago`
    if (s < 3600) return `${Math.floor(s / 60)} min ago`
    return `${Math.floor(s / 3600)} h ago`
  }
  function formatClock(t) {
    return t ? new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : ''
  }
  function announce(text, urgent = false) {
    const region = urgent ? $('urgent-announcer') : $('announcer')
    setText(region, '')
    // A new text node in a cleared live region is read even when the text repeats.
    window.setTimeout(() => setText(region, text), 30)
  }
  function decodeJwt(token) {
    const parts = String(token).trim().split('.')
    if (parts.length !== 3) throw new Error('this is not a JWT (three dot-separated parts expected)')
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
      const json = decodeURIComponent(
        atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
          .split('')
          .map((c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0'))
          .join(''),
      )
      return JSON.parse(json)
    } catch {
      throw new Error('the token payload is not readable JSON')
    }
  }
  /** Null when the claims are an operator's, else the reason in plain words. */
  function operatorProblem(claims) {
    if (!claims || claims.role !== 'authenticated' || !claims.sub) {
      return 'this token is not a signed-in user’s (role must be "authenticated" with a "sub")'
    }
    if (asObject(claims.app_metadata).hitl_role !== 'operator') {
      return 'this account is not an operator (its app_metadata.hitl_role must be "operator"; ask an administrator)'
    }
    if (claims.exp && claims.exp * 1000 <= Date.now()) {
      return `this token expired at ${new Date(claims.exp * 1000).toLocaleString()}`
    }
    return null
  }

  // ---- cases ---------------------------------------------------------------------------------
  function caseFromRow(row) {
    const meta = asObject(row.metadata)
    return {
      id: row.id,
      title: row.title || '',
      question: row.description || row.title || '',
      priority: clampPriority(row.priority),
      urgency: URGENCY_RANK[row.urgency] ? row.urgency : 'medium',
      source: row.source || '',
      status: row.status || OPEN,
      createdAt: ms(row.created_at),
      deadlineAt: ms(meta.deadline_at),
      expiresAt: ms(row.expires_at),
      answerId: row.answer_message_id || null,
      context: asText(meta.context),
      callerInfo: asObject(meta.caller_info),
      history: asArray(meta.conversation_history),
      thread: asArray(meta.thread),
      callId: asText(meta.retell_call_id),
      agentId: asText(meta.retell_agent_id),
      options: asArray(row.options).map(asText),
      skills: asArray(row.skills).map(asText),
      claimedBy: row.claimed_by || null,
      claimedAt: ms(row.claimed_at),
      claimExpiresAt: ms(row.claim_expires_at),
      escalationLevel: Number(row.escalation_level) || 0,
      detailed: true,
    }
  }
  function caseFromOpened(p) {
    return {
      id: p.case_id,
      title: p.title || '',
      question: p.question || p.title || '',
      priority: clampPriority(p.priority),
      urgency: URGENCY_RANK[p.urgency] ? p.urgency : 'medium',
      source: p.source || 'mcp_voice',
      status: OPEN,
      createdAt: Date.now(),
      deadlineAt: ms(p.deadline_at),
      expiresAt: ms(p.expires_at),
      answerId: null,
      context: '',
      callerInfo: {},
      history: [],
      thread: asArray(p.thread),
      callId: asText(p.retell_call_id),
      agentId: '',
      options: [],
      skills: [],
      claimedBy: null,
      claimedAt: null,
      claimExpiresAt: null,
      escalationLevel: 0,
      detailed: false,
    }
  }
  /** Merge a fresh record into the one we hold (keeps messages, session and UI bookkeeping). */
  function upsertCase(fresh) {
    const held = state.cases.get(fresh.id)
    if (!held) {
      fresh.learnedBeforeRead = routingReadsStarted + 1 // the first routing read that can know it
      fresh.messages = new Map()
      fresh.sessionStatus = null
      fresh.warned = false
      state.cases.set(fresh.id, fresh)
      return fresh
    }
    const keep = {
      messages: held.messages,
      sessionStatus: held.sessionStatus,
      warned: held.warned,
      shownAt: held.shownAt,
      learnedBeforeRead: held.learnedBeforeRead,
      createdAt: fresh.detailed ? fresh.createdAt : held.createdAt,
    }
    if (!fresh.detailed && held.detailed) return held // a late case_opened adds nothing
    if (held.answerId && !fresh.answerId) {
      // A read that started before the answer arrived must not reopen the case.
      keep.status = held.status
      keep.answerId = held.answerId
    }
    Object.assign(held, fresh, keep)
    return held
  }
  const isVoice = (c) => c.source === 'mcp_voice'
  function inQueue(c, now = Date.now()) {
    return c.status === OPEN && !(c.expiresAt && c.expiresAt <= now)
  }
  /** `waiting` (a caller is on the line), `gone`, `needs_info`, `no_operator` (asked while
   * nobody was on duty) or null (no deadline known). */
  function callerState(c, now = Date.now()) {
    if (c.status !== OPEN) return null
    if (c.sessionStatus === 'needs_info') return 'needs_info'
    if (c.sessionStatus === 'no_operator') return 'no_operator'
    if (c.sessionStatus && c.sessionStatus !== 'waiting') return 'gone'
    if (!c.deadlineAt) return null
    return c.deadlineAt > now ? 'waiting' : 'gone'
  }
  // ---- claims and routing ----------------------------------------------------------------------
  /** `mine`, `other` (someone else holds it, as far as this console knows) or null. The database
   *  decides for real (a claim also lapses when its holder stops heartbeating). */
  function claimState(c, now = Date.now()) {
    if (!c.claimedBy || (c.claimExpiresAt && c.claimExpiresAt <= now)) return null
    return state.user && c.claimedBy === state.user.id ? 'mine' : 'other'
  }
  function claimIdle(c, now = Date.now()) {
    return !!claimState(c, now) && c.claimedAt && now - c.claimedAt >= CLAIM_IDLE_MS
  }
  /** Cases this operator can take first (routing: hitl_operator_queue), then claimed ones;
   *  within each, highest priority, then nearest deadline, then oldest. */
  function byPriority(a, b) {
    const rank = (c) => (claimState(c) === 'other' ? 1 : 0)
    return (
      rank(a) - rank(b) ||
      b.priority - a.priority ||
      (a.deadlineAt || Infinity) - (b.deadlineAt || Infinity) ||
      (URGENCY_RANK[b.urgency] || 0) - (URGENCY_RANK[a.urgency] || 0) ||
      (a.createdAt || 0) - (b.createdAt || 0)
    )
  }
  function routedToMe(c) {
    // Until the routing read arrives every case shows; then only what this operator can take,
    // plus what someone else holds (so the claim is visible) unless its skills are not ours.
    // A case learned after the shown read started is shown until a read that knows it answers.
    if (!state.routable || c.learnedBeforeRead > state.routingRead) return true
    const mine = mySkills()
    return state.routable.has(c.id) || (claimState(c) === 'other' && c.skills.every((k) => mine.includes(k)))
  }
  function queuedCases() {
    const now = Date.now()
    return [...state.cases.values()].filter((c) => inQueue(c, now) && routedToMe(c)).sort(byPriority)
  }
  // Routing reads overlap (sign-in, each new case): a read that started before a newer one must
  // not replace its answer, or a case opened in between would vanish from the queue.
  let routingReadsStarted = 0
  let routingReadsAnswered = 0
  async function refreshRouting() {
    const client = state.client
    if (!client) return
    const read = ++routingReadsStarted
    const { data, error } = await client.rpc('hitl_operator_queue')
    document.body.dataset.routingReads = String(++routingReadsAnswered) // for whoever debugs the queue
    if (client !== state.client || error) return // routing refines the queue; it never empties it
    if (read < state.routingRead) return // a newer read has answered already
    state.routable = new Set((data || []).map((r) => r.case_id))
    state.routingRead = read
    renderQueue()
  }
  function mySkills() {
    const skills = asArray(state.user?.appMetadata?.hitl_skills)
    return skills.map((k) => asText(k).toLowerCase())
  }
  async function claimCase(release = false) {
    const c = state.cases.get(state.selectedId)
    if (!c || !state.client || !state.user) return
    await heartbeat('available') // a claim needs a recent heartbeat
    const { data, error } = await state.client
      .from('cases')
      .update({ claimed_by: release ? null : state.user.id })
      .eq('id', c.id)
      .select('id,claimed_by,claimed_at,claim_expires_at')
    if (error) {
      setClaimStatus(`Not claimed: ${error.message}`, 'error')
    } else if (!data || data.length === 0) {
      setClaimStatus(release ? 'Nothing to release.' : 'Someone else holds this case.', 'warn')
      await refreshCase(c.id)
    } else {
      onClaim({ case_id: c.id, ...data[0] })
      setClaimStatus(release ? 'Released: any operator may take it.' : 'Claimed: the case is yours until you answer.', 'ok')
    }
  }
  function onClaim(p) {
    const c = state.cases.get(p.case_id)
    if (!c) return
    c.claimedBy = p.claimed_by || null
    c.claimedAt = ms(p.claimed_at)
    c.claimExpiresAt = ms(p.claim_expires_at)
    renderQueue()
    if (c.id === state.selectedId) renderCase()
  }
  function onEscalated(p) {
    const c = state.cases.get(p.case_id)
    if (!c) return
    c.priority = clampPriority(p.priority)
    c.escalationLevel += 1
    document.body.dataset.lastEscalation = `${c.id} ${p.reason}`
    alertFor(c)
    const why = p.reason === 'deadline' ? 'claimed but unanswered, the caller is about to give up' : 'nobody has taken it yet'
    announce(`Escalated to priority ${c.priority}: ${why}. ${c.question.slice(0, 120)}`, true)
    renderQueue()
    if (c.id === state.selectedId) renderCase()
  }
  function setClaimStatus(text, kind) {
    const node = $('claim-status')
    setText(node, text)
    node.dataset.kind = kind
  }

  // ---- realtime: case channels ----------------------------------------------------------------
  function watchCase(id) {
    if (!state.client || state.caseChannels.has(id)) return
    if (state.caseChannels.size >= MAX_CASE_CHANNELS && id !== state.selectedId) return
    const channel = state.client.channel(`case:${id}`, { config: { private: true } })
    channel.on('broadcast', { event: 'message' }, (msg) => onMessage(asObject(msg.payload)))
    channel.on('broadcast', { event: 'session' }, (msg) => onSession(asObject(msg.payload)))
    let joins = 0
    channel.subscribe((status) => {
      if (status === 'SUBSCRIBED') {
        joins += 1
        // A rejoin may have missed events: read the case again.
        if (joins > 1 || id === state.selectedId) refreshCase(id)
      }
    })
    state.caseChannels.set(id, channel)
  }
  function unwatchCase(id) {
    const channel = state.caseChannels.get(id)
    if (!channel) return
    state.caseChannels.delete(id)
    state.client?.removeChannel(channel)
  }

  function onMessage(p) {
    const c = state.cases.get(p.case_id)
    if (!c || !p.id) return
    const mine = state.user && p.sender_id === state.user.id
    c.messages.set(p.id, { ...p, createdAt: ms(p.created_at) })
    if (p.is_answer) {
      c.answerId = p.id
      c.status = 'answered'
      if (!mine && c.id === state.selectedId) announce('This case was answered by another operator.')
    } else if (mine && p.sender_type === 'human' && (p.kind === 'answer' || p.kind === 'cannot_answer') && c.answerId && c.answerId !== p.id) {
      if (c.id === state.selectedId) setAnswerStatus(ANSWERED_FIRST, 'warn')
    }
    if (p.sender_type === 'ai') {
      // The caller replied to a question back: a new wait (and deadline) started on this case.
      c.sessionStatus = 'waiting'
      refreshCase(c.id)
    }
    renderQueue()
    if (c.id === state.selectedId) renderCase()
  }

  function onSession(p) {
    const c = state.cases.get(p.case_id)
    if (!c) return
    c.sessionStatus = p.status || null
    if (p.status === 'waiting' && p.expires_at) c.deadlineAt = ms(p.expires_at)
    if (p.status === 'answered' && c.status === OPEN) c.status = 'answered'
    renderQueue()
    if (c.id === state.selectedId) renderCase()
  }

  // ---- REST ----------------------------------------------------------------------------------
  async function reconcile() {
    const client = state.client
    if (!client) return
    const { data, error } = await client
      .from('cases')
      .select(CASE_COLUMNS)
      .eq('status', OPEN)
      .order('priority', { ascending: false })
      .order('created_at', { ascending: true })
      .limit(200)
    if (client !== state.client) return
    if (error) {
      setLive('error', `cannot read cases: ${error.message}`)
      return
    }
    const open = new Set()
    for (const row of data || []) {
      open.add(row.id)
      upsertCase(caseFromRow(row))
    }
    for (const c of state.cases.values()) {
      // A case we hold as open that the database no longer lists as open has moved on.
      if (c.status === OPEN && !open.has(c.id) && c.detailed) refreshCase(c.id)
    }
    await loadSessions([...open])
    await refreshRouting()
    renderQueue()
    if (state.selectedId) renderCase()
  }

  async function loadSessions(ids) {
    if (!state.client || ids.length === 0) return
    const { data, error } = await state.client
      .from('hil_sessions')
      .select('case_id,status,expires_at,created_at')
      .in('case_id', ids)
      .order('created_at', { ascending: true })
    if (error) return // sessions only refine the countdown; the deadline comes with the case
    for (const s of data || []) {
      const c = state.cases.get(s.case_id)
      if (!c) continue
      c.sessionStatus = s.status // oldest first: the last one wins
      if (s.status === 'waiting') c.deadlineAt = ms(s.expires_at)
    }
  }

  async function refreshCase(id) {
    const client = state.client
    if (!client) return
    const { data, error } = await client.from('cases').select(CASE_COLUMNS).eq('id', id).maybeSingle()
    if (client !== state.client || error || !data) return
    upsertCase(caseFromRow(data))
    await loadSessions([id])
    if (id === state.selectedId) await loadMessages(id)
    renderQueue()
    if (id === state.selectedId) renderCase()
  }

  async function loadMessages(id) {
    const client = state.client
    const { data, error } = await client
      .from('messages')
      .select(MESSAGE_COLUMNS)
      .eq('case_id', id)
      .order('created_at', { ascending: true })
    const c = state.cases.get(id)
    if (client !== state.client || error || !c) return
    for (const m of data || []) {
      if (!c.messages.has(m.id)) c.messages.set(m.id, { ...m, createdAt: ms(m.created_at) })
    }
  }

  async function sendMessage(kind, optionIndex = null) {
    const c = state.cases.get(state.selectedId)
    if (!c || !state.client || !state.user) return
    const text = optionIndex === null ? $('answer-text').value : c.options[optionIndex]
    if (kind !== 'cannot_answer' && !text.trim()) {
      setAnswerStatus(kind === 'answer' ? 'Write an answer first.' : 'Write the question for the caller first.', 'error')
      $('answer-text').focus()
      return
    }
    setBusy(true)
    setAnswerStatus('Sending…', 'info')
    const { data, error } = await state.client
      .from('messages')
      .insert({
        case_id: c.id,
        sender_type: 'human',
        sender_id: state.user.id,
        content: text.trim(),
        kind,
        ...(optionIndex === null ? {} : { option_index: optionIndex }),
      })
      .select(MESSAGE_COLUMNS)
      .single()
    setBusy(false)
    if (error) {
      setAnswerStatus(`Not sent: ${error.message}`, 'error')
      return
    }
    if (data && !c.messages.has(data.id)) c.messages.set(data.id, { ...data, createdAt: ms(data.created_at) })
    if (optionIndex === null) $('answer-text').value = ''
    const done = {
      answer: 'Answer sent. The voice agent has it.',
      clarification: 'Question sent. The agent asks the caller; their reply appears here.',
      cannot_answer: 'Sent: the agent tells the caller someone will get back to them.',
    }
    setAnswerStatus(done[kind], 'ok')
    if (kind !== 'clarification') {
      // The database decides which answer is delivered (the first one); read its verdict.
      await refreshCase(c.id)
      if (c.answerId && data && c.answerId !== data.id) {
        setAnswerStatus(ANSWERED_FIRST, 'warn')
      }
    }
    renderQueue()
    renderCase()
  }

  // ---- realtime: operators channel -------------------------------------------------------------
  function presencePayload() {
    return {
      operator_id: state.user.id,
      status: 'available',
      email: state.user.email || '',
      online_at: new Date().toISOString(),
    }
  }

  function joinOperators() {
    const channel = state.client.channel('operators', {
      config: { private: true, presence: { key: state.user.id } },
    })
    channel.on('broadcast', { event: 'case_opened' }, (msg) => onCaseOpened(asObject(msg.payload)))
    channel.on('broadcast', { event: 'claim' }, (msg) => onClaim(asObject(msg.payload)))
    channel.on('broadcast', { event: 'escalated' }, (msg) => onEscalated(asObject(msg.payload)))
    channel.on('presence', { event: 'sync' }, renderPresence)
    channel.subscribe(async (status, err) => {
      if (status === 'SUBSCRIBED') {
        setLive('live')
        if (state.available) await channel.track(presencePayload())
        reconcile()
      } else if (status === 'CHANNEL_ERROR') {
        setLive('error', err?.message || 'the operators channel refused us')
      } else if (status === 'TIMED_OUT') {
        setLive('reconnecting')
      } else if (status === 'CLOSED' && !state.signingOut) {
        setLive('offline')
      }
    })
    state.operators = channel
  }

  function onCaseOpened(p) {
    if (!p.case_id) return
    const known = state.cases.has(p.case_id)
    const c = upsertCase(caseFromOpened(p))
    watchCase(c.id)
    renderQueue()
    if (!known) {
      alertFor(c)
      const kind = isVoice(c) ? 'voice case' : 'case'
      announce(`New ${kind}, priority ${c.priority}, ${c.urgency} urgency: ${c.question.slice(0, 140)}`, c.priority >= 5)
      refreshCase(c.id) // context, caller and history come with the row
      refreshRouting()
    }
  }

  // ---- presence list -----------------------------------------------------------------------------
  function renderPresence() {
    if (!state.operators) return
    const list = $('presence-list')
    const entries = Object.entries(state.operators.presenceState() || {})
    entries.sort(([a], [b]) => (a === state.user?.id ? -1 : b === state.user?.id ? 1 : a.localeCompare(b)))
    clear(list)
    for (const [key, metas] of entries) {
      const meta = asObject(asArray(metas)[0])
      const you = key === state.user?.id
      const name = asText(meta.email) || `operator ${shortId(meta.operator_id || key)}`
      list.append(
        el(
          'li',
          { class: you ? 'presence-item you' : 'presence-item', 'data-operator-id': key },
          el('span', { class: 'dot', 'aria-hidden': 'true' }),
          el('span', { class: 'presence-name' }, name),
          you ? el('span', { class: 'presence-you' }, ' (you)') : null,
        ),
      )
    }
    setText($('presence-count'), entries.length)
  }

  // ---- audio ---------------------------------------------------------------------------------
  /** Beeps for a new case: more, faster and higher as priority rises; a high urgency lifts the pitch. */
  function alertPattern(priority, urgency) {
    const p = clampPriority(priority)
    return {
      beeps: p >= 5 ? 4 : p === 4 ? 3 : p === 3 ? 2 : 1,
      repeats: p >= 5 ? 2 : 1,
      freq: 440 + (p - 1) * 110 + (urgency === 'high' ? 110 : 0),
      duration: p >= 4 ? 0.11 : 0.18,
      gap: p >= 4 ? 0.08 : 0.16,
      volume: p <= 2 ? 0.12 : 0.25,
    }
  }
  function audioContext() {
    if (state.audio) return state.audio
    const Ctx = window.AudioContext || window.webkitAudioContext
    if (!Ctx) return null
    state.audio = new Ctx()
    return state.audio
  }
  function unlockAudio() {
    const ctx = audioContext()
    if (ctx && ctx.state === 'suspended') ctx.resume().catch(() => {})
  }
  function alertFor(c) {
    const p = alertPattern(c.priority, c.urgency)
    const body = document.body
    body.dataset.lastAlert = `${c.id} ${p.beeps}x${p.repeats} ${p.freq}Hz`
    if (state.muted) {
      body.dataset.lastAlertSound = 'muted'
      return
    }
    const ctx = audioContext()
    if (!ctx || ctx.state !== 'running') {
      body.dataset.lastAlertSound = 'blocked' // the browser wants a click first
      return
    }
    let t = ctx.currentTime + 0.02
    for (let r = 0; r < p.repeats; r++) {
      for (let i = 0; i < p.beeps; i++) {
        const osc = ctx.createOscillator()
        const gain = ctx.createGain()
        osc.type = 'sine'
        osc.frequency.value = p.freq
        gain.gain.setValueAtTime(0.0001, t)
        gain.gain.exponentialRampToValueAtTime(p.volume, t + 0.01)
        gain.gain.exponentialRampToValueAtTime(0.0001, t + p.duration)
        osc.connect(gain).connect(ctx.destination)
        osc.start(t)
        osc.stop(t + p.duration + 0.02)
        t += p.duration + p.gap
      }
      t += 0.25
    }
    body.dataset.lastAlertSound = 'played'
  }
  function setMuted(muted) {
    state.muted = muted
    try {
      localStorage.setItem(MUTE_KEY, muted ? '1' : '0')
    } catch {
      // storage may be disabled; the switch still works for this page
    }
    const button = $('mute-toggle')
    button.setAttribute('aria-pressed', String(muted))
    setText(button, muted ? 'Sound off' : 'Sound on')
    button.classList.toggle('muted', muted)
  }

  // ---- availability: presence + heartbeat ------------------------------------------------------
  async function heartbeat(status = 'available') {
    if (!state.client) return
    const { error } = await state.client.rpc('hitl_operator_heartbeat', { p_status: status })
    if (error) console.warn('hitl-console: heartbeat failed:', error.message)
  }
  async function setAvailable(available) {
    state.available = available
    $('available-toggle').checked = available
    document.body.classList.toggle('away', !available)
    if (!state.operators) return
    if (available) {
      await state.operators.track(presencePayload())
      heartbeat('available')
    } else {
      // Away: off the presence list, so the relay does not count on us.
      await state.operators.untrack()
      heartbeat('away')
      // Away: our claims go back to the queue at once (they would lapse within 90 s anyway).
      state.client?.rpc('hitl_release_claims').then(({ error }) => {
        if (error) console.warn('hitl-console: releasing claims failed:', error.message)
      })
    }
  }

  // ---- rendering: status bar -------------------------------------------------------------------
  function setLive(kind, detail) {
    state.live = kind
    const node = $('live-status')
    node.dataset.state = kind
    const label = {
      connecting: 'Connecting…',
      live: 'Live',
      reconnecting: 'Reconnecting…',
      offline: 'Offline',
      error: 'Problem',
    }[kind]
    setText(node, detail ? `${label}: ${detail}` : label)
  }

  // ---- rendering: queue ----------------------------------------------------------------------
  const queueNodes = new Map() // case id → {item, countdown, age}
  function renderQueue() {
    const list = $('queue')
    const focusedId = document.activeElement?.closest?.('.case-item')?.dataset.caseId
    const cases = queuedCases()
    clear(list)
    queueNodes.clear()
    for (const c of cases) {
      const countdown = el('span', { class: 'case-countdown' })
      const age = el('span', { class: 'case-age' }, formatAge(c.createdAt))
      const badges = el(
        'span',
        { class: 'badges' },
        isVoice(c) ? el('span', { class: 'badge voice', title: 'A caller is on the phone with the voice agent' }, '☎ Voice') : null,
        el('span', { class: `badge prio prio-${c.priority}`, title: `Priority ${c.priority} of 5` }, `P${c.priority}`),
        el('span', { class: `badge urgency urgency-${c.urgency}` }, c.urgency),
        claimBadge(c),
        c.escalationLevel > 0 ? el('span', { class: 'badge escalated', title: 'Escalated: waited too long' }, '⚠ escalated') : null,
      )
      const button = el(
        'button',
        { type: 'button', class: 'case-button', 'aria-current': c.id === state.selectedId ? 'true' : null },
        badges,
        el('span', { class: 'case-q' }, c.question),
        el('span', { class: 'case-foot' }, countdown, age),
      )
      button.addEventListener('click', () => selectCase(c.id))
      const item = el(
        'li',
        {
          class: `case-item prio-${c.priority}${isVoice(c) ? ' is-voice' : ''}${c.id === state.selectedId ? ' selected' : ''}`,
          'data-case-id': c.id,
          'data-priority': c.priority,
          'data-claim': claimState(c) || 'unclaimed',
        },
        button,
      )
      if (!c.shownAt) {
        c.shownAt = Date.now()
        item.classList.add('new')
      }
      item.dataset.shownAt = String(c.shownAt)
      list.append(item)
      queueNodes.set(c.id, { item, countdown, age })
      if (c.id === focusedId) button.focus()
    }
    show($('queue-empty'), cases.length === 0)
    setText($('queue-count'), cases.length)
    document.title = cases.length ? `(${cases.length}) Operator console · hitl-relay` : 'Operator console · hitl-relay'
    // Keep a channel on every queued case (answered elsewhere → it leaves), none on the rest.
    const keep = new Set(cases.map((c) => c.id))
    if (state.selectedId) keep.add(state.selectedId)
    for (const c of cases) watchCase(c.id)
    for (const id of [...state.caseChannels.keys()]) if (!keep.has(id)) unwatchCase(id)
    for (const [id, c] of [...state.cases]) if (!keep.has(id) && c.status !== OPEN) state.cases.delete(id)
    tick()
  }

  function claimBadge(c) {
    const held = claimState(c)
    if (!held) return el('span', { class: 'badge claim unclaimed', title: 'Nobody has taken this case yet' }, 'unclaimed')
    const who = held === 'mine' ? 'you' : `operator ${shortId(c.claimedBy)}`
    const idle = claimIdle(c) ? ' · idle' : ''
    return el('span', { class: `badge claim claimed-${held}${idle ? ' idle' : ''}`, title: `Claimed by ${who}` }, `claimed by ${who}${idle}`)
  }

  /** Countdowns and warning styles, four times a second, without rebuilding anything. */
  function tick() {
    const now = Date.now()
    let expired = false
    for (const [id, nodes] of queueNodes) {
      const c = state.cases.get(id)
      if (!c) continue
      if (!inQueue(c, now)) {
        expired = true
        continue
      }
      paintCountdown(c, now, nodes.countdown, nodes.item)
      setText(nodes.age, formatAge(c.createdAt))
    }
    const c = state.cases.get(state.selectedId)
    if (c) {
      paintCountdown(c, now, $('case-countdown-value'), $('case-countdown'), $('case-countdown-label'))
      if (c.status === OPEN && c.expiresAt && c.expiresAt <= now) c.status = 'expired'
    }
    if (state.mode === 'token' && state.user?.exp && state.user.exp * 1000 <= now) {
      signOut('Your access token has expired. Sign in again.')
      return
    }
    if (expired) {
      renderQueue()
      if (c) renderCase()
    }
  }

  function paintCountdown(c, now, valueNode, box, labelNode) {
    const caller = callerState(c, now)
    const remaining = c.deadlineAt ? c.deadlineAt - now : null
    const warning = caller === 'waiting' && remaining !== null && remaining <= WARN_MS
    box.classList.toggle('warning', warning)
    box.classList.toggle('late', caller === 'gone')
    box.classList.toggle('waiting', caller === 'waiting')
    box.classList.toggle('needs-info', caller === 'needs_info')
    let label = ''
    let value = ''
    if (caller === 'waiting') {
      label = 'Caller waiting'
      value = formatRemaining(remaining)
    } else if (caller === 'gone') {
      label = 'Caller no longer waiting'
      value = 'answer still delivered later'
    } else if (caller === 'needs_info') {
      label = 'Waiting for the caller’s reply'
    } else if (caller === 'no_operator') {
      label = 'Asked while nobody was on duty'
      value = 'the agent can still pick up your answer'
    } else if (c.status === 'answered') {
      label = 'Answered'
    } else if (c.status !== OPEN) {
      label = c.status[0].toUpperCase() + c.status.slice(1)
    } else {
      label = 'No deadline'
    }
    if (labelNode) {
      setText(labelNode, label)
      setText(valueNode, value)
      const fill = $('case-countdown-fill')
      const total = c.deadlineAt && c.createdAt ? c.deadlineAt - c.createdAt : null
      fill.style.width = caller === 'waiting' && total > 0 ? `${Math.max(0, Math.min(100, (remaining / total) * 100))}%` : '0%'
    } else {
      setText(valueNode, caller === 'waiting' ? `${formatRemaining(remaining)} left` : label)
    }
    if (warning && !c.warned && c.id === state.selectedId) {
      c.warned = true
      announce(`${Math.ceil(remaining / 1000)} seconds left before the caller stops waiting.`, true)
    }
  }

  // ---- rendering: case view --------------------------------------------------------------------
  function selectCase(id) {
    const previous = state.selectedId
    state.selectedId = id
    setAnswerStatus('', 'info')
    if (previous !== id) $('answer-text').value = ''
    watchCase(id)
    renderQueue()
    renderCase()
    const c = state.cases.get(id)
    if (c) {
      loadMessages(id).then(() => {
        if (state.selectedId === id) renderCase()
      })
      if (!c.detailed) refreshCase(id)
    }
    $('case-title').focus()
  }

  function renderCase() {
    const c = state.cases.get(state.selectedId)
    show($('case-view'), !!c)
    show($('case-placeholder'), !c)
    if (!c) return
    const view = $('case-view')
    view.dataset.caseId = c.id
    view.classList.toggle('is-voice', isVoice(c))

    const badges = $('case-badges')
    clear(badges)
    if (isVoice(c)) badges.append(el('span', { class: 'badge voice' }, '☎ Voice call'))
    badges.append(
      el('span', { class: `badge prio prio-${c.priority}` }, `Priority ${c.priority}`),
      el('span', { class: `badge urgency urgency-${c.urgency}` }, `${c.urgency} urgency`),
    )
    if (c.status !== OPEN) badges.append(el('span', { class: 'badge state' }, c.status))

    setText($('case-question'), c.question)
    const meta = [`Case ${shortId(c.id)}`]
    if (c.createdAt) meta.push(`opened ${formatClock(c.createdAt)}`)
    if (c.callId) meta.push(`call ${c.callId}`)
    if (c.agentId) meta.push(`agent ${c.agentId}`)
    setText($('case-meta'), meta.join(' · '))

    setText($('case-context'), c.context)
    show($('case-context-section'), !!c.context)

    const caller = $('case-caller')
    clear(caller)
    for (const [k, v] of Object.entries(c.callerInfo)) {
      caller.append(el('div', { class: 'kv-row' }, el('dt', {}, k.replace(/_/g, ' ')), el('dd', {}, asText(v))))
    }
    show($('case-caller-section'), caller.childElementCount > 0)

    const thread = $('case-thread')
    clear(thread)
    for (const t of c.thread) {
      const entry = asObject(t)
      const answer = entry.answer ? asText(entry.answer) : entry.status === OPEN ? '(not answered yet)' : `(${asText(entry.status)})`
      thread.append(
        el(
          'li',
          {},
          el('p', { class: 'thread-q' }, el('span', { class: 'who' }, 'Asked: '), asText(entry.question)),
          el('p', { class: 'thread-a' }, el('span', { class: 'who' }, entry.answer_kind === 'cannot_answer' ? 'Could not answer: ' : 'Answer: '), answer),
        ),
      )
    }
    show($('case-thread-section'), c.thread.length > 0)

    const history = $('case-history')
    clear(history)
    for (const turn of c.history) {
      const t = asObject(turn)
      const role = asText(t.role) || 'turn'
      history.append(
        el('li', { class: `turn role-${role.replace(/[^a-z]/gi, '')}` }, el('span', { class: 'who' }, `${role === 'user' ? 'Caller' : role === 'agent' || role === 'assistant' ? 'Agent' : role}: `), asText(t.content)),
      )
    }
    show($('case-history-section'), c.history.length > 0)

    const messages = $('case-messages')
    clear(messages)
    const sorted = [...c.messages.values()].sort((a, b) => (a.createdAt || 0) - (b.createdAt || 0))
    for (const m of sorted) {
      const mine = state.user && m.sender_id === state.user.id
      const who = m.sender_type === 'human' ? (mine ? 'You' : `Operator ${shortId(m.sender_id)}`) : m.sender_type === 'ai' ? 'Caller (via the agent)' : 'System'
      const isAnswer = c.answerId === m.id
      messages.append(
        el(
          'li',
          {
            class: `message from-${m.sender_type} kind-${m.kind}${isAnswer ? ' is-answer' : ''}`,
            'data-message-id': m.id,
            'data-kind': m.kind,
            'data-sender-type': m.sender_type,
          },
          el('span', { class: 'who' }, who),
          el('span', { class: 'kind' }, isAnswer ? `${KIND_LABEL[m.kind] || m.kind} · delivered` : KIND_LABEL[m.kind] || m.kind),
          el('time', { class: 'when', datetime: m.created_at }, formatClock(m.createdAt)),
          el('p', { class: 'content' }, m.content || (m.kind === 'cannot_answer' ? '(no note)' : '')),
          m.option_index !== null && m.option_index !== undefined ? el('span', { class: 'option-chosen' }, `one-tap option ${Number(m.option_index) + 1}`) : null,
        ),
      )
    }
    show($('case-messages-empty'), sorted.length === 0)

    const open = c.status === OPEN
    const held = claimState(c)
    const blocked = held === 'other' // the database refuses our answer while their claim is live
    for (const id of ['answer-text', 'send-answer', 'ask-back', 'cannot-answer']) $(id).disabled = !open || state.busy || blocked
    const claimNode = $('claim-state')
    claimNode.dataset.claim = held || 'unclaimed'
    setText(
      claimNode,
      !open
        ? ''
        : held === 'mine'
          ? `You hold this case${c.claimExpiresAt ? ` until ${formatClock(c.claimExpiresAt)}` : ''}.`
          : held === 'other'
            ? `Claimed by operator ${shortId(c.claimedBy)}${claimIdle(c) ? ' (idle)' : ''}.`
            : 'Unclaimed: claim it so nobody else works on it.',
    )
    show($('claim-case'), open && !held)
    show($('release-case'), open && held === 'mine')
    const options = $('answer-options')
    clear(options)
    c.options.forEach((text, index) => {
      const b = el('button', { type: 'button', class: 'option', 'data-option-index': String(index) }, text)
      b.disabled = !open || state.busy || blocked
      b.addEventListener('click', () => sendMessage('answer', index))
      options.append(b)
    })
    show(options, c.options.length > 0)
    $('answer-form').classList.toggle('closed', !open)
    if (!open && !$('answer-status').textContent) {
      setAnswerStatus(c.status === 'answered' ? 'This case is answered.' : `This case is ${c.status}.`, 'info')
    }
    tick()
  }

  function setAnswerStatus(text, kind) {
    const node = $('answer-status')
    setText(node, text)
    node.dataset.kind = kind
  }
  function setBusy(busy) {
    state.busy = busy
    for (const id of ['send-answer', 'ask-back', 'cannot-answer']) $(id).disabled = busy
  }

  // ---- sign in / out ---------------------------------------------------------------------------
  function createClient(options) {
    return window.supabase.createClient(CONFIG.supabaseUrl, CONFIG.anonKey, options)
  }
  function passwordClient() {
    if (!state.passwordClient) {
      state.passwordClient = createClient({
        auth: { persistSession: true, autoRefreshToken: true, detectSessionInUrl: false, storageKey: AUTH_STORAGE_KEY },
      })
      state.passwordClient.auth.onAuthStateChange((event) => {
        if (event === 'SIGNED_OUT' && state.mode === 'password' && !state.signingOut) {
          signOut('You were signed out. Sign in again.')
        }
      })
    }
    return state.passwordClient
  }

  async function signInWithPassword(email, password) {
    const client = passwordClient()
    const { data, error } = await client.auth.signInWithPassword({ email, password })
    if (error) throw new Error(error.message)
    const problem = operatorProblem({ ...decodeJwt(data.session.access_token) })
    if (problem) {
      await client.auth.signOut()
      throw new Error(problem)
    }
    await start(client, 'password', data.session.access_token)
  }

  async function signInWithToken(token) {
    token = token.trim()
    const claims = decodeJwt(token)
    const problem = operatorProblem(claims)
    if (problem) throw new Error(problem)
    const client = createClient({ accessToken: async () => token, auth: { persistSession: false } })
    try {
      sessionStorage.setItem(TOKEN_KEY, token)
    } catch {
      // without sessionStorage a reload asks again
    }
    await start(client, 'token', token)
  }

  async function start(client, mode, accessToken) {
    const claims = decodeJwt(accessToken)
    state.client = client
    state.mode = mode
    state.user = { id: claims.sub, email: claims.email || '', exp: claims.exp || null, appMetadata: asObject(claims.app_metadata) }
    state.routable = null
    state.routingRead = 0
    state.signingOut = false
    // Realtime must carry the operator's token before the first join (private channels).
    await client.realtime.setAuth(accessToken)
    show($('sign-in'), false)
    show($('workspace'), true)
    show($('session-bar'), true)
    setText($('operator-name'), state.user.email || `operator ${shortId(state.user.id)}`)
    setLive('connecting')
    joinOperators()
    state.timers.push(window.setInterval(tick, TICK_MS))
    state.timers.push(window.setInterval(reconcile, RECONCILE_MS))
    state.timers.push(
      window.setInterval(() => {
        if (state.available) heartbeat('available')
      }, HEARTBEAT_MS),
    )
    if (state.available) heartbeat('available')
    else document.body.classList.add('away')
    reconcile()
    $('queue-title').focus()
  }

  async function signOut(message) {
    state.signingOut = true
    for (const t of state.timers) window.clearInterval(t)
    state.timers = []
    const client = state.client
    const mode = state.mode
    state.client = null
    state.operators = null
    state.caseChannels.clear()
    state.cases.clear()
    state.selectedId = null
    state.mode = null
    state.user = null
    try {
      sessionStorage.removeItem(TOKEN_KEY)
    } catch {
      // nothing stored
    }
    if (client) {
      await client.removeAllChannels()
      client.realtime.disconnect()
      if (mode === 'password') await client.auth.signOut()
    }
    clear($('queue'))
    clear($('presence-list'))
    show($('workspace'), false)
    show($('session-bar'), false)
    showSignIn(message)
  }

  function showSignIn(message) {
    show($('sign-in'), true)
    setText($('sign-in-error'), message || '')
    $('email').focus()
  }

  function showProblems(problems) {
    const list = $('setup-problem-list')
    clear(list)
    for (const p of problems) list.append(el('li', {}, p))
    show($('setup-problem'), true)
  }

  function tokenFromFragment() {
    const hash = window.location.hash.replace(/^#/, '')
    if (!hash) return null
    const token = new URLSearchParams(hash).get('token')
    if (!token) return null
    // The token must not linger in the address bar, the history or a bookmark.
    window.history.replaceState(null, '', window.location.pathname + window.location.search)
    return token
  }

  // ---- wiring ----------------------------------------------------------------------------------
  function bind() {
    $('password-form').addEventListener('submit', async (ev) => {
      ev.preventDefault()
      unlockAudio()
      const email = $('email').value.trim()
      const password = $('password').value
      if (!email || !password) {
        setText($('sign-in-error'), 'Enter your email and password.')
        return
      }
      $('password-submit').disabled = true
      setText($('sign-in-error'), '')
      try {
        await signInWithPassword(email, password)
        $('password').value = ''
      } catch (e) {
        setText($('sign-in-error'), `Sign-in failed: ${e.message}`)
      } finally {
        $('password-submit').disabled = false
      }
    })
    $('token-form').addEventListener('submit', async (ev) => {
      ev.preventDefault()
      unlockAudio()
      const token = $('token').value
      if (!token.trim()) {
        setText($('sign-in-error'), 'Paste an access token first.')
        return
      }
      try {
        await signInWithToken(token)
        $('token').value = ''
      } catch (e) {
        setText($('sign-in-error'), `Sign-in failed: ${e.message}`)
      }
    })
    $('claim-case').addEventListener('click', () => claimCase(false))
    $('release-case').addEventListener('click', () => claimCase(true))
    $('answer-form').addEventListener('submit', (ev) => {
      ev.preventDefault()
      sendMessage('answer')
    })
    $('answer-text').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault()
        sendMessage('answer')
      }
    })
    $('ask-back').addEventListener('click', () => sendMessage('clarification'))
    $('cannot-answer').addEventListener('click', () => sendMessage('cannot_answer'))
    $('mute-toggle').addEventListener('click', () => {
      unlockAudio()
      setMuted(!state.muted)
    })
    $('available-toggle').addEventListener('change', (ev) => setAvailable(ev.target.checked))
    $('sign-out').addEventListener('click', () => signOut())
    // Browsers start audio only after a gesture: any click or key unlocks the alerts.
    document.addEventListener('pointerdown', unlockAudio, { passive: true })
    document.addEventListener('keydown', unlockAudio)
    // A console link (`#token=...`) opened in a tab that already shows the console.
    window.addEventListener('hashchange', () => {
      const token = tokenFromFragment()
      if (!token || state.client) return
      signInWithToken(token).catch((e) => showSignIn(`Sign-in failed: ${e.message}`))
    })
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && state.client) reconcile()
    })
  }

  async function boot() {
    const problems = []
    if (!CONFIG) problems.push('config.js did not load: open the console through the relay (/console/).')
    else problems.push(...asArray(CONFIG.problems))
    if (!window.supabase || typeof window.supabase.createClient !== 'function') {
      problems.push(
        'supabase-js is not installed for the console (/console/vendor/supabase.js is missing): run scripts/install-console-deps on the relay host, then reload.',
      )
    }
    let muted = false
    try {
      muted = localStorage.getItem(MUTE_KEY) === '1'
    } catch {
      // storage disabled: sound stays on
    }
    setMuted(muted)
    if (problems.length) {
      showProblems(problems)
      return
    }
    bind()
    let token = tokenFromFragment()
    try {
      token = token || sessionStorage.getItem(TOKEN_KEY)
    } catch {
      // no sessionStorage
    }
    if (token) {
      try {
        await signInWithToken(token)
        return
      } catch (e) {
        showSignIn(`Sign-in failed: ${e.message}`)
        return
      }
    }
    const client = passwordClient()
    const { data } = await client.auth.getSession()
    if (data?.session && !operatorProblem(decodeJwt(data.session.access_token))) {
      await start(client, 'password', data.session.access_token)
      return
    }
    showSignIn()
  }

  document.body.dataset.consoleReady = 'booting'
  boot()
    .catch((e) => showProblems([`The console failed to start: ${e.message}`]))
    .finally(() => {
      document.body.dataset.consoleReady = 'yes'
    })
})()
