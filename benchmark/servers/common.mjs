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
//
// `gc` is the process's garbage collection since start, from a perf_hooks
// observer: { ms: pause time on the main thread, count, majorMs: of which
// mark-sweep-compact }. The orchestrator reads it at both edges of a window
// to give GC's share of the server's CPU. The observer itself costs one
// callback per batch of GC entries, the same for every server.
import { PerformanceObserver, constants } from 'node:perf_hooks'

const gcTotals = { ms: 0, count: 0, majorMs: 0 }
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcTotals.ms += e.duration
    gcTotals.count++
    if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcTotals.majorMs += e.duration
  }
}).observe({ entryTypes: ['gc'] })

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
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, subscribers, gc: { ...gcTotals }, extra }
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

/** The /stats and /gc routes on a Fastify app. */
export function fastifyRoutes (app, count, extra = () => ({})) {
  app.get('/stats', async () => stats(count(), extra()))
  app.post('/gc', async () => {
    gc()
    return stats(count(), extra())
  })
}

/** The /stats and /gc routes on a node:http server; returns true if it answered. */
export function httpRoutes (req, res, count) {
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
