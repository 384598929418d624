#!/usr/bin/env node
// The benchmark orchestrator. See README.md. Usage:
//
//   node benchmark/run.mjs                   full matrix -> results/<run>.jsonl, RESULTS.md, chart.svg
//   node benchmark/run.mjs --quick           smoke run: N=100, one repetition, short windows
//   options: --systems a,b  --ns 100,1000  --reps 3  --cases fanout,many,slow  --rates 1000,5000
//            --out <file.jsonl>  --resume <file.jsonl>  --no-pin  --no-report
//            --profile  (CPU profile of the plugin server in the N=10,000 closed loop)
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
  else if (a === '--publisher') opt.publisher = argv[++i]
  else if (a === '--systems') opt.systems = argv[++i].split(',')
  else if (a === '--ns') opt.ns = argv[++i].split(',').map(Number)
  else if (a === '--reps') opt.reps = Number(argv[++i])
  else if (a === '--rates') opt.rates = argv[++i].split(',').map(Number)
  else if (a === '--cases') opt.cases = argv[++i].split(',')
  else if (a === '--out') opt.out = argv[++i]
  else if (a === '--resume') opt.resume = argv[++i]
  else if (a === '--help' || a === '-h') {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 13).join('\n'))
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
const cases = new Set(opt.cases ?? ['fanout', 'many', 'slow'])

const systems = []
const skipped = []
for (const sys of SYSTEMS) {
  if (opt.systems && !opt.systems.includes(sys.name)) continue
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

async function runScenario (ctx, sc) {
  const { clients, pids } = ctx
  // The plugin's own counters (socket writes, deliveries) over the scenario: how much it coalesced.
  const countersAt = async () => (await request(ctx.mainPort, 'GET', '/stats', 5000).catch(() => null))?.extra ?? null
  const c0 = await countersAt()
  const pub = new Publisher(ctx.pubPort, ctx.topics, ctx.g + 1, sc.pad ?? 48)
  await pub.connect()
  const subsPerEvent = ctx.n / ctx.topics
  const t0 = nowUs()
  const ws = t0 + sc.warmupMs * 1e3
  const we = ws + sc.windowMs * 1e3
  const closedLoop = sc.kind !== 'rate'
  clients.window(ws, we, closedLoop)
  await sleep(5) // the window reaches the workers before the first event
  const samples = {}
  let rssMax = 0
  const rssTimer = setInterval(() => {
    const r = rssBytes(pids.server)
    if (r > rssMax) rssMax = r
    if (r > ctx.rssCap) ctx.abort(`server RSS ${Math.round(r / 2 ** 20)} MiB over the ${Math.round(ctx.rssCap / 2 ** 20)} MiB cap`)
  }, 100)
  const atWs = setTimeout(() => { samples.s = sample(pids, clients) }, Math.max(0, (ws - nowUs()) / 1e3))
  const atWe = setTimeout(() => { samples.e = sample(pids, clients) }, Math.max(0, (we - nowUs()) / 1e3))

  // Publish until the window closes.
  await new Promise(resolve => {
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      clients.onWm = null
      clearTimeout(guard)
      resolve()
    }
    // autocannon is waited for (it stops itself at the end of its duration).
    const guard = setTimeout(finish, (we - nowUs()) / 1e3 + (sc.kind === 'rate' && opt.publisher === 'autocannon' ? 10000 : 5))
    if (closedLoop) {
      const cap = sc.inflight
      const pump = () => {
        if (finished) return
        if (nowUs() >= we || ctx.aborted) return finish()
        const done = Math.min(clients.wm, pub.g)
        const room = cap - (pub.g - done)
        if (room > 0) pub.send(room)
      }
      clients.onWm = pump
      pump()
    } else if (opt.publisher === 'autocannon') {
      // autocannon: one connection, pipelined, overallRate. Its rate limit is
      // a per-second budget (bursts, then waits for the next second), see README.
      import('autocannon').then(({ default: autocannon }) => {
        const topics = ctx.topics
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
              const g = ++pub.g
              pub.sent++
              pub.responses++
              const body = `{"g":${g},"n":${Math.floor((g - 1) / topics) + 1},"t":${Math.round(nowUs())},"p":"${'x'.repeat(48)}"}`
              return { ...req, path: `/publish/t${(g - 1) % topics}`, body }
            }
          }]
        }, (err, result) => {
          if (err) pub.firstError ??= String(err)
          if (result) {
            pub.errors += (result.non2xx ?? 0) + (result.errors ?? 0)
            if (result.non2xx || result.errors) pub.firstError ??= `autocannon: ${result.non2xx} non-2xx, ${result.errors} errors`
          }
          finish()
        })
      }, (err) => {
        pub.firstError ??= `autocannon: ${err.message}`
        pub.errors++
        finish()
      })
    } else {
      const rate = sc.rate
      const tick = () => {
        if (finished) return
        const now = nowUs()
        if (now >= we || ctx.aborted) return finish()
        const due = Math.floor(((now - t0) * rate) / 1e6)
        if (due > pub.sent) pub.send(due - pub.sent)
        setTimeout(tick, 1)
      }
      tick()
    }
  })
  const gEnd = pub.g
  ctx.g = gEnd
  // Make sure the end sample exists even if the timer has not fired.
  await sleep(Math.max(0, (we - nowUs()) / 1e3) + 2)
  samples.e ??= sample(pids, clients)
  samples.s ??= samples.e
  clearTimeout(atWs)
  clearTimeout(atWe)

  // Drain: until every subscriber has every event, bounded.
  // Drain until every subscriber has every event, bounded by drainMs. It
  // counts as stalled (events lost) only if nothing reached any subscriber for
  // 3 s while none of our processes wanted the CPU: the server busy writing a
  // big backlog, instance A working through queued POSTs, or any of them
  // starved by other load on the machine all show as demand (CPU time plus
  // run-queue wait) and are not a stall.
  const ours = () => [pids.server, ...pids.aux, ...clients.pids].reduce((a, pid) => a + demandUs(pid), 0)
  const drainStart = nowUs()
  await clients.pollWm(500)
  let lastRecv = clients.recv
  let lastProgress = drainStart
  let mark = { at: nowUs(), demand: ours() }
  let busy = true
  let stalled = false
  while (clients.wm < gEnd && !ctx.aborted) {
    const now = nowUs()
    if (now - drainStart > sc.drainMs * 1e3) break
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
  const drained = clients.wm >= gEnd
  const drainMs = (nowUs() - drainStart) / 1e3
  clearInterval(rssTimer)
  const answered = await pub.settle(2000)
  pub.close()

  const c1 = await countersAt()
  const reps = await clients.report()
  const hist = new Float64Array(BUCKETS)
  let deliveries = 0
  let latMax = 0
  let latCount = 0
  const integ = { missing: 0, dups: 0, outOfOrder: 0, endedSockets: 0 }
  let noReport = 0
  for (const r of reps) {
    if (r === null) { noReport++; continue }
    deliveries += r.recvInWindow
    latCount += r.latCount
    if (r.latMax > latMax) latMax = r.latMax
    mergeSparse(hist, r.hist)
    integ.missing += r.gaps
    integ.dups += r.dups
    integ.outOfOrder += r.ooo
    integ.endedSockets += r.ended
  }
  const backlogEvents = Math.max(0, gEnd - clients.wm)
  if (stalled) integ.missing += backlogEvents * subsPerEvent // never arrived, and nothing was moving
  const W = (samples.e.at - samples.s.at) / 1e6
  const serverUs = samples.e.server - samples.s.server
  const workerCpu = samples.e.workers.reduce((a, v, i) => a + (v - samples.s.workers[i]), 0)
  const selfCpu = (samples.e.self.user + samples.e.self.system) - (samples.s.self.user + samples.s.self.system)
  const clientCores = Math.max(1, ctx.clientCores)
  const clientCpuFrac = (workerCpu + selfCpu) / (W * 1e6) / clientCores
  const auxUs = samples.e.aux.reduce((a, v, i) => a + (v - samples.s.aux[i]), 0)
  // CPU used on this machine by processes that are not part of the benchmark, in cores.
  const foreignLoad = Math.max(0, (samples.e.machine - samples.s.machine) - serverUs - auxUs - workerCpu - selfCpu) / (W * 1e6)
  const deliveriesPerSec = W > 0 ? deliveries / W : 0
  const offered = sc.kind === 'rate' ? sc.rate * W * subsPerEvent : null
  const keptUp = sc.kind === 'rate' ? (drained && drainMs <= 1000 && deliveries >= 0.97 * offered) : null
  const reasons = []
  if (integ.missing > 0) reasons.push(`${integ.missing} missing`)
  if (integ.dups > 0) reasons.push(`${integ.dups} duplicated`)
  if (integ.outOfOrder > 0) reasons.push(`${integ.outOfOrder} out of order`)
  if (integ.endedSockets > 0) reasons.push(`${integ.endedSockets} streams ended early (${clients.closed[0]?.why ?? '?'})`)
  if (stalled) reasons.push(`delivery stalled ${backlogEvents} events short`)
  if (pub.errors > 0) reasons.push(`${pub.errors} publish errors: ${pub.firstError}`)
  if (!answered && drained) reasons.push(`${pub.sent - pub.responses} publishes unanswered`)
  if (noReport > 0) reasons.push(`${noReport} workers did not report`)
  if (ctx.aborted) reasons.push(`aborted: ${ctx.aborted}`)
  if (clients.fatal) reasons.push(`client: ${clients.fatal}`)
  const ms = (us) => us == null ? null : Math.round(us) / 1000
  return {
    type: 'scenario',
    scenario: sc.kind,
    inflight: sc.inflight ?? null,
    rate: sc.rate ?? null,
    windowMs: Math.round(W * 1000),
    ws: Math.round(samples.s.at),
    we: Math.round(samples.e.at),
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
    auxCpuFrac: samples.e.aux.map((v, i) => (v - samples.s.aux[i]) / (W * 1e6)),
    clientCpuFrac,
    clientSaturated: clientCpuFrac > 0.9,
    foreignLoad,
    rssStart: samples.s.rss,
    rssEnd: samples.e.rss,
    rssMax,
    offeredDeliveries: offered,
    keptUp,
    drained,
    drainMs: Math.round(drainMs),
    backlogEvents,
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
  const { sys, rep, kind, n, topics, scenarios } = c
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
    g: 0,
    gStartScenario: 0,
    rssCap: RSS_CAP,
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
    let serverArgs = sys.build && distSnapshot ? ['--dist', distSnapshot] : []
    if (sys.redis) {
      const prefix = `b${rep}${kind}${n}x${Date.now().toString(36)}`
      serverArgs.push('--redis', redis.url, '--prefix', prefix)
    }
    if (sys.build && c.pluginOptions) serverArgs.push('--options', JSON.stringify(c.pluginOptions))
    const nodeArgs = c.profileDir ? ['--cpu-prof', '--cpu-prof-dir', c.profileDir] : []
    // Subscribers' server (instance B for Redis) on its own core.
    const main = await startServer(sys.file, { cpu: serverCpu, args: serverArgs, nodeArgs })
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
    const conn = await clients.start({ port: main.port, count: n, topics, epoch, spreadSources: n > 25000 })
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
  const what = r.scenario === 'rate' ? `rate ${r.rate}/s` : r.scenario === 'closed' ? `closed ${r.inflight}` : `latency (1)`
  const busy = r.foreignLoad > 0.2 ? ` [other load ${r.foreignLoad.toFixed(2)} cores]` : ''
  const status = (r.failed ? `FAILED (${r.failReason})` : r.scenario === 'rate' ? (r.keptUp ? 'kept up' : `fell behind (backlog ${r.backlogEvents})`) : '') + busy
  console.log(`  ${c.sys.name.padEnd(15)} ${c.kind} N=${c.n} ${what}: ${fmt(r.deliveriesPerSec)} deliv/s, ${fmt(r.eventsPerSec)} ev/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} max ${r.latencyMs.max} ms, ${r.cpuUsPerDelivery?.toFixed(3)} us/deliv, server ${(r.serverCpuFrac * 100).toFixed(0)}% client ${(r.clientCpuFrac * 100).toFixed(0)}% ${status}`)
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
    const order = systems.map((_, i) => systems[(i + rep - 1) % systems.length])
    if (cases.has('fanout')) for (const n of M.ns) for (const sys of order) plan.push({ rep, kind: 'fanout', n, topics: 1, sys, scenarios: M.fanout })
    if (cases.has('many')) for (const sys of order) plan.push({ rep, kind: 'many', n: M.many.n, topics: M.many.topics, sys, scenarios: M.many.scenarios })
    if (cases.has('slow')) for (const sys of order) plan.push({ rep, kind: 'slow', n: M.slow.n, topics: 1, sys, scenarios: M.slow.scenarios, pluginOptions: M.slow.pluginOptions })
  }
  casesTotal = plan.length
  for (const c of plan) {
    const key = `${c.rep}|${c.kind}|${c.n}|${c.sys.name}`
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
  const sys = SYSTEMS.find(s => s.name === 'plugin')
  const dir = `${here}results/profile-${stamp}`
  mkdirSync(dir, { recursive: true })
  const sc = { kind: 'closed', inflight: 8, warmupMs: 500, windowMs: 10000, drainMs: 5000 }
  const n = opt.ns?.[0] ?? 10000
  const [rec] = (await runCase({ rep: 0, kind: 'profile', n, topics: 1, sys, scenarios: [sc], profileDir: dir })).filter(r => r.type === 'scenario')
  const file = readdirSync(dir).find(f => f.endsWith('.cpuprofile'))
  if (!file) throw new Error('no .cpuprofile written')
  const { summarize } = await import('./lib/profile.mjs')
  const md = summarize(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8')), { epoch, record: rec, n })
  writeFileSync(`${here}results/profile-plugin-${n}.md`, md)
  rmSync(dir, { recursive: true, force: true })
  console.log(md)
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
