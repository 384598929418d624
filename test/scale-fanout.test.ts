// 10,000 subscribers of ONE channel (raw sockets in a child process): every
// socket gets all 20 events exactly once, in order; a turn that publishes k
// events costs one socket write per connection (10,000), not k x 10,000;
// stats count it; and everything is released when the clients leave.
import t from 'tap'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { Type } from '@sinclair/typebox'
import { memoryBackend } from '../lib/index.js'
import { makeApp } from './helpers/index.js'
import { LoadClient, badSockets, idsHash, memoryAfterGc, mib, now, turn } from './helpers/load.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

const N = 10_000
const WARM = 200

t.setTimeout(120_000)

t.test(`${N} subscribers of one channel each get all 20 events, one write per connection per turn`, async t => {
  t.setTimeout(120_000)
  const testStart = performance.now()
  let closes = 0
  let closeTarget = Infinity
  let allClosed = (): void => {}
  let publish!: (data: { symbol: string, price: number, n: number }) => Promise<string>
  const { app, url } = await makeApp(t, app => {
    const ticker = app.sse.channel('ticker', {
      events: { price: Type.Object({ symbol: Type.String(), price: Type.Number(), n: Type.Integer() }) }
    })
    publish = data => ticker.publish('price', data)
    app.get('/ticker', (req, reply) => {
      const stream = reply.sse({ subscribe: [ticker] })
      stream.onClose(() => { if (++closes === closeTarget) allClosed() })
    })
  }, { fastify: { logger: false }, plugin: { heartbeat: false, backend: memoryBackend() } })
  const port = Number(new URL(url).port)
  const closedUntil = (target: number): Promise<void> => new Promise((resolve, reject) => {
    if (closes >= target) return resolve()
    const timer = setTimeout(() => reject(new Error(`timed out: ${closes} of ${target} streams closed`)), 30_000)
    closeTarget = target
    allClosed = () => { clearTimeout(timer); resolve() }
  })

  // An independent count of the server's socket writes: Socket.prototype.write
  // calls on this server's sockets (the load client lives in another process).
  let socketWrites = 0
  const originalWrite = net.Socket.prototype.write
  net.Socket.prototype.write = function (this: net.Socket & { server?: unknown }, ...args: unknown[]) {
    if (this.server === app.server) socketWrites++
    return (originalWrite as (...a: unknown[]) => boolean).apply(this, args)
  } as typeof originalWrite
  t.teardown(() => { net.Socket.prototype.write = originalWrite })

  // Warm up (JIT, pools, the first history entries) so the baseline is fair.
  const warm = await LoadClient.start(t, { port, count: WARM, path: '/ticker', concurrency: 100, timeoutMs: 30_000 })
  t.match(await warm.connected(15_000), { ready: WARM, failed: 0 }, 'warm-up clients connected')
  warm.expect(1)
  await publish({ symbol: 'W', price: 0, n: -1 })
  await warm.complete(1, 10_000)
  const warmDone = closedUntil(WARM)
  await warm.close()
  await warmDone
  closes = 0
  closeTarget = Infinity
  t.equal(app.sse.stats().openStreams, 0, 'warm-up streams closed')

  const base = memoryAfterGc()

  // --- connect 10,000 ---------------------------------------------------
  const load = await LoadClient.start(t, { port, count: N, path: '/ticker', concurrency: 500, timeoutMs: 115_000 })
  const connected = await load.connected(90_000)
  t.same({ ready: connected.ready, failed: connected.failed }, { ready: N, failed: 0 },
    `every socket connected and got its head id (failures: ${JSON.stringify(connected.failures)})`)
  if (connected.ready !== N) return // the rest would only time out
  let stats = app.sse.stats()
  t.match(stats, { openStreams: N, subscriptions: N, topics: 1, channels: { ticker: { topics: 1, subscribers: N } } },
    'the hub holds 10,000 streams on one topic')
  const open = memoryAfterGc()
  const rssPerStream = (open.rss - base.rss) / N
  const heapPerStream = (open.heap - base.heap) / N
  t.comment(`connect: ${N} streams in ${connected.ms.toFixed(0)} ms; RSS ${mib(base.rss)} -> ${mib(open.rss)} = ` +
    `${(rssPerStream / 1024).toFixed(1)} KiB per open stream (heap ${(heapPerStream / 1024).toFixed(1)} KiB)`)
  // A sanity bound, far above what a stream should cost: a leak of a buffer per stream would break it.
  t.ok(rssPerStream < 64 * 1024, `RSS per open stream ${(rssPerStream / 1024).toFixed(1)} KiB < 64 KiB`)

  const ids: string[] = []

  // --- phase A: 10 events in ONE turn ------------------------------------
  let writes0 = stats.writes
  let sock0 = socketWrites
  let deliveries0 = stats.deliveries
  load.expect(10)
  const firstPublish = now()
  const burst: Array<Promise<string>> = []
  for (let n = 0; n < 10; n++) burst.push(publish({ symbol: 'ACME', price: 100 + n, n }))
  ids.push(...await Promise.all(burst))
  const aDone = await load.complete(10, 30_000)
  stats = app.sse.stats()
  t.equal(stats.writes - writes0, N, 'one turn with 10 events: stats.writes grew by 10,000 (one per connection), not 100,000')
  t.equal(socketWrites - sock0, N, 'and the sockets saw exactly 10,000 write() calls')
  t.equal(stats.deliveries - deliveries0, 10 * N, 'stats.deliveries counts 10 x 10,000')

  // --- phase B: 10 more events over 5 turns (2 per turn) -----------------
  writes0 = stats.writes
  sock0 = socketWrites
  deliveries0 = stats.deliveries
  load.expect(20)
  const bStart = now()
  for (let k = 0; k < 5; k++) {
    const pair = [
      publish({ symbol: 'ACME', price: 200 + k, n: 10 + 2 * k }),
      publish({ symbol: 'ACME', price: 300 + k, n: 11 + 2 * k })
    ]
    ids.push(...await Promise.all(pair))
    await turn() // the flush of this turn runs before the next publish
  }
  const bDone = await load.complete(20, 30_000)
  stats = app.sse.stats()
  t.equal(stats.writes - writes0, 5 * N, '5 turns with 2 events each: 5 x 10,000 writes, not 10 x 10,000')
  t.equal(socketWrites - sock0, 5 * N, 'and the sockets saw exactly 50,000 write() calls')
  t.equal(stats.deliveries - deliveries0, 10 * N, 'stats.deliveries counts 10 x 10,000')
  t.equal(stats.heartbeats, 0, 'no heartbeat was written (they would distort the write counts)')

  t.comment(`fan-out: first publish -> last socket has the 10-event burst: ${(aDone - firstPublish).toFixed(1)} ms; ` +
    `5 turns x 2 events: ${(bDone - bStart).toFixed(1)} ms; first publish -> last socket has all 20: ${(bDone - firstPublish).toFixed(1)} ms`)

  // --- every socket: all 20, exactly once, in order ---------------------
  t.equal(new Set(ids).size, 20, '20 distinct ids published')
  const expectedHash = idsHash(ids)
  const report = await load.report()
  const { bad, examples } = badSockets(report, i => {
    if (report.count[i] !== 20) return `${report.count[i]} events`
    if (report.outOfOrder[i] !== 0) return `${report.outOfOrder[i]} ids out of order or repeated`
    if (report.firstId[i] !== ids[0] || report.lastId[i] !== ids[19]) return `ids ${report.firstId[i]}..${report.lastId[i]}`
    if (report.hash[i] !== expectedHash) return 'a different id sequence'
    if (report.headId[i] === null || report.idOnly[i] !== 0 || report.noId[i] !== 0) return `head ${report.headId[i]}, idOnly ${report.idOnly[i]}, noId ${report.noId[i]}`
    if (report.closed[i]) return `closed early (${report.error[i]})`
    return null
  })
  t.equal(report.count.length, N, 'a report for every socket')
  t.equal(bad, 0, `every socket got the 20 ids exactly once, in order${bad > 0 ? ` — ${bad} did not: ${examples}` : ''}`)
  t.same(JSON.parse(report.firstData[N - 1] as string), { symbol: 'ACME', price: 100, n: 0 }, 'the payload arrived intact')

  // --- leave ------------------------------------------------------------
  const leaveStart = performance.now()
  const gone = closedUntil(N)
  await load.close()
  await gone
  const leaveMs = performance.now() - leaveStart
  stats = app.sse.stats()
  t.match(stats, { openStreams: 0, subscriptions: 0, topics: 0, channels: { ticker: { topics: 0, subscribers: 0 } } },
    'every stream and subscription released')
  t.comment(`leave: ${N} streams closed in ${leaveMs.toFixed(0)} ms`)
  // Closed sockets are freed by close callbacks a loop iteration or two
  // later; give them a few turns (not a timer), then the heap must be back
  // near the baseline: 10,000 leaked streams would hold ~60 MiB.
  for (let k = 0; k < 20; k++) await turn()
  const after = memoryAfterGc()
  t.comment(`heap: before ${mib(base.heap)}, with ${N} open ${mib(open.heap)}, after leaving ${mib(after.heap)}`)
  t.ok(after.heap - base.heap < 16 * 1048576, `heap back near its baseline after leaving (+${mib(after.heap - base.heap)})`)
  t.comment(`total ${((performance.now() - testStart) / 1000).toFixed(1)} s`)
})
