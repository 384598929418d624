// What every benchmark server shares: argument parsing, the /stats and /gc
// routes, the ready line on stdout and a clean exit on SIGTERM (so that
// `node --cpu-prof` writes its profile).
//
// Every server answers the same routes:
//   GET  /sse/:topic      an SSE stream following one topic; something is
//                         written at once (headers, and a first frame or comment)
//   POST /publish/:topic  JSON body {"g","n","t","p"} -> broadcast as event `tick`; 204
//   GET  /stats           { rss, heapUsed, external, subscribers, gc, extra }
//   POST /gc              runs a full GC (node --expose-gc), then answers like /stats
//   POST /alloc/start     starts V8's sampling heap profiler, counting objects the GC
//                         has already collected too (so it sees what a publish allocates,
//                         not only what stays); POST /alloc/stop stops it and answers
//                         { bytes, byFunction: [[key, bytes]] } (see allocStop)
//
// `gc` is the process's garbage collection since start, from a perf_hooks
// observer: { ms: pause time on the main thread, count, majorMs: of which
// mark-sweep-compact, majors: their count, old: bytes used in V8's old
// space now }. Between two mark-compacts the old space only grows by what
// scavenges promote, so its growth over a window without one is what the
// window promoted: objects that lived through two scavenges (a figure that,
// unlike pause times, does not depend on how busy the machine is). The orchestrator reads it at both edges of a window
// to give GC's share of the server's CPU. The observer itself costs one
// callback per batch of GC entries, the same for every server.
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { Session } from 'node:inspector/promises'
import v8 from 'node:v8'

const gcTotals = { ms: 0, count: 0, majorMs: 0, majors: 0 }
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcTotals.ms += e.duration
    gcTotals.count++
    if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      gcTotals.majorMs += e.duration
      gcTotals.majors++
    }
  }
}).observe({ entryTypes: ['gc'] })

function oldSpaceUsed () {
  for (const sp of v8.getHeapSpaceStatistics()) if (sp.space_name === 'old_space') return sp.space_used_size
  return null
}

export function args () {
  const out = { port: 0, host: '127.0.0.1', redis: null, prefix: 'bench' }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '')
    out[k] = argv[++i]
  }
  out.port = Number(out.port)
  return out
}

export function stats (subscribers, extra = {}) {
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, subscribers, gc: { ...gcTotals, old: oldSpaceUsed() }, extra }
}

export function gc () {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc()
    globalThis.gc()
  }
}

export function ready (port) {
  process.stdout.write(JSON.stringify({ ready: true, port, pid: process.pid }) + '\n')
}

export function onTerm (close) {
  let done = false
  const exit = () => {
    if (done) return
    done = true
    // Bounded: a server that cannot close in time exits anyway.
    setTimeout(() => process.exit(0), 2000).unref()
    Promise.resolve().then(close).catch(() => {}).finally(() => process.exit(0))
  }
  process.on('SIGTERM', exit)
  process.on('SIGINT', exit)
  process.on('disconnect', exit)
}

let session = null

/** Starts sampling allocations (every ~8 KiB allocated, on average), collected objects included. */
export async function allocStart () {
  if (session === null) {
    session = new Session()
    session.connect()
    await session.post('HeapProfiler.enable')
  }
  // BENCH_ALLOC=survivors leaves out what scavenges freed: what is left is
  // what lived through one (still live, or promoted): what feeds promotion.
  const minor = process.env.BENCH_ALLOC !== 'survivors'
  await session.post('HeapProfiler.startSampling', { samplingInterval: 8192, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: minor })
  return { started: true }
}

/** Stops sampling: the estimated bytes allocated, by function (self), largest first. */
export async function allocStop () {
  const { profile } = await session.post('HeapProfiler.stopSampling')
  const by = new Map()
  let bytes = 0
  const walk = (node) => {
    const cf = node.callFrame
    const url = cf.url.replace(/^file:\/\//, '').replace(/.*\/node_modules\/\.cache\/fastify-sse-hub-bench\/[^/]+\//, 'dist/').replace(/.*\/node_modules\//, '').replace(/.*\/benchmark\//, 'benchmark/')
    const key = `${cf.functionName || '(anonymous)'}${url ? ` ${url}:${cf.lineNumber + 1}` : ''}`
    bytes += node.selfSize
    if (node.selfSize > 0) by.set(key, (by.get(key) ?? 0) + node.selfSize)
    for (const c of node.children) walk(c)
  }
  walk(profile.head)
  return { bytes, byFunction: [...by].sort((a, b) => b[1] - a[1]).slice(0, 60) }
}

/** The /stats and /gc routes on a Fastify app. */
export function fastifyRoutes (app, count, extra = () => ({})) {
  app.get('/stats', async () => stats(count(), extra()))
  app.post('/gc', async () => {
    gc()
    return stats(count(), extra())
  })
  app.post('/alloc/start', allocStart)
  app.post('/alloc/stop', allocStop)
}

/** The /stats and /gc routes on a node:http server; returns true if it answered. */
export function httpRoutes (req, res, count) {
  if (req.url === '/alloc/start' || req.url === '/alloc/stop') {
    (req.url === '/alloc/start' ? allocStart() : allocStop()).then((out) => {
      const body = JSON.stringify(out)
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
    req.resume()
    return true
  }
  if (req.url === '/stats' || req.url === '/gc') {
    if (req.url === '/gc') gc()
    const body = JSON.stringify(stats(count()))
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
    req.resume()
    return true
  }
  return false
}
