#!/usr/bin/env node
// The plugin's own cost per publish, from `topic.publish()` to `socket.write()`,
// without the HTTP request that carries a publish in the matrix. For comparing
// builds of lib/ (A/B) on the targeted workload, where per-publish cost decides.
//
//   node benchmark/publish-path.mjs [--dist a/esm,b/esm] [--topics 10000] [--per 1]
//        [--events 100000] [--warmup 30000] [--reps 3] [--history 1000] [--alloc] [--no-pin]
//
// Per variant and repetition (interleaved), a fresh server process (pinned to
// core 0 with taskset) declares the benchmark's channel (`bench/:topic`, a
// TypeBox-typed event, validation and default history on), lets subscriber
// workers (client/subscriber.mjs, pinned to the other core) open topics x per
// streams, then publishes in-process: 64 events per event-loop turn to
// uniformly random topics (lib/topics.mjs), a setImmediate between turns so
// each turn's flush runs as in the server. Measured over the `events` after
// the warm-up: the process's CPU time per publish (process.cpuUsage, all
// threads: its own work, including GC helpers, whatever else runs on the
// machine), GC pauses (perf_hooks), old-space growth per event (promoted, if no
// mark-compact ran), RSS at the end, and with --alloc the JS-heap bytes
// allocated per publish (V8 sampling heap profiler). Every subscriber must end
// with exactly its topic's events, in order, or the run says FAILED.
//
// CPU time per publish is the figure to compare: unlike throughput it hardly
// depends on what else the machine runs (still, use several repetitions).
import { execFileSync, spawn } from 'node:child_process'
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { existsSync } from 'node:fs'
import v8 from 'node:v8'
import { Clients, sleep } from './lib/procs.mjs'
import { allowedCpus } from './lib/proc.mjs'
import { monoUs, nowUs, setEpoch } from './lib/clock.mjs'
import { topicPicker } from './lib/topics.mjs'

const here = fileURLToPath(new URL('.', import.meta.url))
const argv = process.argv.slice(2)
const opt = { dist: null, topics: 10000, per: 1, events: 100000, warmup: 30000, reps: 3, history: null, alloc: false, pin: true, child: false, epoch: null }
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === '--dist') opt.dist = argv[++i]
  else if (a === '--topics') opt.topics = Number(argv[++i])
  else if (a === '--per') opt.per = Number(argv[++i])
  else if (a === '--events') opt.events = Number(argv[++i])
  else if (a === '--warmup') opt.warmup = Number(argv[++i])
  else if (a === '--reps') opt.reps = Number(argv[++i])
  else if (a === '--history') opt.history = Number(argv[++i])
  else if (a === '--alloc') opt.alloc = true
  else if (a === '--no-pin') opt.pin = false
  else if (a === '--child') opt.child = true
  else if (a === '--epoch') opt.epoch = Number(argv[++i])
  else {
    console.error(`unknown option ${a}`)
    process.exit(2)
  }
}
const PER_TURN = 64

if (opt.child) await child()
else await parent()

async function parent () {
  const root = fileURLToPath(new URL('..', import.meta.url))
  const variants = (opt.dist ?? `${root}dist/esm`).split(',')
  for (const v of variants) {
    if (!existsSync(`${v}/index.js`)) {
      console.error(`${v}/index.js is missing (npm run build; a copy of dist/esm must sit inside the repository, e.g. node_modules/.cache/x/esm, so its imports resolve)`)
      process.exit(1)
    }
  }
  const cpus = allowedCpus()
  const pin = opt.pin && cpus.length >= 2
  const epoch = monoUs() - 1e6
  const results = variants.map(() => [])
  for (let rep = 1; rep <= opt.reps; rep++) {
    for (let k = 0; k < variants.length; k++) {
      const i = (k + rep - 1) % variants.length // rotate the order
      const args = [...(opt.alloc ? [] : []), '--expose-gc', fileURLToPath(import.meta.url), '--child', '--dist', variants[i],
        '--topics', String(opt.topics), '--per', String(opt.per), '--events', String(opt.events), '--warmup', String(opt.warmup),
        '--epoch', String(epoch), ...(opt.history != null ? ['--history', String(opt.history)] : []), ...(opt.alloc ? ['--alloc'] : []),
        ...(pin ? [] : ['--no-pin'])]
      const [cmd, full] = pin ? ['taskset', ['-c', String(cpus[0]), process.execPath, ...args]] : [process.execPath, args]
      const r = await runChild(cmd, full)
      results[i].push(r)
      console.log(`rep ${rep} ${variants[i]}: ${r.error ? `ERROR ${r.error}` : `${r.cpuUsPerPublish.toFixed(2)} us CPU/publish, GC ${r.gcMsPer1k.toFixed(2)} ms/1k publishes (${r.gcCount}), promoted ${r.promotedPerEvent == null ? '-' : Math.round(r.promotedPerEvent)} B/event, RSS ${Math.round(r.rss / 2 ** 20)} MiB${r.allocPerPublish ? `, allocated ${Math.round(r.allocPerPublish)} B/publish` : ''}, ${r.ok ? 'every delivery checked' : `FAILED: ${r.fail}`}`}`)
    }
  }
  const med = (xs) => { const a = xs.filter(x => x != null).sort((p, q) => p - q); return a.length ? (a.length % 2 ? a[a.length >> 1] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2) : null }
  console.log(`\n${opt.topics} topics x ${opt.per}, ${opt.events} publishes measured after ${opt.warmup}, ${PER_TURN} per turn; medians of ${opt.reps}:`)
  console.log('| build | CPU µs/publish | GC ms per 1k publishes | promoted B/event | RSS MiB | allocated B/publish | ok runs |')
  console.log('|---|---:|---:|---:|---:|---:|---:|')
  const base = med(results[0].filter(r => r.ok).map(r => r.cpuUsPerPublish))
  variants.forEach((v, i) => {
    const ok = results[i].filter(r => r.ok)
    const cpu = med(ok.map(r => r.cpuUsPerPublish))
    const rel = i > 0 && base ? ` (${(cpu / base).toFixed(2)}×)` : ''
    console.log(`| ${v} | ${cpu?.toFixed(2) ?? '–'}${rel} | ${med(ok.map(r => r.gcMsPer1k))?.toFixed(2) ?? '–'} | ${med(ok.map(r => r.promotedPerEvent))?.toFixed(0) ?? '–'} | ${((med(ok.map(r => r.rss)) ?? 0) / 2 ** 20).toFixed(0)} | ${med(ok.map(r => r.allocPerPublish))?.toFixed(0) ?? '–'} | ${ok.length}/${results[i].length} |`)
  })
}

function runChild (cmd, args) {
  return new Promise(resolve => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], cwd: here })
    let out = ''
    let err = ''
    c.stdout.setEncoding('utf8').on('data', s => { out += s })
    c.stderr.setEncoding('utf8').on('data', s => { if (err.length < 4000) err += s })
    const timer = setTimeout(() => c.kill('SIGKILL'), 300000)
    c.once('exit', (code) => {
      clearTimeout(timer)
      const line = out.split('\n').find(l => l.startsWith('{"result"'))
      if (!line) return resolve({ error: `exit ${code}: ${err.slice(0, 800)}` })
      resolve(JSON.parse(line).result)
    })
  })
}

async function child () {
  // Bounded by the parent: if it goes (a timeout), so does this run.
  process.on('disconnect', () => process.exit(1))
  setEpoch(opt.epoch)
  const dist = pathToFileURL(opt.dist + '/').href
  const { default: sse } = await import(dist + 'index.js')
  const { default: Fastify } = await import('fastify')
  const { Type } = await import('@sinclair/typebox')
  const app = Fastify({ logger: false })
  await app.register(sse, opt.history != null ? { history: opt.history } : {})
  const bench = app.sse.channel('bench/:topic', {
    events: { tick: Type.Object({ g: Type.Integer(), n: Type.Integer(), t: Type.Number(), p: Type.String() }) }
  })
  app.get('/sse/:topic', (req, reply) => reply.sse({ subscribe: [bench.topic({ topic: req.params.topic })] }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = app.server.address().port

  const n = opt.topics * opt.per
  const clients = new Clients(1)
  const conn = await clients.start({ port, count: n, topics: opt.topics, pick: 'random', epoch: opt.epoch })
  if (conn.failed > 0) throw new Error(`${conn.failed} subscribers failed: ${conn.firstError}`)
  // The workers inherited this process's core: move them to the others.
  const cpus = allowedCpus()
  if (!argv.includes('--no-pin')) {
    const others = (await import('node:os')).default.cpus().map((_, i) => i).filter(i => i !== cpus[0])
    for (const pid of clients.pids) {
      try { execFileSync('taskset', ['-a', '-pc', others.join(','), String(pid)], { stdio: 'ignore' }) } catch {}
    }
  }
  for (let i = 0; i < 600 && app.sse.stats().subscriptions < n; i++) await sleep(50)

  const topicOf = topicPicker('random', opt.topics)
  const seq = new Int32Array(opt.topics)
  const pad = 'x'.repeat(48)
  let g = 0
  const turn = () => new Promise(resolve => setImmediate(resolve))
  async function publish (count) {
    let failed = null
    const onErr = (err) => { failed ??= err }
    while (count > 0) {
      const k = Math.min(PER_TURN, count)
      const t = Math.round(nowUs())
      for (let i = 0; i < k; i++) {
        const gg = ++g
        const topic = topicOf(gg)
        const nn = ++seq[topic]
        bench.topic({ topic: 't' + topic }).publish('tick', { g: gg, n: nn, t, p: pad }).catch(onErr)
      }
      count -= k
      await turn()
      if (failed) throw failed
    }
    await turn()
  }

  const gc = { ms: 0, count: 0, majors: 0 }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.ms += e.duration
      gc.count++
      if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.majors++
    }
  }).observe({ entryTypes: ['gc'] })
  const old = () => v8.getHeapSpaceStatistics().find(s => s.space_name === 'old_space').space_used_size

  clients.window(Infinity, -Infinity, false)
  await publish(opt.warmup)
  await turn() // GC observer entries of the warm-up are in
  let session = null
  if (opt.alloc) {
    const { Session } = await import('node:inspector/promises')
    session = new Session()
    session.connect()
    await session.post('HeapProfiler.enable')
    await session.post('HeapProfiler.startSampling', { samplingInterval: 8192, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
  }
  const gc0 = { ...gc }
  const old0 = old()
  const cpu0 = process.cpuUsage()
  await publish(opt.events)
  const cpu1 = process.cpuUsage()
  const old1 = old()
  await turn()
  const gc1 = { ...gc }
  let allocBytes = null
  if (session) {
    const { profile } = await session.post('HeapProfiler.stopSampling')
    allocBytes = 0
    const walk = (nd) => { allocBytes += nd.selfSize; for (const c of nd.children) walk(c) }
    walk(profile.head)
  }
  const rss = process.memoryUsage().rss

  // Every subscriber has every event of its topic, in order.
  for (let i = 0; i < 300 && clients.wm < g; i++) await clients.pollWm(500)
  const reps = await clients.report(seq)
  let gaps = 0; let dups = 0; let ooo = 0; let ended = 0; let short = 0; let events = 0
  for (const r of reps) {
    if (!r) { ended = -1; continue }
    gaps += r.gaps; dups += r.dups; ooo += r.ooo; ended += r.ended; short += r.short; events += r.events
  }
  const fails = []
  if (gaps || short) fails.push(`${gaps + short} missing`)
  if (dups) fails.push(`${dups} duplicated`)
  if (ooo) fails.push(`${ooo} out of order`)
  if (ended) fails.push(`${ended} streams ended`)
  if (events !== g * opt.per) fails.push(`${events} deliveries for ${g} events x ${opt.per}`)
  await clients.close()
  const result = {
    cpuUsPerPublish: ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / opt.events,
    gcMsPer1k: (gc1.ms - gc0.ms) / opt.events * 1000,
    gcCount: gc1.count - gc0.count,
    promotedPerEvent: gc1.majors === gc0.majors ? (old1 - old0) / opt.events : null,
    allocPerPublish: allocBytes != null ? allocBytes / opt.events : null,
    rss,
    ok: fails.length === 0,
    fail: fails.join('; ') || null
  }
  process.stdout.write(JSON.stringify({ result }) + '\n')
  await app.close()
  process.exit(0)
}
