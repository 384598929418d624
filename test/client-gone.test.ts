// A client that goes away (FIN or RST) releases everything its stream held:
// after 10,000 connect/disconnect cycles the counts are back at baseline.
import t from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { makeApp } from './helpers/index.js'
import { trackLibTimers } from './helpers/timers.js'
import { heavySuite } from './helpers/heavy.js'

await heavySuite()

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

const CYCLES = 10_000
const client = fileURLToPath(new URL('./fixtures/cycle-client.mjs', import.meta.url))

function resources (): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1
  return counts
}

/** Listeners on every emitter a stream could leave one on and outlive it. */
function listeners (emitters: Record<string, NodeJS.EventEmitter>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, e] of Object.entries(emitters)) out[name] = e.eventNames().reduce((n, ev) => n + e.listenerCount(ev), 0)
  return out
}

function heapAfterGc (): number {
  gc(); gc()
  return process.memoryUsage().heapUsed
}

t.test(`${CYCLES} connect/disconnect cycles leave nothing behind`, async t => {
  // Every timer lib/ makes, ref'd or not (the heartbeat timer is unref'd, so
  // process.getActiveResourcesInfo() alone would not see a leaked one).
  const timers = trackLibTimers()
  t.teardown(() => timers.stop())
  let closes = 0
  let allClosed!: () => void
  const everyStreamClosed = new Promise<void>(resolve => { allClosed = resolve })
  const { url, app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const stream = reply.sse()
      stream.onClose(() => { if (++closes === CYCLES) allClosed() })
    })
  }, { fastify: { logger: false }, plugin: { heartbeat: 1_000 } })
  const port = Number(new URL(url).port)

  // Warm up (JIT, pools), then take the baseline.
  await runClient(port, 200, 50)
  closes -= 200
  const baseResources = resources()
  const emitters = { server: app.server, hub: app.sse, process }
  const baseListeners = listeners(emitters)
  const baseTimers = timers.live()
  const baseHeap = heapAfterGc()

  const started = performance.now()
  const result = await runClient(port, CYCLES, 200)
  await everyStreamClosed
  const took = performance.now() - started
  t.same(result, { done: CYCLES, failed: result.failed }, 'the client completed every cycle')

  const stats = app.sse.stats()
  t.equal(stats.openStreams, 0, 'no stream left open')
  t.equal(stats.streamsOpened, CYCLES + 200)
  const after = resources()
  t.equal(after.TCPSocketWrap ?? 0, baseResources.TCPSocketWrap ?? 0, 'sockets back at baseline')
  t.equal(after.Timeout ?? 0, baseResources.Timeout ?? 0, 'ref\'d timers back at baseline')
  t.equal(timers.live(), baseTimers, 'timers made by lib/ back at baseline (the heartbeat timer stopped)')
  t.same(listeners(emitters), baseListeners, 'listeners on the server, the hub and the process back at baseline')
  const heap = heapAfterGc()
  const growth = heap - baseHeap
  t.comment(`${CYCLES} cycles in ${took.toFixed(0)} ms; heap ${(baseHeap / 1048576).toFixed(1)} MiB -> ${(heap / 1048576).toFixed(1)} MiB (${(growth / 1024).toFixed(0)} KiB)`)
  // 10,000 leaked streams would hold far more than this (each holds a
  // request, a reply and a response: several KiB).
  t.ok(growth < 2 * 1024 * 1024, `heap grew ${(growth / 1024).toFixed(0)} KiB`)
})

function runClient (port: number, total: number, concurrency: number): Promise<{ done: number, failed: number }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [client, String(port), String(total), String(concurrency)], { timeout: 150_000 }, (err, stdout) => {
      if (err) reject(err)
      else resolve(JSON.parse(stdout.trim().split('\n').pop() as string))
    })
  })
}
