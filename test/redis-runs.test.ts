// Runs across processes on Redis (issue 16): a cancel on instance B stops the
// producer on instance A; when A is killed (SIGKILL), followers on B get the
// run's `end` (`lost`) within the documented bound (about 1.5 x runLease); a
// producer whose process was stopped past its lease (SIGSTOP) and comes back
// (SIGCONT) is fenced off: nothing it yields lands after the `end`. Every
// follower's tokens are checked: t0, t1, ... with none missing or doubled,
// then exactly one `end`.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient, type T } from './helpers/index.js'
import { RedisServer, redisSkip } from './helpers/redis.js'
import { startInstance, type Instance } from './helpers/instance.js'
import { redisBackend } from '../lib/redis.js'

const skip = redisSkip()
const root = fileURLToPath(new URL('..', import.meta.url))
const LEASE = 600

const startRuns = (t: T, redisUrl: string, prefix: string): Promise<Instance> => startInstance(t, 'run-instance.mjs', [redisUrl, prefix, String(LEASE)])

const events = { token: Type.Object({ text: Type.String() }), done: Type.Object({ reason: Type.String() }) }

async function instanceB (t: T, redisUrl: string, prefix: string) {
  let generation!: any
  const made = await makeApp(t, app => {
    generation = app.sse.channel('generations/:id', { events, history: { limit: 100_000, ttl: 600_000 } })
    app.get<{ Params: { id: string } }>('/generations/:id/stream', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start', until: 'done' }))
  }, { plugin: { backend: redisBackend({ url: redisUrl, prefix, runLease: LEASE }) } })
  return { ...made, topic: (id: string) => generation.topic({ id }) }
}

/** The follower's tokens are t0..t(n-1), each once, then one `end` with `reason`. */
function checkSequence (t: T & { same: Function, equal: Function }, c: SseClient, reason: string): number {
  const tokens = c.events.filter(e => e.event === 'token').map(e => JSON.parse(e.data).text)
  t.same(tokens, tokens.map((_, i) => `t${i} `), `${tokens.length} tokens, none missing or doubled, in order`)
  t.equal(c.events.length, tokens.length + 1, 'then exactly one more event')
  t.equal(c.events.at(-1)?.event, 'end')
  t.equal(c.events.at(-1)?.data, JSON.stringify({ reason }))
  return tokens.length
}

async function poll<V> (what: string, fn: () => Promise<V>, ok: (v: V) => boolean, ms = 10_000): Promise<V> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (ok(v)) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

const state = async (url: string, id: string): Promise<{ aborted: boolean | null, outcome: { reason: string } | null }> =>
  await (await fetch(`${url}/generations/${id}/aborted`)).json() as any

t.test('runs across instances', { skip }, async t => {
  if (!existsSync(new URL('../dist/esm/redis.js', import.meta.url))) execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit' })
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const prefix = 'runs'
  const [a, b] = await Promise.all([startRuns(t, redis.url, prefix), instanceB(t, redis.url, prefix)])

  await t.test('a cancel on B stops the producer on A; followers on both get end { cancelled }', async t => {
    t.equal((await fetch(`${a.url}/generations/c1?every=5`, { method: 'POST' })).status, 200)
    const onB = await SseClient.open(`${b.url}/generations/c1/stream`)
    const onA = await SseClient.open(`${a.url}/generations/c1/stream`)
    await onB.waitEvents(20, 15_000)
    t.equal(await b.app.sse.cancel(b.topic('c1')), true, 'B cancels A\'s run')
    t.equal(await onB.waitEnd(15_000), 'end')
    t.equal(await onA.waitEnd(15_000), 'end')
    const n = checkSequence(t, onB, 'cancelled')
    checkSequence(t, onA, 'cancelled')
    t.same(onA.events.map(e => e.id), onB.events.map(e => e.id), 'both followers got the same events')
    const s = await poll('A\'s producer to stop', () => state(a.url, 'c1'), s => s.outcome !== null)
    t.equal(s.aborted, true, 'the producer\'s signal aborted on A')
    t.equal(s.outcome?.reason, 'cancelled', 'run.finished on A says cancelled')
    // Nothing landed after the end: a later follow replays exactly the same.
    const later = await SseClient.open(`${b.url}/generations/c1/stream`)
    t.equal(await later.waitEnd(15_000), 'end')
    t.equal(checkSequence(t, later, 'cancelled'), n, 'history holds exactly what the followers got')
    t.equal(await b.app.sse.cancel(b.topic('c1')), false, 'nothing left to cancel')
  })

  await t.test('A killed (SIGKILL): followers on B get end { lost } within 1.5 x runLease', async t => {
    const a2 = await startRuns(t, redis.url, prefix)
    t.equal((await fetch(`${a2.url}/generations/k1?every=5`, { method: 'POST' })).status, 200)
    const onB = await SseClient.open(`${b.url}/generations/k1/stream`)
    await onB.waitEvents(20, 15_000)
    const killed = performance.now()
    a2.child.kill('SIGKILL')
    t.equal(await onB.waitEnd(10_000), 'end')
    const ms = performance.now() - killed
    checkSequence(t, onB, 'lost')
    // The bound: the lease (600 ms) runs out, then a sweep (every 300 ms) ends it; plus scheduling slack on a busy machine.
    t.ok(ms < 1.5 * LEASE + 1_500, `end { lost } reached the follower ${Math.round(ms)} ms after the kill (lease ${LEASE} ms)`)
  })

  await t.test('a producer stopped past its lease (SIGSTOP) and resumed is fenced off', async t => {
    const a3 = await startRuns(t, redis.url, prefix)
    t.equal((await fetch(`${a3.url}/generations/s1?every=2`, { method: 'POST' })).status, 200)
    const onB = await SseClient.open(`${b.url}/generations/s1/stream`)
    await onB.waitEvents(20, 15_000)
    a3.child.kill('SIGSTOP')
    t.equal(await onB.waitEnd(10_000), 'end', 'B ended the run when its lease ran out')
    const n = checkSequence(t, onB, 'lost')
    a3.child.kill('SIGCONT')
    const s = await poll('the stale producer to learn its run ended', () => state(a3.url, 's1'), s => s.outcome !== null)
    t.equal(s.aborted, true, 'its signal aborted')
    t.equal(s.outcome?.reason, 'lost', 'run.finished says lost')
    const later = await SseClient.open(`${b.url}/generations/s1/stream`)
    t.equal(await later.waitEnd(15_000), 'end')
    t.equal(checkSequence(t, later, 'lost'), n, 'nothing the stale producer yielded after the end was published')
  })
})
