/**
 * Unit tests of lib/options.ts: `normalizeOptions()` directly, no server.
 * test/register.test.ts already checks through `register()` that an unknown
 * key, heartbeat 0, -1 and 'x', retry 1.5, maxBufferedBytes < maxEventBytes
 * and null options are refused, and that heartbeat/retry false are accepted;
 * this file does not repeat those cases. It covers the defaults, both edges
 * of every numeric option, the other kinds of wrong value, and the result.
 */
import t, { type Test } from 'tap'
import { normalizeOptions, defaults, type SseHubOptions } from '../lib/options.js'
import { memoryBackend } from '../lib/backends/memory.js'

const MAX_MS = 2 ** 31 - 1
const SAFE = Number.MAX_SAFE_INTEGER

/** What normalizeOptions throws for `options`, or null if it accepts them. */
function refusal (options: unknown): { code?: string, message: string, statusCode?: number } | null {
  try {
    normalizeOptions(options as SseHubOptions)
    return null
  } catch (err) {
    return err as { code?: string, message: string, statusCode?: number }
  }
}

/** Checks that `options` is refused with the option code and a message naming `name`. */
function refused (t: Test, options: unknown, name: string, what: string): void {
  const err = refusal(options)
  if (err === null) {
    t.fail(`${what}: accepted`)
    return
  }
  t.ok(err instanceof TypeError, `${what}: a TypeError`)
  t.match(err, { code: 'FST_ERR_SSEHUB_OPTION_INVALID', message: new RegExp(`^fastify-sse-hub: option "${name}" `) }, `${what}: refused, naming ${name}`)
}

t.test('defaults: what no options give, and the defaults object is frozen', async t => {
  const o = normalizeOptions()
  t.same({ ...o, backend: null }, defaults, 'every field is its default')
  t.match(o, {
    heartbeat: 15_000,
    retry: 3_000,
    retryJitter: 1_000,
    shutdownJitter: 10_000,
    maxEventBytes: 1024 * 1024,
    maxBufferedBytes: 4 * 1024 * 1024,
    slowClientTimeout: 5_000,
    history: 1_000,
    historyTtl: 600_000,
    maxHistoryBytes: 64 * 1024 * 1024,
    maxIdleTopics: 10_000,
    maxConnections: Infinity,
    maxLifetime: 0,
    maxStreamsPerClient: Infinity
  }, 'the documented values')
  t.type(o.backend?.start, 'function', 'a memory backend is made')
  t.not(normalizeOptions().backend, o.backend, 'a fresh one for each plugin instance')
  t.equal(o.clientKey({ ip: '10.0.0.7' } as never), '10.0.0.7', 'clientKey defaults to the request ip')
  t.same({ ...normalizeOptions({}), backend: null }, defaults, '{} is the same as no options')
  t.ok(Object.isFrozen(defaults))
  t.throws(() => { (defaults as { heartbeat: number }).heartbeat = 1 }, TypeError, 'the defaults cannot be changed by anyone')
})

t.test('the result is frozen and carries what was given', async t => {
  const backend = memoryBackend()
  const clientKey = (): string => 'k'
  const given = {
    heartbeat: 20,
    retry: 0,
    retryJitter: 7,
    shutdownJitter: 8,
    maxEventBytes: 100,
    maxBufferedBytes: 100,
    slowClientTimeout: 100,
    history: 3,
    historyTtl: 4,
    maxHistoryBytes: 5,
    maxIdleTopics: 6,
    maxConnections: 9,
    backend,
    maxLifetime: 10,
    maxStreamsPerClient: 11,
    clientKey
  }
  t.same(Object.keys(given).sort(), Object.keys(defaults).sort(), 'this test sets every option')
  const o = normalizeOptions(given)
  t.same(o, given)
  t.equal(o.backend, backend, 'the backend itself, not a copy')
  t.equal(o.clientKey, clientKey)
  t.ok(Object.isFrozen(o))
  t.throws(() => { (o as { history: number }).history = 1 }, TypeError)
  t.not(o, given as unknown, 'a new object: the caller\'s stays theirs')
  t.equal(Object.isFrozen(given), false)
})

/** Every numeric option: its smallest and largest accepted values, and what else it takes. */
const NUMERIC: Array<{ name: keyof SseHubOptions, min: number, max: number, with?: SseHubOptions, orFalse?: true, orInfinity?: true }> = [
  { name: 'heartbeat', min: 10, max: MAX_MS, orFalse: true },
  { name: 'retry', min: 0, max: MAX_MS, orFalse: true },
  { name: 'retryJitter', min: 0, max: MAX_MS },
  { name: 'shutdownJitter', min: 0, max: MAX_MS },
  { name: 'maxEventBytes', min: 64, max: 2 ** 30, with: { maxBufferedBytes: 2 ** 30 } },
  { name: 'maxBufferedBytes', min: 64, max: 2 ** 32, with: { maxEventBytes: 64 } },
  { name: 'slowClientTimeout', min: 100, max: MAX_MS },
  { name: 'history', min: 0, max: 10_000_000 },
  { name: 'historyTtl', min: 0, max: MAX_MS },
  { name: 'maxHistoryBytes', min: 0, max: SAFE },
  { name: 'maxIdleTopics', min: 0, max: SAFE },
  { name: 'maxConnections', min: 0, max: SAFE, orInfinity: true },
  { name: 'maxLifetime', min: 0, max: MAX_MS },
  { name: 'maxStreamsPerClient', min: 1, max: SAFE, orInfinity: true }
]

for (const { name, min, max, with: companion = {}, orFalse, orInfinity } of NUMERIC) {
  t.test(`${name}: whole numbers from ${min} to ${max}${orFalse === true ? ', or false' : ''}${orInfinity === true ? ', or Infinity' : ''}`, async t => {
    for (const value of [min, min + 1, max - 1, max]) {
      t.equal(normalizeOptions({ ...companion, [name]: value })[name], value, `${value} accepted`)
    }
    const wrong: unknown[] = [min - 1, max + 1, min + 0.5, NaN, -Infinity, String(min), null, true, {}, [min]]
    if (max + 1 === max) t.fail('max + 1 must be a different number') // every max here is below 2 ** 53
    if (orFalse === true) t.equal(normalizeOptions({ [name]: false })[name], false, 'false accepted')
    else wrong.push(false)
    if (orInfinity === true) t.equal(normalizeOptions({ [name]: Infinity })[name], Infinity, 'Infinity accepted')
    else wrong.push(Infinity)
    for (const value of wrong) refused(t, { ...companion, [name]: value }, name, `${String(typeof value === 'string' ? `'${value}'` : Array.isArray(value) ? `[${String(value)}]` : value)}`)
    const err = refusal({ ...companion, [name]: min - 1 })
    t.match(err?.message, `from ${min} to ${max}, got ${min - 1}`, 'the message says the range and what was given')
  })
}

t.test('maxBufferedBytes may equal maxEventBytes, not fall below it, the defaults included', async t => {
  t.equal(normalizeOptions({ maxEventBytes: 5000, maxBufferedBytes: 5000 }).maxBufferedBytes, 5000)
  refused(t, { maxEventBytes: 5000, maxBufferedBytes: 4999 }, 'maxBufferedBytes', 'one byte below')
  refused(t, { maxEventBytes: 4 * 1024 * 1024 + 1 }, 'maxBufferedBytes', 'maxEventBytes above the default maxBufferedBytes')
  t.equal(normalizeOptions({ maxEventBytes: 4 * 1024 * 1024 }).maxEventBytes, 4 * 1024 * 1024, 'equal to the default maxBufferedBytes')
  refused(t, { maxBufferedBytes: 1024 * 1024 - 1 }, 'maxBufferedBytes', 'maxBufferedBytes below the default maxEventBytes')
})

t.test('clientKey must be a function', async t => {
  for (const value of ['ip', null, 1, {}]) refused(t, { clientKey: value }, 'clientKey', String(value))
})

t.test('backend must look like a backend', async t => {
  const { start, publish, read } = memoryBackend() as unknown as Record<string, unknown>
  const wrong: Array<[unknown, string]> = [
    ['memory', 'a string'],
    [42, 'a number'],
    [memoryBackend, 'the factory, not called'],
    [{}, 'an empty object'],
    [{ publish, read }, 'no start'],
    [{ start, read }, 'no publish'],
    [{ start, publish }, 'no read'],
    [{ start: 1, publish, read }, 'start not a function']
  ]
  for (const [value, what] of wrong) refused(t, { backend: value }, 'backend', what)
  const minimal = { start, publish, read }
  t.equal(normalizeOptions({ backend: minimal as never }).backend, minimal, 'start, publish and read make one')
})

t.test('options must be an object; unknown keys are refused, inherited names too', async t => {
  for (const value of ['x', 5, true]) {
    const err = refusal(value)
    t.match(err, { code: 'FST_ERR_SSEHUB_OPTION_INVALID', message: `option "options" must be an object, got ${typeof value}` }, `${typeof value} refused`)
  }
  for (const key of ['constructor', 'toString', 'hasOwnProperty', '__proto__', 'Heartbeat', 'maxconnections']) {
    refused(t, JSON.parse(`{ ${JSON.stringify(key)}: 1 }`), key, `${key}`)
  }
  const err = refusal({ retries: 3 })
  for (const name of Object.keys(defaults)) {
    if (err?.message.includes(name) !== true) t.fail(`the message does not list ${name}`)
  }
  t.pass('the message lists every known option')
})

// `SseHubOptions` declares every field optional, so TypeScript accepts
// `{ heartbeat: undefined }` (for example `{ heartbeat: env.HB ? Number(env.HB) : undefined }`),
// and `backend: undefined` already means the default. Every other option
// given as undefined is refused instead.
t.test('an option given as undefined takes its default', async t => {
  t.equal(refusal({ backend: undefined }), null, 'backend: undefined')
  for (const name of Object.keys(defaults).filter(n => n !== 'backend')) {
    const err = refusal({ [name]: undefined })
    t.equal(err?.message ?? null, null, `${name}: undefined`)
  }
})
