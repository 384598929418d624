// Several processes share one hub through Redis: a publish crosses Redis once
// and reaches subscribers on every instance; each process holds one Redis
// subscription per topic however many local subscribers, dropped with the
// last; app.close() closes only the connections the plugin opened.
import t from 'tap'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { Type } from '@sinclair/typebox'
import { Redis } from 'ioredis'
import { makeApp, SseClient } from './helpers/index.js'
import { RedisServer, redisSkip, epochOf } from './helpers/redis.js'
import { createPublisher, redisBackend } from '../lib/redis.js'
import { defineChannel } from '../lib/index.js'

const skip = redisSkip()
const root = fileURLToPath(new URL('..', import.meta.url))
const fixture = fileURLToPath(new URL('./fixtures/redis-instance.mjs', import.meta.url))

function startInstance (t: Parameters<Parameters<typeof t.test>[1]>[0], redisUrl: string, prefix: string): Promise<string> {
  const child: ChildProcess = spawn(process.execPath, [fixture, redisUrl, prefix], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGTERM') })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('instance did not start')), 15_000)
    createInterface({ input: child.stdout! }).once('line', line => {
      clearTimeout(timer)
      resolve(JSON.parse(line).url)
    })
    child.once('exit', code => reject(new Error(`instance exited with ${code}`)))
  })
}

const post = async (url: string, body: unknown): Promise<string> => {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (r.status !== 200) throw new Error(`publish answered ${r.status}: ${await r.text()}`)
  return ((await r.json()) as { id: string }).id
}

t.test('two processes: 1,000 topics with subscribers spread over both, each event crosses once', { skip }, async t => {
  if (!existsSync(new URL('../dist/esm/redis.js', import.meta.url))) execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit' })
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const [a, b] = await Promise.all([startInstance(t, redis.url, 'multi'), startInstance(t, redis.url, 'multi')])

  const TOPICS = 1_000
  // Topic i has one subscriber on A if i is even, on B if odd, and topic 0 one on each.
  const clients = await Promise.all(Array.from({ length: TOPICS }, (_, i) => SseClient.open(`${i % 2 === 0 ? a : b}/rooms/r${i}`)))
  const extra = await SseClient.open(`${b}/rooms/r0`)
  await Promise.all([...clients, extra].map(c => c.until('head', () => c.text.includes('id: '), 15_000)))

  const admin = redis.client()
  t.teardown(() => admin.quit())
  const [, subsR0] = await admin.pubsub('NUMSUB', 'multi:m:rooms/:roomId|rooms/r0') as [string, number]
  t.equal(Number(subsR0), 2, 'r0: one Redis subscription per process, not per subscriber')

  // Publish to every topic, alternating the instance that publishes.
  const ids: string[] = []
  for (let i = 0; i < TOPICS; i++) ids.push(await post(`${i % 3 === 0 ? a : b}/rooms/r${i}`, { room: `r${i}`, n: i }))
  await Promise.all(clients.map(c => c.waitEvents(1, 20_000)))
  for (let i = 0; i < TOPICS; i++) {
    const e = clients[i].events
    if (e.length !== 1 || e[0].id !== ids[i] || JSON.parse(e[0].data).room !== `r${i}`) {
      t.fail(`topic r${i} got ${JSON.stringify(e)}`)
      break
    }
  }
  await extra.waitEvents(1)
  t.equal(extra.events[0].id, ids[0], 'the second instance\'s subscriber of r0 got it too')
  const seqs = ids.map(id => Number(id.split('-')[1]))
  t.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'ids strictly increase across both publishers')
  t.equal(new Set(ids.map(epochOf)).size, 1, 'one epoch')
  const statsA = await (await fetch(a + '/stats')).json() as { topics: number, published: number }
  t.equal(statsA.topics, TOPICS / 2, 'A holds the topics of its own subscribers only')
  for (const c of [...clients, extra]) c.close()
})

t.test('one subscription per topic per process, dropped with the last subscriber', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const admin = redis.client()
  t.teardown(() => admin.quit())
  const { url } = await makeApp(t, app => {
    const news = app.sse.channel('news', { events: { item: Type.Object({ n: Type.Number() }) } })
    app.get('/s', (req, reply) => reply.sse({ subscribe: [news] }))
  }, { plugin: { backend: redisBackend({ url: redis.url, prefix: 'one' }) } })
  const numsub = async (): Promise<number> => Number((await admin.pubsub('NUMSUB', 'one:m:news|news') as [string, number])[1])
  const clients = await Promise.all(Array.from({ length: 20 }, () => SseClient.open(url + '/s')))
  await Promise.all(clients.map(c => c.until('head', () => c.text.includes('id: '))))
  t.equal(await numsub(), 1, '20 local subscribers, one Redis subscription')
  for (const c of clients.slice(1)) c.close()
  await Promise.all(clients.slice(1).map(c => c.waitEnd().catch(() => 'error')))
  t.equal(await numsub(), 1, 'still one while a subscriber remains')
  clients[0].close()
  await clients[0].waitEnd().catch(() => 'error')
  // The unsubscribe goes out when the server sees the close; wait for Redis to show it.
  const { waitFor } = await import('./helpers/index.js')
  let last = -1
  await waitFor('the Redis subscription to drop', () => last === 0, (wake) => {
    let stop = false
    const loop = async (): Promise<void> => { while (!stop) { last = await numsub(); wake(); if (last === 0) return } }
    void loop()
    return () => { stop = true }
  })
  t.equal(last, 0)
})

t.test('close() quits the connections the plugin opened, never a client passed in', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const admin = redis.client()
  t.teardown(() => admin.quit())
  const mine = new Redis(redis.url)
  t.teardown(() => mine.quit())
  const { app } = await makeApp(t, () => {}, { plugin: { backend: redisBackend({ redis: mine, prefix: 'own' }) } })
  const clientsBefore = String(await admin.client('LIST')).trim().split('\n').length
  await app.close()
  t.equal(mine.status, 'ready', 'the client passed in is still open')
  t.equal(await mine.ping(), 'PONG')
  const clientsAfter = String(await admin.client('LIST')).trim().split('\n').length
  t.equal(clientsBefore - clientsAfter, 1, 'the subscriber connection the plugin opened is gone')
})

t.test('createPublisher: a worker publishes typed, validated events with the app\'s channel definitions', { skip }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  // The shared module both sides import.
  const jobs = defineChannel('jobs/:jobId', { events: { progress: Type.Object({ pct: Type.Number({ minimum: 0, maximum: 100 }) }) } })
  const { url } = await makeApp(t, app => {
    app.sse.channel(jobs)
    app.get('/jobs/:id', (req, reply) => reply.sse({ subscribe: [jobs.topic({ jobId: (req.params as { id: string }).id })] }))
  }, { plugin: { backend: redisBackend({ url: redis.url, prefix: 'w' }) } })
  const client = await SseClient.open(url + '/jobs/7')
  await client.until('head', () => client.text.includes('id: '))

  // A second definition object, as a worker process would have from the same module.
  const workerJobs = defineChannel('jobs/:jobId', { events: { progress: Type.Object({ pct: Type.Number({ minimum: 0, maximum: 100 }) }) } })
  const publisher = await createPublisher({ url: redis.url, prefix: 'w' })
  t.teardown(() => publisher.close())
  publisher.channel(workerJobs)
  await t.rejects(workerJobs.topic({ jobId: '7' }).publish('progress', { pct: 140 }), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID' })
  const id = await workerJobs.topic({ jobId: '7' }).publish('progress', { pct: 40 })
  await client.waitEvents(1)
  t.same(client.events, [{ event: 'progress', id, data: '{"pct":40}' }], 'the invalid one was refused; the valid one arrived')
  client.close()
})
