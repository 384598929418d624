#!/usr/bin/env node
// The benchmark orchestrator. See README.md. Usage:
//
//   node benchmark/run.mjs                   full matrix -> results/<run>.jsonl, RESULTS.md, chart.svg
//   node benchmark/run.mjs --quick           smoke run: N=100, one repetition, short windows
//   options: --systems a,b  --ns 100,1000  --reps 3  --cases fanout,many,slow,targeted  --rates 1000,5000
//            --shapes 10000x1,1000x10  (targeted case: topics x subscribers per topic)
//            --window <ms>  (every measured window this long: a short look, not for RESULTS.md)
//            --warmup <ms>  (every warm-up this long: does a result hold once the server is warm?)
//            --out <file.jsonl>  --resume <file.jsonl>  --no-pin  --no-report
//            --profile  (CPU profile of the plugin server: N=10,000 closed loop, or with
//                        --cases targeted the first targeted shape; --systems x profiles x;
//                        --inflight 1: the fan-out at one event in flight)
//            --profile --alloc  (the same run, sampling allocations over the window instead of CPU)
//            --dist-b <dir/esm>  (adds system plugin-b: the plugin from another build, for A/B runs)
//            --node-args '--trace-gc ...'  --server-log <file>  (the subscribers' server only: extra
//                        node flags, and its stdout/stderr appended to a file)
//            --publisher autocannon  (fixed rates through autocannon instead of the paced publisher)
//
// Processes: each server is pinned to its own core with taskset; this
// process (publisher + orchestration) and the subscriber workers share the
// other core(s). Traffic goes to 127.0.0.1 only; every wait is bounded.
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync, rmSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { SYSTEMS, unavailable, matrix } from './lib/config.mjs'
import { Clients, request, sleep, startRedis, startServer, stop, stuckSubscriber, waitSubscribers, redisCommand } from './lib/procs.mjs'
import { Publisher } from './lib/publisher.mjs'
import { cpuUs, demandUs, rssBytes, allowedCpus, cpuModel, machineBusyUs } from './lib/proc.mjs'
import { monoUs, nowUs, setEpoch } from './lib/clock.mjs'
import { BUCKETS, mergeSparse, percentile } from './lib/hist.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2)
const opt = { quick: false, pin: true, report: true, profile: false, publisher: 'paced' }
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === '--quick') opt.quick = true
  else if (a === '--no-pin') opt.pin = false
  else if (a === '--no-report') opt.report = false
  else if (a === '--profile') opt.profile = true
  else if (a === '--alloc') opt.alloc = true
  else if (a === '--dist-b') opt.distB = argv[++i]
  else if (a === '--node-args') opt.nodeArgs = argv[++i].split(' ').filter(Boolean)
  else if (a === '--server-log') opt.serverLog = argv[++i]
  else if (a === '--publisher') opt.publisher = argv[++i]
  else if (a === '--systems') opt.systems = argv[++i].split(',')
  else if (a === '--ns') opt.ns = argv[++i].split(',').map(Number)
  else if (a === '--reps') opt.reps = Number(argv[++i])
  else if (a === '--rates') opt.rates = argv[++i].split(',').map(Number)
  else if (a === '--cases') opt.cases = argv[++i].split(',')
  else if (a === '--shapes') opt.shapes = argv[++i].split(',')
  else if (a === '--window') opt.windowMs = Number(argv[++i])
  else if (a === '--warmup') opt.warmupMs = Number(argv[++i])
  else if (a === '--inflight') opt.inflight = Number(argv[++i])
  else if (a === '--out') opt.out = argv[++i]
  else if (a === '--resume') opt.resume = argv[++i]
  else if (a === '--help' || a === '-h') {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 20).join('\n'))
    process.exit(0)
  } else {
    console.error(`unknown option ${a}`)
    process.exit(2)
  }
}

const M = matrix(opt.quick)
if (opt.ns) M.ns = opt.ns
if (opt.reps) M.reps = opt.reps
if (opt.rates) {
  const tpl = M.fanout.find(s => s.kind === 'rate')
  M.fanout = [...M.fanout.filter(s => s.kind !== 'rate'), ...opt.rates.map(rate => ({ ...tpl, rate }))]
}
if (opt.shapes) {
  // "10000x1": 10,000 topics x 1 subscriber each.
  M.targeted.shapes = opt.shapes.map(x => {
    const [topics, per] = x.split('x').map(Number)
    if (!(topics >= 1 && per >= 1)) { console.error(`bad shape ${x} (topics x subscribers per topic, e.g. 10000x1)`); process.exit(2) }
    return M.targeted.shapes.find(sh => sh.topics === topics && sh.n === topics * per) ?? { n: topics * per, topics, skip: ['fastify-sse-v2'] }
  })
}
if (opt.windowMs || opt.warmupMs) {
  const w = (list) => list.map(sc => ({ ...sc, windowMs: opt.windowMs ?? sc.windowMs, warmupMs: opt.warmupMs ?? sc.warmupMs }))
  M.fanout = w(M.fanout)
  M.many.scenarios = w(M.many.scenarios)
  M.slow.scenarios = w(M.slow.scenarios)
  M.targeted.scenarios = w(M.targeted.scenarios)
}
const cases = new Set(opt.cases ?? ['fanout', 'many', 'slow', 'targeted'])

if (opt.distB) {
  // An A/B run: the same plugin server on another build (an experiment), beside `plugin`.
  const plugin = SYSTEMS.find(s => s.name === 'plugin')
  SYSTEMS.push({ ...plugin, name: 'plugin-b', label: `fastify-sse-hub (B: ${opt.distB})`, dist: opt.distB, optional: false })
}
const systems = []
const skipped = []
for (const sys of SYSTEMS) {
  if (opt.systems ? !opt.systems.includes(sys.name) : sys.optional) continue
  const why = unavailable(sys)
  if (why === null) systems.push(sys)
  else skipped.push({ system: sys.name, why })
}
if (opt.systems) {
  for (const name of opt.systems) if (!SYSTEMS.some(s => s.name === name)) { console.error(`unknown system ${name}`); process.exit(2) }
}
for (const s of skipped) console.log(`skipping ${s.system}: ${s.why}`)
if (systems.length === 0) {
  console.error('no system can run')
  process.exit(1)
}

// ---------------------------------------------------------------- cores
const cpus = allowedCpus()
let serverCpu = null
let auxCpu = null
let clientCpus = cpus
if (opt.pin && cpus.length >= 2) {
  serverCpu = cpus[0]
  auxCpu = cpus[1]
  clientCpus = cpus.length >= 3 ? cpus.slice(2) : cpus.slice(1)
  try {
    execFileSync('taskset', ['-a', '-pc', clientCpus.join(','), String(process.pid)], { stdio: 'ignore' })
  } catch (err) {
    console.log(`could not pin the client (${err.message}); running unpinned`)
    serverCpu = auxCpu = null
    clientCpus = cpus
  }
}
const workers = Math.max(1, serverCpu === null ? Math.min(2, Math.max(1, cpus.length - 1)) : clientCpus.length)

// ---------------------------------------------------------------- output
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-')
const runId = `${opt.quick ? 'quick' : 'full'}-${stamp}`
let outFile = opt.resume ?? opt.out
if (!outFile) {
  if (opt.quick || opt.profile) outFile = `${os.tmpdir()}/fastify-sse-hub-bench-${runId}.jsonl`
  else {
    mkdirSync(`${here}results`, { recursive: true })
    outFile = `${here}results/${runId}.jsonl`
  }
}
const done = new Set()
if (opt.resume && existsSync(opt.resume)) {
  for (const line of readFileSync(opt.resume, 'utf8').split('\n')) {
    if (!line.trim()) continue
    const r = JSON.parse(line)
    if (r.type === 'case-done') done.add(r.key)
  }
  console.log(`resuming ${opt.resume}: ${done.size} cases already done`)
}
const run = opt.resume ? (readFileSync(opt.resume, 'utf8').split('\n')[0] && JSON.parse(readFileSync(opt.resume, 'utf8').split('\n')[0]).run) ?? runId : runId

function emit (rec) {
  appendFileSync(outFile, JSON.stringify({ run, ...rec }) + '\n')
}

const machine = {
  publisher: opt.publisher,
  cpus: os.cpus().length,
  allowedCpus: cpus,
  cpuModel: cpuModel(),
  node: process.version,
  platform: `${os.type()} ${os.release()}`,
  memGiB: Math.round(os.totalmem() / 2 ** 30),
  date: new Date().toISOString(),
  pinning: serverCpu === null ? 'none' : { server: serverCpu, aux: auxCpu, client: clientCpus },
  clientWorkers: workers
}

// ---------------------------------------------------------------- the build
// The plugin runs from a snapshot of dist/esm taken now, inside the root's
// node_modules (so its imports resolve as from dist/): a rebuild of dist/
// while the run goes on (rm + tsc) neither breaks nor changes what is measured.
const root = fileURLToPath(new URL('..', import.meta.url))
let distSnapshot = null
function git (...a) {
  try { return execFileSync('git', a, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) } catch { return null }
}
const build = { commit: git('rev-parse', '--short', 'HEAD')?.trim() ?? null, libChanges: git('status', '--porcelain', 'lib')?.split('\n').filter(Boolean).map(l => l.slice(3)) ?? null }
async function snapshotDist () {
  const dir = `${root}node_modules/.cache/fastify-sse-hub-bench/${process.pid}-${stamp}`
  for (let i = 0; i < 120; i++) {
    try {
      if (existsSync(`${root}dist/esm/index.js`) && existsSync(`${root}dist/esm/redis.js`)) {
        rmSync(dir, { recursive: true, force: true })
        cpSync(`${root}dist/esm`, `${dir}/esm`, { recursive: true })
        if (existsSync(`${dir}/esm/index.js`) && existsSync(`${dir}/esm/redis.js`) && existsSync(`${dir}/esm/package.json`)) {
          distSnapshot = `${dir}/esm`
          return
        }
      }
    } catch {}
    await sleep(500)
  }
  throw new Error('dist/esm did not become complete within 60 s (is someone rebuilding?)')
}

if (!done.size) emit({ type: 'meta', quick: opt.quick, machine, build, matrix: M, systems: systems.map(s => s.name), skipped })

// ---------------------------------------------------------------- clock
const epoch = monoUs() - 1e6
setEpoch(epoch)

// ---------------------------------------------------------------- one scenario
// runScenario = window watch + publish loop + drain + merge of the workers'
// reports + the record. Each piece below is one of those steps.
function sample (pids, clients) {
  return {
    at: nowUs(),
    server: cpuUs(pids.server),
    aux: pids.aux.map(cpuUs),
    workers: clients.pids.map(cpuUs),
    self: process.cpuUsage(),
    rss: rssBytes(pids.server),
    machine: machineBusyUs()
  }
}

/** The server's garbage collection so far ({ ms, count, majorMs } from its /stats), or null. */
function gcAt (port) {
  return request(port, 'GET', '/stats', 5000).then(s => s.gc ?? null, () => null)
}

/**
 * Samples the processes at both edges of the window [ws, we) (CPU, RSS, and
 * the server's GC from /stats) and watches the server's RSS every 100 ms
 * until stop() (its maximum; over the cap the case is aborted).
 */
function watchWindow (ctx, ws, we) {
  const { pids, clients } = ctx
  const w = { samples: {}, gc: {}, rssMax: 0 }
  const rssTimer = setInterval(() => {
    const r = rssBytes(pids.server)
    if (r > w.rssMax) w.rssMax = r
    if (r > ctx.rssCap) ctx.abort(`server RSS ${Math.round(r / 2 ** 20)} MiB over the ${Math.round(ctx.rssCap / 2 ** 20)} MiB cap`)
  }, 100)
  const edge = (name) => {
    // Allocation sampling (--profile --alloc) covers exactly the window.
    if (ctx.alloc && name === 's') request(ctx.mainPort, 'POST', '/alloc/start', 5000).catch(() => null)
    if (ctx.alloc && name === 'e') w.alloc = request(ctx.mainPort, 'POST', '/alloc/stop', 30000).catch((err) => ({ error: err.message }))
    w.samples[name] = sample(pids, clients)
    w.gc[name] = gcAt(ctx.mainPort)
  }
  const atWs = setTimeout(() => edge('s'), Math.max(0, (ws - nowUs()) / 1e3))
  const atWe = setTimeout(() => edge('e'), Math.max(0, (we - nowUs()) / 1e3))
  /** Once the window is over: both samples exist (taken now if a timer has not fired). */
  w.closed = async () => {
    await sleep(Math.max(0, (we - nowUs()) / 1e3) + 2)
    if (!w.samples.e) edge('e')
    if (!w.samples.s) {
      w.samples.s = w.samples.e
      w.gc.s = w.gc.e
    }
    clearTimeout(atWs)
    clearTimeout(atWe)
  }
  w.stop = () => clearInterval(rssTimer)
  return w
}

/**
 * Closed loop: at most sc.inflight events published and not yet received by
 * every subscriber; sends as soon as the watermark makes room.
 */
function closedLoop (ctx, sc, pub, we, loop) {
  const { clients } = ctx
  const cap = sc.inflight
  const pump = () => {
    if (loop.finished()) return
    if (nowUs() >= we || ctx.aborted) return loop.finish()
    const done = Math.min(clients.wm, pub.g)
    const room = cap - (pub.g - done)
    if (room > 0) pub.send(room)
  }
  clients.onWm = pump
  pump()
}

/** Fixed rate, open loop: a 1 ms timer sends whatever the rate makes due since t0. */
function pacedLoop (ctx, sc, pub, t0, we, loop) {
  const rate = sc.rate
  const tick = () => {
    if (loop.finished()) return
    const now = nowUs()
    if (now >= we || ctx.aborted) return loop.finish()
    const due = Math.floor(((now - t0) * rate) / 1e6)
    if (due > pub.sent) pub.send(due - pub.sent)
    setTimeout(tick, 1)
  }
  tick()
}

/**
 * Fixed rate through autocannon: one connection, pipelined, overallRate. Its
 * rate limit is a per-second budget (bursts, then waits for the next second),
 * see README. It stops itself at the end of its duration.
 */
function autocannonLoop (ctx, sc, pub, we, loop) {
  import('autocannon').then(({ default: autocannon }) => {
    autocannon({
      url: `http://127.0.0.1:${ctx.pubPort}`,
      connections: 1,
      pipelining: 64,
      overallRate: sc.rate,
      duration: Math.max(0.1, (we - nowUs()) / 1e6),
      requests: [{
        method: 'POST',
        path: '/publish/t0',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req) => {
          const { g, topic, n } = pub.next()
          pub.sent++
          pub.responses++
          return { ...req, path: `/publish/t${topic}`, body: pub.body(g, n, Math.round(nowUs())) }
        }
      }]
    }, (err, result) => {
      if (err) pub.firstError ??= String(err)
      if (result) {
        pub.errors += (result.non2xx ?? 0) + (result.errors ?? 0)
        if (result.non2xx || result.errors) pub.firstError ??= `autocannon: ${result.non2xx} non-2xx, ${result.errors} errors`
      }
      loop.finish()
    })
  }, (err) => {
    pub.firstError ??= `autocannon: ${err.message}`
    pub.errors++
    loop.finish()
  })
}

/** Publishes until the window closes (bounded by a guard timer). */
function publishWindow (ctx, sc, pub, t0, we) {
  const viaAutocannon = sc.kind === 'rate' && opt.publisher === 'autocannon'
  return new Promise(resolve => {
    let finished = false
    const loop = {
      finished: () => finished,
      finish: () => {
        if (finished) return
        finished = true
        ctx.clients.onWm = null
        clearTimeout(guard)
        resolve()
      }
    }
    // autocannon is waited for (it stops itself at the end of its duration).
    const guard = setTimeout(loop.finish, (we - nowUs()) / 1e3 + (viaAutocannon ? 10000 : 5))
    if (sc.kind !== 'rate') closedLoop(ctx, sc, pub, we, loop)
    else if (viaAutocannon) autocannonLoop(ctx, sc, pub, we, loop)
    else pacedLoop(ctx, sc, pub, t0, we, loop)
  })
}

/**
 * Drains until every subscriber has every event up to gEnd, bounded by
 * sc.drainMs. It counts as stalled (events lost) only if nothing reached any
 * subscriber for 3 s while none of our processes wanted the CPU: the server
 * busy writing a big backlog, instance A working through queued POSTs, or any
 * of them starved by other load on the machine all show as demand (CPU time
 * plus run-queue wait) and are not a stall.
 */
async function drain (ctx, sc, gEnd) {
  const { clients, pids } = ctx
  const ours = () => [pids.server, ...pids.aux, ...clients.pids].reduce((a, pid) => a + demandUs(pid), 0)
  const start = nowUs()
  await clients.pollWm(500)
  let lastRecv = clients.recv
  let lastProgress = start
  let mark = { at: nowUs(), demand: ours() }
  let busy = true
  let stalled = false
  while (clients.wm < gEnd && !ctx.aborted) {
    if (nowUs() - start > sc.drainMs * 1e3) break
    await sleep(10)
    await clients.pollWm(500)
    if (clients.recv > lastRecv) {
      lastRecv = clients.recv
      lastProgress = nowUs()
    }
    if (nowUs() - mark.at >= 1e6) {
      const d = ours()
      // The workers answer the polls: allow them ~2% of a core for that.
      busy = (d - mark.demand) / (nowUs() - mark.at) > 0.05
      mark = { at: nowUs(), demand: d }
    }
    if (nowUs() - lastProgress > 3e6 && !busy) {
      stalled = true
      break
    }
  }
  return { drained: clients.wm >= gEnd, drainMs: (nowUs() - start) / 1e3, stalled }
}

/** The workers' reports merged: deliveries, latency histogram, integrity counters. */
function mergeReports (reps) {
  const m = { hist: new Float64Array(BUCKETS), deliveries: 0, latMax: 0, latCount: 0, noReport: 0, short: 0, integ: { missing: 0, dups: 0, outOfOrder: 0, endedSockets: 0 } }
  for (const r of reps) {
    if (r === null) { m.noReport++; continue }
    m.deliveries += r.recvInWindow
    m.latCount += r.latCount
    if (r.latMax > m.latMax) m.latMax = r.latMax
    mergeSparse(m.hist, r.hist)
    m.integ.missing += r.gaps
    m.integ.dups += r.dups
    m.integ.outOfOrder += r.ooo
    m.integ.endedSockets += r.ended
    m.short += r.short ?? 0
  }
  return m
}

/** Why a scenario failed (empty if it passed). */
function failReasons (ctx, { integ, stalled, backlogEvents, pub, answered, drained, noReport, closedLoop, drainMs }) {
  const reasons = []
  if (closedLoop && !drained && !stalled) reasons.push(`not drained after ${Math.round(drainMs)} ms (${backlogEvents} events behind)`)
  if (integ.missing > 0) reasons.push(`${integ.missing} missing`)
  if (integ.dups > 0) reasons.push(`${integ.dups} duplicated`)
  if (integ.outOfOrder > 0) reasons.push(`${integ.outOfOrder} out of order`)
  if (integ.endedSockets > 0) reasons.push(`${integ.endedSockets} streams ended early (${ctx.clients.closed[0]?.why ?? '?'})`)
  if (stalled) reasons.push(`delivery stalled ${backlogEvents} events short`)
  if (pub.errors > 0) reasons.push(`${pub.errors} publish errors: ${pub.firstError}`)
  if (!answered && drained) reasons.push(`${pub.sent - pub.responses} publishes unanswered`)
  if (noReport > 0) reasons.push(`${noReport} workers did not report`)
  if (ctx.aborted) reasons.push(`aborted: ${ctx.aborted}`)
  if (ctx.clients.fatal) reasons.push(`client: ${ctx.clients.fatal}`)
  return reasons
}

/** The CPU, RSS and GC figures of the window, from its two samples. */
async function windowFigures (ctx, win) {
  const { s, e } = win.samples
  const W = (e.at - s.at) / 1e6
  const serverUs = e.server - s.server
  const workerCpu = e.workers.reduce((a, v, i) => a + (v - s.workers[i]), 0)
  const selfCpu = (e.self.user + e.self.system) - (s.self.user + s.self.system)
  const auxUs = e.aux.reduce((a, v, i) => a + (v - s.aux[i]), 0)
  const [gcS, gcE] = await Promise.all([win.gc.s, win.gc.e])
  const gcMs = gcS && gcE ? gcE.ms - gcS.ms : null
  return {
    W,
    serverUs,
    clientCpuFrac: (workerCpu + selfCpu) / (W * 1e6) / Math.max(1, ctx.clientCores),
    auxCpuFrac: e.aux.map((v, i) => (v - s.aux[i]) / (W * 1e6)),
    // CPU used on this machine by processes that are not part of the benchmark, in cores.
    foreignLoad: Math.max(0, (e.machine - s.machine) - serverUs - auxUs - workerCpu - selfCpu) / (W * 1e6),
    // GC pauses on the server's main thread inside the window, and their share of its CPU time.
    // promoted: old-space growth over the window, when no mark-compact ran in it (else unknown).
    gc: gcMs == null ? null : { ms: gcMs, count: gcE.count - gcS.count, majorMs: gcE.majorMs - gcS.majorMs, share: serverUs > 0 ? (gcMs * 1e3) / serverUs : null, promoted: gcE.old != null && gcE.majors === gcS.majors ? gcE.old - gcS.old : null },
    rssStart: s.rss,
    rssEnd: e.rss
  }
}

async function runScenario (ctx, sc) {
  const { clients } = ctx
  // The plugin's own counters (socket writes, deliveries) over the scenario: how much it coalesced.
  const countersAt = async () => (await request(ctx.mainPort, 'GET', '/stats', 5000).catch(() => null))?.extra ?? null
  const c0 = await countersAt()
  const pub = new Publisher(ctx.pubPort, ctx.topics, ctx.g + 1, { pad: sc.pad ?? 48, conns: sc.conns ?? 1, pick: ctx.pick, seq: ctx.seq })
  await pub.connect()
  const subsPerEvent = ctx.n / ctx.topics
  const t0 = nowUs()
  const ws = t0 + sc.warmupMs * 1e3
  const we = ws + sc.windowMs * 1e3
  clients.window(ws, we, sc.kind !== 'rate')
  await sleep(5) // the window reaches the workers before the first event
  const win = watchWindow(ctx, ws, we)

  await publishWindow(ctx, sc, pub, t0, we)
  const gEnd = pub.g
  ctx.g = gEnd
  await win.closed()
  const { drained, drainMs, stalled } = await drain(ctx, sc, gEnd)
  win.stop()
  const answered = await pub.settle(2000)
  pub.close()

  const c1 = await countersAt()
  const reps = await clients.report(ctx.seq)
  const { hist, deliveries, latMax, latCount, integ, noReport, short } = mergeReports(reps)
  const backlogEvents = Math.max(0, gEnd - clients.wm)
  // Deliveries still owed once the drain is over (per socket: its topic's last n minus its own).
  // A closed loop has at most `inflight` events out, so after the drain they are lost, not late;
  // so are they when delivery stalled. A fixed rate that fell behind may still be delivering.
  if (stalled || sc.kind !== 'rate') integ.missing += short
  const f = await windowFigures(ctx, win)
  const { W, serverUs } = f
  const deliveriesPerSec = W > 0 ? deliveries / W : 0
  const offered = sc.kind === 'rate' ? sc.rate * W * subsPerEvent : null
  const keptUp = sc.kind === 'rate' ? (drained && drainMs <= 1000 && deliveries >= 0.97 * offered) : null
  const reasons = failReasons(ctx, { integ, stalled, backlogEvents, pub, answered, drained, noReport, closedLoop: sc.kind !== 'rate', drainMs })
  const ms = (us) => us == null ? null : Math.round(us) / 1000
  return {
    type: 'scenario',
    scenario: sc.kind,
    inflight: sc.inflight ?? null,
    conns: sc.conns ?? 1,
    pick: ctx.pick,
    rate: sc.rate ?? null,
    windowMs: Math.round(W * 1000),
    ws: Math.round(win.samples.s.at),
    we: Math.round(win.samples.e.at),
    events: gEnd - ctx.gStartScenario,
    deliveries,
    deliveriesPerSec,
    eventsPerSec: deliveriesPerSec / subsPerEvent,
    latencyMs: { p50: ms(percentile(hist, 50)), p99: ms(percentile(hist, 99)), max: ms(latMax), samples: latCount },
    // Only when every event of the window was delivered are the percentiles complete (else the slowest are missing).
    latencyComplete: drained,
    serverCpuUs: serverUs,
    serverCpuFrac: serverUs / (W * 1e6),
    cpuUsPerDelivery: deliveries > 0 ? serverUs / deliveries : null,
    auxCpuFrac: f.auxCpuFrac,
    clientCpuFrac: f.clientCpuFrac,
    clientSaturated: f.clientCpuFrac > 0.9,
    foreignLoad: f.foreignLoad,
    gc: f.gc == null ? null : { ...f.gc, promotedPerEvent: f.gc.promoted != null && deliveries > 0 ? f.gc.promoted / (deliveries / subsPerEvent) : null },
    rssStart: f.rssStart,
    rssEnd: f.rssEnd,
    rssMax: win.rssMax,
    offeredDeliveries: offered,
    keptUp,
    drained,
    drainMs: Math.round(drainMs),
    backlogEvents,
    undelivered: short,
    alloc: win.alloc ? await win.alloc : undefined,
    integrity: integ,
    // What the workers saw: lowest last n over sockets, watermark, events received this scenario.
    client: reps.filter(Boolean).map(r => ({ minLastN: r.minLastN, wm: r.wm, events: r.events })),
    gEnd,
    published: pub.sent,
    answered: pub.responses,
    // Server-side (this plugin only), warm-up and drain included: deliveries per socket write.
    serverWrites: c0?.writes != null && c1?.writes != null ? c1.writes - c0.writes : null,
    deliveriesPerWrite: c0?.writes != null && c1?.writes != null && c1.writes > c0.writes ? (c1.deliveries - c0.deliveries) / (c1.writes - c0.writes) : null,
    failed: reasons.length > 0,
    failReason: reasons.join('; ') || null
  }
}

// ---------------------------------------------------------------- quiet gate
// This machine may be shared: before a case, wait (bounded) until processes
// that are not ours use less than QUIET_CORES, so fewer windows are measured
// under someone else's load. Every window still records the foreign load it saw.
const QUIET_CORES = 0.3
let gateWaited = 0
async function quietGate (maxMs) {
  const start = Date.now()
  let load = 0
  for (;;) {
    const m0 = machineBusyUs()
    const s0 = process.cpuUsage()
    const r0 = redis ? cpuUs(redis.pid) : 0
    await sleep(1000)
    const s1 = process.cpuUsage()
    const ours = (s1.user + s1.system - s0.user - s0.system) + (redis ? cpuUs(redis.pid) - r0 : 0)
    load = Math.max(0, machineBusyUs() - m0 - ours) / 1e6
    if (load < QUIET_CORES || Date.now() - start >= maxMs) return { waitedMs: Date.now() - start, foreignLoad: load }
  }
}

// ---------------------------------------------------------------- one case
const RSS_CAP = Math.min(8 * 2 ** 30, os.totalmem() * 0.35)
let redis = null

async function runCase (c) {
  const { sys, rep, kind, n, topics, scenarios, pick = 'rr' } = c
  const base = { rep, system: sys.name, case: kind, n, topics }
  const out = []
  const record = (r) => {
    const full = { ...base, ...r }
    out.push(full)
    emit(full)
    return full
  }
  const procs = []
  let clients = null
  let stuck = null
  const ctx = {
    n,
    topics,
    pick,
    seq: new Int32Array(topics), // each topic's last n, across the scenarios of the case
    g: 0,
    gStartScenario: 0,
    rssCap: RSS_CAP,
    alloc: !!c.alloc,
    aborted: null,
    clientCores: clientCpus.length,
    abort: (why) => {
      if (ctx.aborted) return
      ctx.aborted = why
      for (const p of procs) p.child.kill('SIGKILL')
    }
  }
  const caseTimer = setTimeout(() => ctx.abort('case took over 180 s'), 180000)
  try {
    const serverArgs = sys.dist ? ['--dist', sys.dist] : sys.build && distSnapshot ? ['--dist', distSnapshot] : []
    if (sys.redis) {
      const prefix = `b${rep}${kind}${n}x${Date.now().toString(36)}`
      serverArgs.push('--redis', redis.url, '--prefix', prefix)
    }
    if (sys.build && (c.pluginOptions || sys.options)) serverArgs.push('--options', JSON.stringify({ ...sys.options, ...c.pluginOptions }))
    const nodeArgs = [...(c.profileDir ? ['--cpu-prof', '--cpu-prof-dir', c.profileDir] : []), ...(opt.nodeArgs ?? [])]
    // Subscribers' server (instance B for Redis) on its own core.
    const main = await startServer(sys.file, { cpu: serverCpu, args: serverArgs, nodeArgs, log: opt.serverLog })
    procs.push(main)
    let pubSrv = main
    if (sys.redis) {
      pubSrv = await startServer(sys.file, { cpu: auxCpu, args: serverArgs })
      procs.push(pubSrv)
    }
    ctx.pubPort = pubSrv.port
    ctx.mainPort = main.port
    ctx.pids = { server: main.pid, aux: sys.redis ? [pubSrv.pid, redis.pid] : [] }

    const before = await request(main.port, 'POST', '/gc')
    clients = new Clients(workers)
    ctx.clients = clients
    const conn = await clients.start({ port: main.port, count: n, topics, pick, epoch, spreadSources: n > 25000 })
    if (conn.failed > 0) throw new Error(`${conn.failed} subscribers failed to connect: ${conn.firstError}`)
    await waitSubscribers(main.port, n, 30000)
    const idle = await request(main.port, 'POST', '/gc')
    record({
      type: 'idle',
      quietGate: c.quiet ?? null,
      connectMs: conn.ms,
      rssBase: before.rss,
      rssIdle: idle.rss,
      rssPerStream: (idle.rss - before.rss) / n,
      heapPerStream: (idle.heapUsed - before.heapUsed) / n
    })

    let broken = null
    for (const sc of scenarios) {
      if (broken) {
        record({ type: 'scenario', scenario: sc.kind, inflight: sc.inflight ?? null, rate: sc.rate ?? null, skipped: broken })
        continue
      }
      if (sc.stuck && !stuck) {
        // The slow consumer joins: it sends its GET and never reads a byte.
        stuck = await stuckSubscriber(main.port)
        await waitSubscribers(main.port, n + 1, 30000)
      }
      ctx.gStartScenario = ctx.g
      const r = record({ ...(await runScenario(ctx, sc)), stuck: !!sc.stuck, pad: sc.pad ?? 48 })
      progress(c, r)
      if (ctx.aborted) broken = `case aborted: ${ctx.aborted}`
      else if (r.failed && (!r.drained || r.integrity.endedSockets > 0)) broken = 'an earlier scenario of this case failed'
      else if (!r.drained) broken = `the ${sc.kind === 'rate' ? `${sc.rate}/s` : sc.kind} scenario left a backlog (not drained in ${Math.round(sc.drainMs / 1000)} s)`
      else if (sc.kind === 'rate' && !r.keptUp) broken = `did not keep up at ${sc.rate}/s, so not at a higher rate either`
      if (sc.kind === 'closed' && !ctx.aborted && kind === 'fanout') {
        try {
          const after = await request(main.port, 'POST', '/gc', 20000)
          record({ type: 'after-load', rss: after.rss, heapUsed: after.heapUsed })
        } catch (err) {
          record({ type: 'after-load', rss: null, error: err.message })
          broken ??= 'the server did not answer /gc after the closed loop'
        }
      }
    }
    if (stuck && !ctx.aborted) {
      const st = await request(main.port, 'GET', '/stats', 20000).catch(() => null)
      record({ type: 'slow-consumer', subscribersAfter: st?.subscribers ?? null, stuckCut: st ? st.subscribers <= n : null, extra: st?.extra ?? null, rss: st?.rss ?? null })
    }
  } catch (err) {
    record({ type: 'error', error: String(err.stack ?? err).slice(0, 2000), aborted: ctx.aborted })
    console.log(`  ! ${sys.name} ${kind} N=${n}: ${err.message}`)
  } finally {
    clearTimeout(caseTimer)
    stuck?.destroy()
    await clients?.close()
    for (const p of procs.reverse()) await stop(p.child)
    if (sys.redis && redis) await redisCommand(redis.port, 'FLUSHALL').catch(() => {})
  }
  return out
}

// ---------------------------------------------------------------- progress
const t0 = Date.now()
let casesDone = 0
let casesTotal = 0
function fmt (x) {
  if (x == null || Number.isNaN(x)) return '-'
  if (x >= 1e6) return (x / 1e6).toFixed(2) + 'M'
  if (x >= 1e3) return (x / 1e3).toFixed(1) + 'k'
  return x.toFixed(x < 10 ? 2 : 0)
}
function progress (c, r) {
  const what = r.scenario === 'rate' ? `rate ${r.rate}/s` : r.scenario === 'closed' ? `closed ${r.inflight}` : 'latency (1)'
  const busy = r.foreignLoad > 0.2 ? ` [other load ${r.foreignLoad.toFixed(2)} cores]` : ''
  const status = (r.failed ? `FAILED (${r.failReason})` : r.scenario === 'rate' ? (r.keptUp ? 'kept up' : `fell behind (backlog ${r.backlogEvents})`) : '') + busy
  const shape = c.topics > 1 ? ` (${c.topics}x${c.n / c.topics})` : ''
  const gc = (r.gc?.share != null ? ` GC ${(r.gc.share * 100).toFixed(1)}%` : '') + (r.gc?.promotedPerEvent != null ? ` promoted ${Math.round(r.gc.promotedPerEvent)} B/event` : '')
  console.log(`  ${c.sys.name.padEnd(15)} ${c.kind} N=${c.n}${shape} ${what}: ${fmt(r.deliveriesPerSec)} deliv/s, ${fmt(r.eventsPerSec)} ev/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} max ${r.latencyMs.max} ms, ${r.cpuUsPerDelivery?.toFixed(3)} us/deliv, server ${(r.serverCpuFrac * 100).toFixed(0)}%${gc} RSS ${Math.round(r.rssEnd / 2 ** 20)} MiB client ${(r.clientCpuFrac * 100).toFixed(0)}% ${status}`)
}

// ---------------------------------------------------------------- main
async function main () {
  console.log(`run ${run}: ${machine.cpus} cores (${machine.cpuModel}), Node ${machine.node}; server cpu ${serverCpu ?? '-'}, client cpus ${clientCpus.join(',')} (${workers} worker${workers > 1 ? 's' : ''})`)
  console.log(`results -> ${outFile}`)
  if (systems.some(s => s.build)) await snapshotDist()
  if (systems.some(s => s.redis)) redis = await startRedis(auxCpu)

  if (opt.profile) {
    await profileRun()
    return
  }

  const plan = []
  for (let rep = 1; rep <= M.reps; rep++) {
    // Interleaved: every system once per repetition, in a rotated order.
    const rotated = systems.map((_, i) => systems[(i + rep - 1) % systems.length])
    const order = (kind) => rotated.filter(sys => sys.cases === undefined || sys.cases.includes(kind))
    if (cases.has('fanout')) for (const n of M.ns) for (const sys of order('fanout')) plan.push({ rep, kind: 'fanout', n, topics: 1, sys, scenarios: M.fanout })
    if (cases.has('many')) for (const sys of order('many')) plan.push({ rep, kind: 'many', n: M.many.n, topics: M.many.topics, sys, scenarios: M.many.scenarios })
    if (cases.has('slow')) for (const sys of order('slow')) plan.push({ rep, kind: 'slow', n: M.slow.n, topics: 1, sys, scenarios: M.slow.scenarios, pluginOptions: M.slow.pluginOptions })
    if (cases.has('targeted')) {
      for (const sh of M.targeted.shapes) {
        for (const sys of order('targeted')) {
          if (sh.skip?.includes(sys.name)) continue
          plan.push({ rep, kind: 'targeted', n: sh.n, topics: sh.topics, pick: M.targeted.pick, sys, scenarios: M.targeted.scenarios })
        }
      }
    }
  }
  casesTotal = plan.length
  for (const c of plan) {
    // Targeted shapes share N: the key names the topics too.
    const key = c.kind === 'targeted' ? `${c.rep}|${c.kind}|${c.n}x${c.topics}|${c.sys.name}` : `${c.rep}|${c.kind}|${c.n}|${c.sys.name}`
    casesDone++
    if (done.has(key)) continue
    const elapsed = (Date.now() - t0) / 1000
    const eta = casesDone > 1 ? ` ~${Math.round(elapsed / (casesDone - 1) * (casesTotal - casesDone + 1) / 60)} min left` : ''
    console.log(`[${casesDone}/${casesTotal}] rep ${c.rep} ${c.kind} N=${c.n}${c.topics > 1 ? ` (${c.topics} topics)` : ''} ${c.sys.name}  (${Math.floor(elapsed / 60)}m${Math.round(elapsed % 60)}s${eta})`)
    // At most 5 s per case and 3 min over the whole run: on a machine that
    // stays busy, waiting does not help and the run must still end.
    const quiet = opt.quick ? null : await quietGate(Math.min(5000, Math.max(0, 180000 - gateWaited)))
    if (quiet) gateWaited += quiet.waitedMs
    if (quiet && quiet.foreignLoad >= QUIET_CORES) console.log(`  (machine busy: ${quiet.foreignLoad.toFixed(2)} cores used by other processes after waiting ${Math.round(quiet.waitedMs / 1000)} s)`)
    c.quiet = quiet
    await runCase(c)
    emit({ type: 'case-done', key })
  }
  console.log(`done in ${((Date.now() - t0) / 60000).toFixed(1)} min -> ${outFile}`)
}

async function profileRun () {
  // The plugin by default; --systems x profiles x instead (a peer, for comparison).
  const sys = systems.find(s => s.name === (opt.systems?.[0] ?? 'plugin'))
  if (!sys) throw new Error(`cannot profile ${opt.systems?.[0] ?? 'plugin'}: not available`)
  const dir = `${here}results/profile-${stamp}`
  mkdirSync(dir, { recursive: true })
  const tg = opt.cases?.includes('targeted')
  const windowMs = opt.quick ? 2000 : 10000
  let c, name
  if (tg) {
    const sh = M.targeted.shapes[0]
    c = { rep: 0, kind: 'profile', n: sh.n, topics: sh.topics, pick: M.targeted.pick, sys, scenarios: [{ ...M.targeted.scenarios[0], windowMs, drainMs: 5000 }] }
    name = `profile-${sys.name}-targeted-${sh.topics}x${sh.n / sh.topics}`
  } else {
    const n = opt.ns?.[0] ?? 10000
    const inflight = opt.inflight ?? 8
    c = { rep: 0, kind: 'profile', n, topics: 1, sys, scenarios: [{ kind: inflight === 1 ? 'latency' : 'closed', inflight, warmupMs: 500, windowMs, drainMs: 5000 }] }
    name = `profile-${sys.name}-${n}${inflight === 8 ? '' : `-inflight${inflight}`}`
  }
  if (opt.alloc) {
    const [rec] = (await runCase({ ...c, alloc: true })).filter(r => r.type === 'scenario')
    if (!rec?.alloc?.byFunction) throw new Error(`no allocation profile: ${rec?.alloc?.error ?? rec?.failReason ?? 'the case failed'}`)
    const { summarizeAlloc } = await import('./lib/profile.mjs')
    const md = summarizeAlloc(rec, { n: c.n, topics: c.topics, system: sys.label, scenario: c.scenarios[0] })
    writeFileSync(`${here}results/${name.replace(/^profile-/, 'alloc-')}.md`, md)
    rmSync(dir, { recursive: true, force: true })
    console.log(md)
    return
  }
  const [rec] = (await runCase({ ...c, profileDir: dir })).filter(r => r.type === 'scenario')
  const file = readdirSync(dir).find(f => f.endsWith('.cpuprofile'))
  if (!file) throw new Error('no .cpuprofile written')
  const { summarize } = await import('./lib/profile.mjs')
  const md = summarize(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8')), { epoch, record: rec, n: c.n, topics: c.topics, system: sys.label, scenario: c.scenarios[0] })
  writeFileSync(`${here}results/${name}.md`, md)
  rmSync(dir, { recursive: true, force: true })
  console.log(md)
}

// Stopped by a signal: the servers and workers exit on their own (their IPC
// channel closes); the dist snapshot is ours to remove.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    if (distSnapshot) rmSync(distSnapshot.replace(/\/esm$/, ''), { recursive: true, force: true })
    process.exit(130)
  })
}

try {
  await main()
} finally {
  if (redis) await stop(redis.child)
  if (distSnapshot) rmSync(distSnapshot.replace(/\/esm$/, ''), { recursive: true, force: true })
}
if (opt.report && !opt.profile) {
  const { writeReport, summaryTable } = await import('./lib/report.mjs')
  if (opt.quick) console.log('\n' + summaryTable(outFile))
  else {
    writeReport(outFile, here)
    console.log(`wrote ${here}RESULTS.md and ${here}chart.svg`)
  }
}
