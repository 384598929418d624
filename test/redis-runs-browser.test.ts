// Producer runs across instances, followed by a real browser (Chromium's
// native EventSource), on Redis (issue 16): instance A (a child process) runs
// the producer, the page follows through instance B. A reload mid-generation
// continues from the stored id with no token missing or doubled; a cancel on B
// stops A's producer and the page gets `end { cancelled }`; when A is killed
// (SIGKILL) the page gets `end { lost }` within the documented bound; after the
// end, the browser's own reconnect gets 204 and EventSource stops. One page,
// light: it does not take the heavy-suite lock (its bound is generous).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Type } from '@sinclair/typebox'
import { makeApp, type T } from './helpers/index.js'
import { engineSkip, startEngines, openEnginePage } from './helpers/browser.js'
import { openRaw, type RawSeen } from './helpers/probe.js'
import { RedisServer, redisSkip } from './helpers/redis.js'
import { startInstance, type Instance } from './helpers/instance.js'
import { redisBackend } from '../lib/redis.js'

declare const raw: Record<string, RawSeen>

const root = fileURLToPath(new URL('..', import.meta.url))
const LEASE = 600
const NAMES = ['token', 'done', 'end']
const skip = redisSkip() || engineSkip('chromium')

const startRuns = (t: T, redisUrl: string, prefix: string): Promise<Instance> => startInstance(t, 'run-instance.mjs', [redisUrl, prefix, String(LEASE)])

const PAGE = '<!doctype html><html><head><meta charset="utf-8"><title>follow</title></head><body></body></html>'

function tokensOf (events: RawSeen['events']): string[] {
  return events.filter(e => e.event === 'token').map(e => JSON.parse(e.data).text)
}

t.test('chromium follows runs of another instance through Redis', { skip }, async t => {
  if (!existsSync(new URL('../dist/esm/redis.js', import.meta.url))) execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit' })
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const prefix = 'browser-runs'
  let generation!: any
  const b = await makeApp(t, app => {
    generation = app.sse.channel('generations/:id', {
      events: { token: Type.Object({ text: Type.String() }), done: Type.Object({ reason: Type.String() }) },
      history: { limit: 100_000, ttl: 600_000 }
    })
    app.get('/page', async (_req, reply) => reply.type('text/html; charset=utf-8').send(PAGE))
    app.get<{ Params: { id: string } }>('/generations/:id/stream', (req, reply) =>
      reply.sse({ subscribe: [generation.topic(req.params)], since: 'start', until: 'done' }))
  }, { plugin: { backend: redisBackend({ url: redis.url, prefix, runLease: LEASE }), retry: 200, retryJitter: 0 } })
  const engine = await startEngines(t, {}, ['chromium']).get(t, 'chromium')
  const a = await startRuns(t, redis.url, prefix)

  await t.test('reload mid-generation, then cancel on B: the producer on A stops, the page gets end { cancelled }', async t => {
    t.equal((await fetch(`${a.url}/generations/r1?every=5`, { method: 'POST' })).status, 200)
    const page = await openEnginePage(t, engine)
    await page.goto(`${b.url}/page`)
    await page.evaluate(openRaw, { key: 'g', url: '/generations/r1/stream', names: NAMES })
    await page.waitFor(() => raw.g.events.length >= 30)
    const before = await page.evaluate(() => raw.g.events)
    // A reload: the page stored the id of the last token it showed and follows from there.
    await page.goto(`${b.url}/page`)
    const last = before.at(-1)?.id as string
    await page.evaluate(openRaw, { key: 'g', url: `/generations/r1/stream?lastEventId=${encodeURIComponent(last)}`, names: NAMES })
    await page.waitFor(() => raw.g.events.length >= 20)
    t.equal(await b.app.sse.cancel(generation.topic({ id: 'r1' })), true, 'B cancels the run A runs')
    await page.waitFor(() => raw.g.events.some(e => e.event === 'end'))
    const after = await page.evaluate(() => raw.g.events)
    const tokens = [...tokensOf(before), ...tokensOf(after)]
    t.same(tokens, tokens.map((_, i) => `t${i} `), `${tokens.length} tokens across the reload: none missing, none doubled`)
    t.same(after.at(-1), { ...after.at(-1), event: 'end', data: '{"reason":"cancelled"}' }, 'then end { cancelled }, last')
    t.equal(after.filter(e => e.event === 'end').length, 1)
    // The response ended after the end; the browser reconnects once, gets 204, and stops.
    await page.waitFor(() => (window as any).sources.g.readyState === 2)
    const state = await (await fetch(`${a.url}/generations/r1/aborted`)).json() as { aborted: boolean }
    t.equal(state.aborted, true, 'the producer\'s signal aborted on A')
    await page.close()
  })

  await t.test('A killed: the page gets end { lost } within 1.5 x runLease', async t => {
    t.equal((await fetch(`${a.url}/generations/k1?every=5`, { method: 'POST' })).status, 200)
    const page = await openEnginePage(t, engine)
    await page.goto(`${b.url}/page`)
    await page.evaluate(openRaw, { key: 'g', url: '/generations/k1/stream', names: NAMES })
    await page.waitFor(() => raw.g.events.length >= 20)
    const killed = Date.now()
    a.child.kill('SIGKILL')
    await page.waitFor(() => raw.g.events.some(e => e.event === 'end'), undefined, 10_000)
    const ms = Date.now() - killed
    const events = await page.evaluate(() => raw.g.events)
    const tokens = tokensOf(events)
    t.same(tokens, tokens.map((_, i) => `t${i} `), `${tokens.length} tokens, in order`)
    t.equal(events.at(-1)?.data, '{"reason":"lost"}', 'then end { lost }')
    t.ok(ms < 1.5 * LEASE + 1_500, `the page had it ${ms} ms after the kill (lease ${LEASE} ms)`)
    await page.close()
  })
})
