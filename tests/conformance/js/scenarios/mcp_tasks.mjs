// MCP tasks (2025-11-25) with the unmodified TypeScript SDK (@modelcontextprotocol/sdk,
// experimental tasks), against a relay over streamable HTTP. MODE picks the part:
//   stream  callToolStream(ask_human) as a task: created -> polled at pollInterval -> result
//   create  create the task and stop (the test kills the relay and polls from another one)
//   await   getTask until terminal (at the task's pollInterval), then getTaskResult
//   cancel  cancelTask, getTask, cancelTask again (terminal: -32602)
//   peek    getTask, cancelTask, getTaskResult and listTasks, each error recorded (another key:
//           not found)
//   clarify stream, as a client that declares form elicitation and answers the operator's question
//           (elicitation/create on the tasks/result stream) with CALLER_REPLY; records the
//           elicitation requests and the notifications/tasks/status it receives
//   clarify-unable  the same without the elicitation capability (the SDK refuses the request)
// Prints {"step": "created:<taskId>"} when a task exists, and one JSON line of observations.
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import {
  CallToolResultSchema,
  ElicitRequestSchema,
  TaskStatusNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js'
import { env, run, step } from '../lib/harness.mjs'

const errorOf = (e) => ({ code: e?.code ?? null, message: String(e?.message ?? e) })

async function connect(capabilities = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(env('MCP_URL')), {
    requestInit: { headers: { Authorization: `Bearer ${env('API_KEY')}` } },
  })
  const client = new Client({ name: 'hitl-tasks-test', version: '1.0.0' }, { capabilities })
  await client.connect(transport)
  return client
}

// What a client that opts into elicitation sees of the operator's question, and the task status
// notifications that arrive on any of its streams.
function listen(client, observed, { elicit }) {
  observed.elicitations = []
  observed.notifications = []
  client.setNotificationHandler(TaskStatusNotificationSchema, (n) => {
    observed.notifications.push(n.params)
  })
  if (elicit) {
    client.setRequestHandler(ElicitRequestSchema, async (request) => {
      observed.elicitations.push(request.params)
      step('elicited')
      return { action: 'accept', content: { reply: env('CALLER_REPLY') } }
    })
  }
}

function askParams() {
  return {
    name: 'ask_human',
    arguments: {
      question: env('QUESTION', 'May I offer the customer a refund?'),
      call_id: env('CALL_ID'),
      session_id: `mcp-${env('CALL_ID')}`,
      agent_id: 'agent_tasks',
      timeout_seconds: Number(env('TIMEOUT_SECONDS', '60')),
    },
  }
}

async function stream(client, { stopAfterCreate }) {
  const observed = { statuses: [], polls: [] }
  const ttl = Number(env('TTL_MS', '600000'))
  const messages = client.experimental.tasks.callToolStream(askParams(), CallToolResultSchema, {
    task: { ttl },
  })
  const t0 = Date.now()
  for await (const message of messages) {
    if (message.type === 'taskCreated') {
      observed.created = message.task
      observed.create_ms = Date.now() - t0
      step(`created:${message.task.taskId}`)
      if (stopAfterCreate) return observed
    } else if (message.type === 'taskStatus') {
      observed.statuses.push(message.task.status)
      observed.polls.push({ at_ms: Date.now() - t0, status: message.task.status, task: message.task })
    } else if (message.type === 'result') {
      observed.result = message.result
      observed.result_ms = Date.now() - t0
    } else if (message.type === 'error') {
      observed.error = errorOf(message.error)
    }
  }
  return observed
}

async function awaitTask(client) {
  const taskId = env('TASK_ID')
  const observed = { statuses: [] }
  for (;;) {
    const task = await client.experimental.tasks.getTask(taskId)
    observed.statuses.push(task.status)
    observed.last = task
    if (['completed', 'failed', 'cancelled'].includes(task.status)) break
    await new Promise((resolve) => setTimeout(resolve, task.pollInterval ?? 1000))
  }
  observed.result = await client.experimental.tasks.getTaskResult(taskId, CallToolResultSchema)
  return observed
}

async function cancel(client) {
  const taskId = env('TASK_ID')
  const observed = {}
  observed.cancelled = await client.experimental.tasks.cancelTask(taskId)
  observed.after = await client.experimental.tasks.getTask(taskId)
  try {
    observed.second = await client.experimental.tasks.cancelTask(taskId)
  } catch (e) {
    observed.second_error = errorOf(e)
  }
  return observed
}

async function peek(client) {
  const taskId = env('TASK_ID')
  const observed = {}
  const attempt = async (name, fn) => {
    try {
      observed[name] = await fn()
    } catch (e) {
      observed[`${name}_error`] = errorOf(e)
    }
  }
  await attempt('get', () => client.experimental.tasks.getTask(taskId))
  // cancel before result: tasks/result blocks while a task is working
  await attempt('cancel', () => client.experimental.tasks.cancelTask(taskId))
  await attempt('result', () => client.experimental.tasks.getTaskResult(taskId, CallToolResultSchema))
  await attempt('list', () => client.experimental.tasks.listTasks())
  return observed
}

run(async () => {
  const mode = env('MODE')
  const client = await connect(mode === 'clarify' ? { elicitation: { form: {} } } : {})
  const observed = {
    mode,
    server_capabilities: client.getServerCapabilities(),
    protocol_version: client.transport?.protocolVersion ?? null,
  }
  const { tools } = await client.listTools()
  observed.ask_human = tools.find((t) => t.name === 'ask_human')
  if (mode === 'stream') Object.assign(observed, await stream(client, { stopAfterCreate: false }))
  else if (mode === 'create') Object.assign(observed, await stream(client, { stopAfterCreate: true }))
  else if (mode === 'await') Object.assign(observed, await awaitTask(client))
  else if (mode === 'cancel') Object.assign(observed, await cancel(client))
  else if (mode === 'peek') Object.assign(observed, await peek(client))
  else if (mode === 'clarify' || mode === 'clarify-unable') {
    listen(client, observed, { elicit: mode === 'clarify' })
    Object.assign(observed, await stream(client, { stopAfterCreate: false }))
  }
  else throw new Error(`unknown MODE ${mode}`)
  await client.close()
  return observed
})
