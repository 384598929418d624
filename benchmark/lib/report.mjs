// results/<run>.jsonl -> RESULTS.md (tables, medians over repetitions with
// [min–max], ratios to the floor and between systems) and chart.svg
// (deliveries/s against N per system, drawn by hand). Runs that failed an
// integrity check are listed and never enter a median.
import { readFileSync, writeFileSync } from 'node:fs'
import { basename } from 'node:path'
import { SYSTEMS } from './config.mjs'

const LABEL = Object.fromEntries(SYSTEMS.map(s => [s.name, s.label]))
const ORDER = SYSTEMS.map(s => s.name)

export function load (file) {
  const recs = readFileSync(file, 'utf8').split('\n').filter(Boolean).map(l => JSON.parse(l))
  return { meta: recs.find(r => r.type === 'meta') ?? {}, recs }
}

function median (xs) {
  const a = xs.filter(x => x != null && !Number.isNaN(x)).sort((p, q) => p - q)
  if (a.length === 0) return null
  const m = a.length >> 1
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2
}

function si (x) {
  if (x == null || Number.isNaN(x)) return '–'
  const a = Math.abs(x)
  if (a >= 1e6) return (x / 1e6).toFixed(a >= 1e7 ? 1 : 2) + 'M'
  if (a >= 1e3) return (x / 1e3).toFixed(a >= 1e4 ? 0 : 1) + 'k'
  if (a >= 100) return x.toFixed(0)
  if (a >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

function msf (x) {
  if (x == null) return '–'
  if (x >= 100) return x.toFixed(0)
  if (x >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

/** "median [min–max]" of a metric over passing runs. */
function mmm (runs, get, f = si) {
  const xs = runs.map(get).filter(x => x != null && !Number.isNaN(x))
  if (xs.length === 0) return '–'
  const med = median(xs)
  if (xs.length === 1) return f(med)
  return `${f(med)} [${f(Math.min(...xs))}–${f(Math.max(...xs))}]`
}

/** `a / b` as "1.2×"; with `digits`, to that many decimals (a target's verdict near its bound). */
function ratio (a, b, digits) {
  if (a == null || b == null || b === 0) return '–'
  const r = a / b
  if (digits !== undefined) return r.toFixed(digits) + '×'
  return (r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)) + '×'
}

function kib (b) {
  return b == null ? '–' : (b / 1024).toFixed(1)
}

function mib (b) {
  return b == null ? '–' : (b / 2 ** 20).toFixed(0)
}

/** Index: case|n|system|scenario|param -> records. */
function index (recs) {
  const m = new Map()
  for (const r of recs) {
    if (r.type !== 'scenario' && r.type !== 'idle' && r.type !== 'after-load' && r.type !== 'slow-consumer' && r.type !== 'error') continue
    const param = r.type === 'scenario' ? (r.scenario === 'rate' ? r.rate : r.inflight) : ''
    const what = r.type === 'scenario' ? (r.stuck ? `${r.scenario}-stuck` : r.scenario) : r.type
    const key = `${r.case}|${r.n}|${r.system}|${what}|${param}`
    if (!m.has(key)) m.set(key, [])
    m.get(key).push(r)
  }
  return m
}

function getter (idx) {
  return (kase, n, system, what, param = '') => idx.get(`${kase}|${n}|${system}|${what}|${param}`) ?? []
}

const ok = (runs) => runs.filter(r => !r.failed && !r.skipped)

/** A Redis-variant run: the share of one core that instance A, redis-server and the load client took (they share core 1). */
const sharedCore = (r) => r.auxCpuFrac[0] + r.auxCpuFrac[1] + r.clientCpuFrac

/**
 * Deliveries/s of `as` ÷ `bs` within each repetition both passed, as
 * 'median× [min–max]' (null if none). The machine's speed drifts between
 * repetitions (and runs) more than the systems differ in some cases, so
 * pairs measured minutes apart, in the same repetition, are the sturdier
 * comparison than a ratio of medians.
 */
function pairwise (as, bs) {
  const theirs = ok(bs)
  const rs = ok(as).map(a => {
    const b = theirs.find(r => r.rep === a.rep)
    return b ? a.deliveriesPerSec / b.deliveriesPerSec : null
  }).filter(x => x != null)
  return rs.length ? `${median(rs).toFixed(2)}× [${Math.min(...rs).toFixed(2)}–${Math.max(...rs).toFixed(2)}]` : null
}

export function summaryTable (file) {
  const { recs } = load(file)
  const lines = ['system          case             N      scenario      deliv/s   events/s   p50 ms  p99 ms  max ms  us/deliv     GC  RSS MiB  client  status']
  const kase = (r) => (r.case === 'targeted' ? `targeted ${r.topics}x${r.n / r.topics}` : r.case).padEnd(16)
  for (const r of recs) {
    if (r.type === 'idle') {
      lines.push(`${r.system.padEnd(15)} ${kase(r)} ${String(r.n).padEnd(6)} idle          RSS/stream ${kib(r.rssPerStream)} KiB, connect ${r.connectMs} ms`)
      continue
    }
    if (r.type === 'error') {
      lines.push(`${r.system.padEnd(15)} ${kase(r)} ${String(r.n).padEnd(6)} ERROR ${r.error.split('\n')[0]}`)
      continue
    }
    if (r.type !== 'scenario') continue
    const what = r.scenario === 'rate' ? `rate ${r.rate}` : `${r.scenario} ${r.inflight}`
    if (r.skipped) {
      lines.push(`${r.system.padEnd(15)} ${kase(r)} ${String(r.n).padEnd(6)} ${what.padEnd(13)} skipped: ${r.skipped}`)
      continue
    }
    const status = r.failed ? `FAILED: ${r.failReason}` : r.scenario === 'rate' ? (r.keptUp ? 'kept up' : 'fell behind') : 'ok'
    lines.push(`${r.system.padEnd(15)} ${kase(r)} ${String(r.n).padEnd(6)} ${what.padEnd(13)} ${si(r.deliveriesPerSec).padStart(8)} ${si(r.eventsPerSec).padStart(9)} ${msf(r.latencyMs.p50).padStart(8)} ${msf(r.latencyMs.p99).padStart(7)} ${msf(r.latencyMs.max).padStart(7)} ${(r.cpuUsPerDelivery?.toFixed(2) ?? '–').padStart(9)} ${(r.gc?.share != null ? (r.gc.share * 100).toFixed(1) + '%' : '–').padStart(6)} ${mib(r.rssEnd).padStart(8)} ${(Math.round(r.clientCpuFrac * 100) + '%').padStart(7)}  ${status}`)
  }
  return lines.join('\n')
}

// ---------------------------------------------------------------- chart
function chart (get, systems, ns) {
  const W = 760
  const H = 440
  const L = 90
  const R = 230
  const T = 40
  const B = 60
  const pts = []
  for (const s of systems) {
    const line = []
    for (const n of ns) {
      const v = median(ok(get('fanout', n, s, 'closed', 8)).map(r => r.deliveriesPerSec))
      if (v != null && v > 0) line.push([n, v])
    }
    pts.push([s, line])
  }
  const all = pts.flatMap(([, l]) => l.map(p => p[1]))
  if (all.length === 0) return null
  const yMin = 10 ** Math.floor(Math.log10(Math.min(...all)))
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...all)))
  const xMin = Math.log10(Math.min(...ns))
  const xMax = Math.log10(Math.max(...ns))
  const x = (n) => L + ((Math.log10(n) - xMin) / Math.max(1e-9, xMax - xMin)) * (W - L - R)
  const y = (v) => T + (1 - (Math.log10(v) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * (H - T - B)
  const colors = ['#d62728', '#7f7f7f', '#2ca02c', '#1f77b4', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2']
  const dash = { floor: '6 4', ceiling: '2 3' }
  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  out.push(`<text x="${L}" y="22" font-size="14" font-weight="bold">Fan-out: deliveries/s vs subscribers (closed loop, 8 events in flight, median)</text>`)
  for (let e = Math.log10(yMin); e <= Math.log10(yMax); e++) {
    const v = 10 ** e
    out.push(`<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`)
    out.push(`<text x="${L - 8}" y="${y(v) + 4}" text-anchor="end">${si(v)}</text>`)
  }
  for (const n of ns) {
    out.push(`<line x1="${x(n)}" x2="${x(n)}" y1="${T}" y2="${H - B}" stroke="#eee"/>`)
    out.push(`<text x="${x(n)}" y="${H - B + 18}" text-anchor="middle">${n.toLocaleString('en-US')}</text>`)
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">subscribers on one channel (N, log scale)</text>`)
  out.push(`<text transform="translate(20 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">deliveries/s (log scale)</text>`)
  out.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`)
  pts.forEach(([s, line], i) => {
    const c = colors[i % colors.length]
    if (line.length > 0) {
      out.push(`<polyline fill="none" stroke="${c}" stroke-width="${s === 'plugin' ? 3 : 2}" ${dash[s] ? `stroke-dasharray="${dash[s]}"` : ''} points="${line.map(([n, v]) => `${x(n).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`)
      for (const [n, v] of line) out.push(`<circle cx="${x(n).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3.5" fill="${c}"><title>${LABEL[s]}, N=${n}: ${si(v)} deliveries/s</title></circle>`)
    }
    const ly = T + 10 + i * 20
    out.push(`<line x1="${W - R + 15}" x2="${W - R + 40}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="${s === 'plugin' ? 3 : 2}" ${dash[s] ? `stroke-dasharray="${dash[s]}"` : ''}/>`)
    out.push(`<text x="${W - R + 46}" y="${ly + 4}">${LABEL[s].replace(/&/g, '&amp;')}</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

// ---------------------------------------------------------------- report
export function writeReport (file, dir) {
  const { meta, recs } = load(file)
  const idx = index(recs)
  const get = getter(idx)
  // The targeted case has systems of its own (the ceiling on Fastify): each
  // part of the report lists only the systems its case ran.
  const present = new Set(recs.filter(r => r.system && r.case !== 'targeted').map(r => r.system))
  const systems = ORDER.filter(s => present.has(s))
  const tPresent = new Set(recs.filter(r => r.system && r.case === 'targeted').map(r => r.system))
  const tSystems = ORDER.filter(s => tPresent.has(s))
  const peers = systems.filter(s => s !== 'plugin')
  const ns = [...new Set(recs.filter(r => r.case === 'fanout' && r.n).map(r => r.n))].sort((a, b) => a - b)
  const m = meta.machine ?? {}
  const L = []
  const med = (runs, f) => median(ok(runs).map(f))
  const dps = (kase, n, s, sc = 'closed', p = 8) => med(get(kase, n, s, sc, p), r => r.deliveriesPerSec)
  const p99 = (kase, n, s, sc = 'closed', p = 8) => med(get(kase, n, s, sc, p).filter(r => r.latencyComplete !== false), r => r.latencyMs.p99)
  // Deliveries per second of server CPU: what a core would carry if the server had it all.
  const eff = (kase, n, s, sc = 'closed', p = 8) => { const u = med(get(kase, n, s, sc, p), r => r.cpuUsPerDelivery); return u ? 1e6 / u : null }
  const scen = recs.filter(r => r.type === 'scenario' && !r.skipped)
  const nMax = ns.length ? ns[ns.length - 1] : null

  L.push('# fastify-sse-hub benchmark results')
  L.push('')
  L.push(`Generated by \`npm run bench\` (benchmark/run.mjs) from \`results/${basename(file)}\`. How the numbers are made: [README.md](README.md).`)
  L.push('')
  L.push(`- **Machine:** ${m.cpus} cores (${m.cpuModel}), ${m.memGiB} GiB RAM, ${m.platform}; **Node ${m.node}**; run started ${m.date}.`)
  const pin = m.pinning === 'none' || m.pinning == null ? 'no CPU pinning' : `server pinned to core ${m.pinning.server}; publisher, orchestrator and ${m.clientWorkers} subscriber worker(s) on core(s) ${m.pinning.client.join(',')}; for the Redis variant, instance B (subscribers) has core ${m.pinning.server} to itself while instance A (publishes) and redis-server share core ${m.pinning.aux} with the client`
  L.push(`- **Processes:** ${pin}.`)
  if (meta.build) L.push(`- **Build measured:** commit ${meta.build.commit}${meta.build.libChanges?.length ? ` with uncommitted changes in ${meta.build.libChanges.map(l => '`' + l.replace(/^\s*[MADRCU?!]{1,2}\s+/, '') + '`').join(', ')}` : ''} (dist/ snapshotted at the start of the run).`)
  const reps = meta.matrix?.reps
  L.push(`- **Method:** ${reps} interleaved repetitions (every system once per repetition, order rotated). Each cell: **median [min–max]** over the repetitions that passed the integrity check; a run with any missing, duplicated or out-of-order event, or a stream cut early, is **failed** and listed at the end, never averaged in.`)
  const loads = scen.map(r => r.foreignLoad).filter(x => x != null)
  if (loads.length) {
    const busy = loads.filter(x => x > 0.25).length
    const stats = `CPU used by processes outside the benchmark during measured windows: median ${median(loads).toFixed(2)} cores, max ${Math.max(...loads).toFixed(2)}; ${busy} of ${loads.length} windows saw more than 0.25 cores of it.`
    L.push(busy > loads.length * 0.1
      ? `- **Noise:** the machine was shared with other work while this ran. ${stats} This is what the [min–max] ranges mostly show.`
      : `- **Noise:** the machine was otherwise quiet. ${stats}`)
  }
  L.push('')

  // ---------------- headline
  if (nMax != null && systems.includes('plugin')) {
    L.push(`## Headline (one channel, N = ${nMax.toLocaleString('en-US')} subscribers)`)
    L.push('')
    L.push('| | ' + systems.map(s => LABEL[s]).join(' | ') + ' |')
    L.push('|---|' + systems.map(() => '---:').join('|') + '|')
    L.push('| deliveries/s, 8 in flight | ' + systems.map(s => mmm(ok(get('fanout', nMax, s, 'closed', 8)), r => r.deliveriesPerSec)).join(' | ') + ' |')
    L.push('| p99 ms, 8 in flight | ' + systems.map(s => mmm(ok(get('fanout', nMax, s, 'closed', 8)), r => r.latencyMs.p99, msf)).join(' | ') + ' |')
    L.push('| events/s, 1 in flight | ' + systems.map(s => mmm(ok(get('fanout', nMax, s, 'latency', 1)), r => r.eventsPerSec)).join(' | ') + ' |')
    L.push('| p50 / p99 ms, 1 in flight | ' + systems.map(s => {
      const runs = ok(get('fanout', nMax, s, 'latency', 1))
      return runs.length ? `${msf(median(runs.map(r => r.latencyMs.p50)))} / ${msf(median(runs.map(r => r.latencyMs.p99)))}` : '–'
    }).join(' | ') + ' |')
    L.push('| server CPU µs/delivery, 8 in flight | ' + systems.map(s => mmm(ok(get('fanout', nMax, s, 'closed', 8)), r => r.cpuUsPerDelivery, x => x.toFixed(2))).join(' | ') + ' |')
    L.push('| deliveries per server CPU-second, 8 in flight | ' + systems.map(s => mmm(ok(get('fanout', nMax, s, 'closed', 8)), r => r.cpuUsPerDelivery ? 1e6 / r.cpuUsPerDelivery : null)).join(' | ') + ' |')
    L.push('| RSS KiB per idle stream | ' + systems.map(s => mmm(get('fanout', nMax, s, 'idle'), r => r.rssPerStream, kib)).join(' | ') + ' |')
    L.push('| × floor, 8 in flight (deliveries/s) | ' + systems.map(s => ratio(dps('fanout', nMax, s), dps('fanout', nMax, 'floor'))).join(' | ') + ' |')
    L.push('| × floor, 8 in flight (per server CPU-second) | ' + systems.map(s => ratio(eff('fanout', nMax, s), eff('fanout', nMax, 'floor'))).join(' | ') + ' |')
    L.push('')
    // Targets
    const pl8 = dps('fanout', nMax, 'plugin')
    const fl8 = dps('fanout', nMax, 'floor')
    const fs8 = dps('fanout', nMax, 'fastify-sse')
    const pl1 = med(get('fanout', nMax, 'plugin', 'latency', 1), r => r.eventsPerSec)
    const fl1 = med(get('fanout', nMax, 'floor', 'latency', 1), r => r.eventsPerSec)
    const pl1p = p99('fanout', nMax, 'plugin', 'latency', 1)
    const fl1p = p99('fanout', nMax, 'floor', 'latency', 1)
    const rss = med(get('fanout', nMax, 'plugin', 'idle'), r => r.rssPerStream)
    const verdict = (cond) => cond == null ? 'not measured' : cond ? '**met**' : '**not met**'
    L.push('Targets from the issue, at N = ' + nMax.toLocaleString('en-US') + ' (medians):')
    L.push('')
    L.push(`- 8 in flight, plugin ≥ 5× the node:http floor: ${ratio(pl8, fl8)} (${si(pl8)} vs ${si(fl8)} deliveries/s) — ${verdict(pl8 != null && fl8 != null ? pl8 >= 5 * fl8 : null)}. Per server CPU-second: ${ratio(eff('fanout', nMax, 'plugin'), eff('fanout', nMax, 'floor'))}.`)
    L.push(`- 8 in flight, plugin ≥ 8× @fastify/sse: ${ratio(pl8, fs8)} (${si(pl8)} vs ${si(fs8)}) — ${verdict(pl8 != null && fs8 != null ? pl8 >= 8 * fs8 : null)}. Per server CPU-second: ${ratio(eff('fanout', nMax, 'plugin'), eff('fanout', nMax, 'fastify-sse'))}.`)
    L.push(`- 1 in flight, plugin ≥ 1.0× the floor with p99 no worse: ${ratio(pl1, fl1)} events/s, p99 ${msf(pl1p)} ms vs ${msf(fl1p)} ms — ${verdict(pl1 != null && fl1 != null && pl1p != null && fl1p != null ? (pl1 >= fl1 && pl1p <= fl1p) : null)}.`)
    L.push(`- ≤ 12 KiB RSS per idle stream (logger off): ${kib(rss)} KiB — ${verdict(rss != null ? rss <= 12 * 1024 : null)}.`)
    // The Redis issue's target: the subscribing instance keeps ≥ 80% of the memory backend's fan-out.
    const rd8 = dps('fanout', nMax, 'plugin-redis')
    const rdLine = (n) => {
      const r = dps('fanout', n, 'plugin-redis')
      const m = dps('fanout', n, 'plugin')
      return `${ratio(r, m)} at N = ${n.toLocaleString('en-US')}`
    }
    if (rd8 != null) L.push(`- Redis (2 instances), 8 in flight, ≥ 80% of the memory backend's fan-out: ${ratio(rd8, pl8)} (${si(rd8)} vs ${si(pl8)} deliveries/s) — ${verdict(pl8 != null ? rd8 >= 0.8 * pl8 : null)}; within each repetition: ${pairwise(get('fanout', nMax, 'plugin-redis', 'closed', 8), get('fanout', nMax, 'plugin', 'closed', 8)) ?? '–'}. At every N: ${ns.map(rdLine).join(', ')}.`)
    // Issue 15: broadcast stays where it was, beside the targeted work.
    const ce8 = dps('fanout', nMax, 'ceiling')
    const ce1 = med(get('fanout', nMax, 'ceiling', 'latency', 1), r => r.eventsPerSec)
    if (pl8 != null && fl8 != null) {
      const ceiling = (c, f) => c != null ? `; the ceiling: ${ratio(c, f, 2)}` : ''
      L.push(`- Issue 15, broadcast stays: 8 in flight ≥ 9× the floor: ${ratio(pl8, fl8, 2)}${ceiling(ce8, fl8)} — ${verdict(pl8 >= 9 * fl8)}; 1 in flight ≥ 1.5× the floor: ${ratio(pl1, fl1, 2)}${ceiling(ce1, fl1)} — ${verdict(pl1 != null && fl1 != null ? pl1 >= 1.5 * fl1 : null)}.`)
    }
    L.push('')
    L.push('![deliveries/s against N, per system](chart.svg)')
    L.push('')
  }

  // ---------------- fan-out closed loop
  const fanoutTable = (sc, p, title, note) => {
    L.push(`## ${title}`)
    L.push('')
    L.push(note + ' Latency columns only count runs where every event of the window was delivered before the drain deadline; "server CPU" is the server\'s share of its core over the window (below 100% it was waiting: on the network, the client, or the machine\'s other load).')
    L.push('')
    L.push('| N | system | deliveries/s | events/s | p50 ms | p99 ms | max ms | server µs/delivery | × floor | × ceiling | × floor per CPU-s | server CPU | client CPU | ok runs |')
    L.push('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const n of ns) {
      for (const s of systems) {
        const runs = get('fanout', n, s, sc, p)
        if (runs.length === 0) continue
        const good = ok(runs)
        const lat = good.filter(r => r.latencyComplete !== false)
        const v = dps('fanout', n, s, sc, p)
        L.push(`| ${n.toLocaleString('en-US')} | ${LABEL[s]} | ${mmm(good, r => r.deliveriesPerSec)} | ${mmm(good, r => r.eventsPerSec)} | ${mmm(lat, r => r.latencyMs.p50, msf)} | ${mmm(lat, r => r.latencyMs.p99, msf)} | ${mmm(lat, r => r.latencyMs.max, msf)} | ${mmm(good, r => r.cpuUsPerDelivery, x => x.toFixed(2))} | ${s === 'floor' ? '1×' : ratio(v, dps('fanout', n, 'floor', sc, p))} | ${s === 'ceiling' ? '1×' : ratio(v, dps('fanout', n, 'ceiling', sc, p))} | ${s === 'floor' ? '1×' : ratio(eff('fanout', n, s, sc, p), eff('fanout', n, 'floor', sc, p))} | ${mmm(good, r => r.serverCpuFrac * 100, x => x.toFixed(0) + '%')} | ${mmm(good, r => r.clientCpuFrac * 100, x => x.toFixed(0) + '%')} | ${good.length}/${runs.length} |`)
      }
    }
    L.push('')
  }
  fanoutTable('closed', 8, 'Fan-out, closed loop: at most 8 events in flight', 'One channel, N subscribers. The publisher keeps at most 8 events not yet received by every subscriber (pipelined POSTs on one connection). Throughput here is each system\'s peak under that bound; latency is publish → receive per delivery.')
  if (systems.includes('plugin')) {
    L.push('### The plugin against each system (ratio of medians, closed loop, 8 in flight)')
    L.push('')
    L.push('Plugin deliveries/s divided by the other system\'s; above 1× the plugin is faster.')
    L.push('')
    L.push('| N | ' + peers.map(s => LABEL[s]).join(' | ') + ' |')
    L.push('|---:|' + peers.map(() => '---:').join('|') + '|')
    for (const n of ns) L.push(`| ${n.toLocaleString('en-US')} | ` + peers.map(s => ratio(dps('fanout', n, 'plugin'), dps('fanout', n, s))).join(' | ') + ' |')
    L.push('')
  }
  fanoutTable('latency', 1, 'Latency: one event in flight', 'The next event is published only once the previous one has reached every subscriber, so events/s is 1 / (full fan-out round trip) and the latency columns are the time to reach each subscriber.')

  // ---------------- fixed rates
  const rates = [...new Set(scen.filter(r => r.case === 'fanout' && r.scenario === 'rate').map(r => r.rate))].sort((a, b) => a - b)
  if (rates.length) {
    L.push('## Fixed publish rates')
    L.push('')
    L.push('Open loop: the publisher sends at the given rate regardless of delivery (paced every millisecond on one pipelined connection) for the window, then stops. "Kept up" = every subscriber got every event within 1 s of the end and at least 97% of the offered deliveries arrived inside the window. Deliveries/s is what arrived inside the window. When a system falls behind at one rate, its higher rates are not run (recorded as skipped).')
    L.push('')
    L.push('| N | rate/s | ' + systems.map(s => LABEL[s]).join(' | ') + ' |')
    L.push('|---:|---:|' + systems.map(() => '---|').join(''))
    for (const n of ns) {
      for (const rate of rates) {
        const cells = systems.map(s => {
          const runs = get('fanout', n, s, 'rate', rate)
          if (runs.length === 0) return '–'
          if (runs.every(r => r.skipped)) return 'skipped'
          const good = ok(runs)
          if (good.length === 0) return `failed (${runs.filter(r => r.failed).length})`
          const kept = good.filter(r => r.keptUp).length
          return `${kept}/${good.length} kept up; ${si(median(good.map(r => r.deliveriesPerSec)))} deliv/s; p50 ${msf(median(good.map(r => r.latencyMs.p50)))} / p99 ${msf(median(good.map(r => r.latencyMs.p99)))} ms`
        })
        L.push(`| ${n.toLocaleString('en-US')} | ${rate.toLocaleString('en-US')} | ${cells.join(' | ')} |`)
      }
    }
    L.push('')
  }

  // ---------------- targeted delivery (issue 15)
  const tShapes = [...new Map(recs.filter(r => r.case === 'targeted' && r.type === 'idle').map(r => [`${r.topics}x${r.n}`, { n: r.n, topics: r.topics }])).values()]
    .sort((a, b) => b.topics - a.topics)
  if (tShapes.length) {
    const tRuns = (sh, s) => recs.filter(r => r.case === 'targeted' && r.type === 'scenario' && !r.skipped && r.n === sh.n && r.topics === sh.topics && r.system === s)
    const tMed = (sh, s, f) => median(ok(tRuns(sh, s)).map(f))
    const tDps = (sh, s) => tMed(sh, s, r => r.deliveriesPerSec)
    const tP99 = (sh, s) => median(ok(tRuns(sh, s)).filter(r => r.latencyComplete !== false).map(r => r.latencyMs.p99))
    const sc0 = meta.matrix?.targeted?.scenarios?.[0] ?? {}
    L.push('## Targeted delivery: many topics, few subscribers each')
    L.push('')
    L.push(`Per-user topics and small rooms: each publish reaches one topic's few sockets, so nothing can be coalesced and the per-publish cost decides. Publishes go to uniformly random topics, ${sc0.inflight ?? 64} in flight (closed loop: published and not yet received by every subscriber) over ${sc0.conns ?? 8} keep-alive connections (topic k on connection k mod ${sc0.conns ?? 8}, so each topic's events stay in order), ~100-byte JSON bodies; ${((sc0.windowMs ?? 0) / 1000).toFixed(1)} s window. The plugin's route is \`await channel.topic({ topic }).publish('tick', req.body)\` with a TypeBox-typed event (validated) and default history; the floor a \`Map\` topic → responses with \`res.write\` per event; @fastify/sse a \`Map\` of replies; better-sse one channel per topic. Every subscriber must get exactly its topic's events, in order. "GC" = garbage-collection pauses on the server's main thread (perf_hooks observer; wall-clock, so inflated when other processes take the core) as a share of its CPU time in the window; "other load" = cores used by processes outside the benchmark during the window; "RSS" = the server's RSS at the end of the window (no forced GC).`)
    L.push('')
    for (const sh of tShapes) {
      const per = sh.n / sh.topics
      L.push(`### ${sh.topics.toLocaleString('en-US')} topics × ${per} subscriber${per > 1 ? 's' : ''}`)
      L.push('')
      L.push('| system | deliveries/s | × floor | × @fastify/sse | server µs/delivery | GC | p50 ms | p99 ms | max ms | RSS MiB | deliveries per write | server CPU | client CPU | other load | ok runs |')
      L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
      for (const s of tSystems) {
        const runs = tRuns(sh, s)
        if (!runs.length) continue
        const good = ok(runs)
        const lat = good.filter(r => r.latencyComplete !== false)
        const v = tDps(sh, s)
        L.push(`| ${LABEL[s]} | ${mmm(good, r => r.deliveriesPerSec)} | ${s === 'floor' ? '1×' : ratio(v, tDps(sh, 'floor'))} | ${s === 'fastify-sse' ? '1×' : ratio(v, tDps(sh, 'fastify-sse'))} | ${mmm(good, r => r.cpuUsPerDelivery, x => x.toFixed(1))} | ${mmm(good, r => r.gc?.share != null ? r.gc.share * 100 : null, x => x.toFixed(1) + '%')} | ${mmm(lat, r => r.latencyMs.p50, msf)} | ${mmm(lat, r => r.latencyMs.p99, msf)} | ${mmm(lat, r => r.latencyMs.max, msf)} | ${mmm(good, r => r.rssEnd, mib)} | ${mmm(good, r => r.deliveriesPerWrite, x => x.toFixed(2))} | ${mmm(good, r => r.serverCpuFrac * 100, x => x.toFixed(0) + '%')} | ${mmm(good, r => r.clientCpuFrac * 100, x => x.toFixed(0) + '%')} | ${mmm(good, r => r.foreignLoad, x => x.toFixed(2))} | ${good.length}/${runs.length} |`)
      }
      L.push('')
      const pairs = tSystems.filter(s => s !== 'plugin' && s !== 'plugin-redis').map(s => {
        const p = pairwise(tRuns(sh, 'plugin'), tRuns(sh, s))
        return p ? `${LABEL[s]} ${p}` : null
      }).filter(Boolean)
      if (pairs.length) L.push(`Plugin ÷ each system within the same repetition (median [min–max] over repetitions): ${pairs.join('; ')}.`)
      L.push('')
    }
    // Issue 15's targets (same-run ratios of medians).
    const verdict = (cond) => cond == null ? 'not measured' : cond ? '**met**' : '**not met**'
    const both = (...xs) => xs.every(x => x != null)
    const one = tShapes.find(sh => sh.n === sh.topics)
    const ten = tShapes.find(sh => sh.n === sh.topics * 10)
    L.push('Targets (issue 15):')
    L.push('')
    if (one) {
      const pl = tDps(one, 'plugin')
      const fl = tDps(one, 'floor')
      const fs = tDps(one, 'fastify-sse')
      const plP = tP99(one, 'plugin')
      const flP = tP99(one, 'floor')
      const plR = tMed(one, 'plugin', r => r.rssEnd)
      const fsR = tMed(one, 'fastify-sse', r => r.rssEnd)
      L.push(`- ${one.topics.toLocaleString('en-US')} × 1: ≥ 1.25× the floor: ${ratio(pl, fl, 2)} (${si(pl)} vs ${si(fl)}) — ${verdict(both(pl, fl) ? pl >= 1.25 * fl : null)}; ≥ 1.15× @fastify/sse: ${ratio(pl, fs, 2)} — ${verdict(both(pl, fs) ? pl >= 1.15 * fs : null)}; p99 no worse than the floor's: ${msf(plP)} vs ${msf(flP)} ms — ${verdict(both(plP, flP) ? plP <= flP : null)}; RSS ≤ 1.2× @fastify/sse's: ${mib(plR)} vs ${mib(fsR)} MiB (${ratio(plR, fsR)}) — ${verdict(both(plR, fsR) ? plR <= 1.2 * fsR : null)}.`)
      const rd = tDps(one, 'plugin-redis')
      const ce = tDps(one, 'ceiling')
      if (ce != null && fl != null) L.push(`  The ceiling (one shared chunk per turn, no framework) measured ${ratio(ce, fl, 2)} the floor in the same run.`)
      const cf = tDps(one, 'ceiling-fastify')
      if (cf != null && both(fl, fs)) L.push(`  The ceiling on Fastify (the same fan-out behind a Fastify route: no validation, ids or history) measured ${ratio(cf, fl, 2)} the floor and ${ratio(cf, fs, 2)} @fastify/sse; within each repetition ${pairwise(tRuns(one, 'ceiling-fastify'), tRuns(one, 'floor'))} and ${pairwise(tRuns(one, 'ceiling-fastify'), tRuns(one, 'fastify-sse'))}.`)
      const core1 = tMed(one, 'plugin-redis', r => Array.isArray(r.auxCpuFrac) ? sharedCore(r) : null)
      if (rd != null) L.push(`- ${one.topics.toLocaleString('en-US')} × 1 on Redis (2 instances) ≥ 0.8× the memory backend: ${ratio(rd, pl, 2)} (${si(rd)} vs ${si(pl)}) — ${verdict(pl != null ? rd >= 0.8 * pl : null)}.${core1 != null ? ` The core shared by instance A, redis-server and the load client was ${(core1 * 100).toFixed(0)}% busy (below: where the CPU goes).` : ''}`)
    }
    if (ten) {
      const pl = tDps(ten, 'plugin')
      const fl = tDps(ten, 'floor')
      const plP = tP99(ten, 'plugin')
      const flP = tP99(ten, 'floor')
      L.push(`- ${ten.topics.toLocaleString('en-US')} × 10: ≥ 1.3× the floor: ${ratio(pl, fl, 2)} (${si(pl)} vs ${si(fl)}) — ${verdict(both(pl, fl) ? pl >= 1.3 * fl : null)}; p99 no worse than the floor's: ${msf(plP)} vs ${msf(flP)} ms — ${verdict(both(plP, flP) ? plP <= flP : null)}.`)
      const ce = tDps(ten, 'ceiling')
      if (ce != null && fl != null) L.push(`  The ceiling measured ${ratio(ce, fl, 2)} the floor in the same run.`)
      const cf = tDps(ten, 'ceiling-fastify')
      if (cf != null && fl != null) L.push(`  The ceiling on Fastify measured ${ratio(cf, fl, 2)} the floor; within each repetition ${pairwise(tRuns(ten, 'ceiling-fastify'), tRuns(ten, 'floor'))}.`)
    }
    L.push('')
  }

  // ---------------- memory
  L.push('## Memory')
  L.push('')
  L.push('RSS per idle stream = (server RSS with N idle streams − RSS before any stream), after a full GC each time, divided by N; logger off everywhere, each system with its default heartbeat/keep-alive settings. "After load" is the RSS after the closed-loop phase (GC first); the plugin keeps its default history (1,000 events per topic) for resume, which is part of that figure.')
  L.push('')
  L.push('| N | ' + systems.map(s => LABEL[s]).join(' | ') + ' |')
  L.push('|---:|' + systems.map(() => '---:').join('|') + '|')
  for (const n of ns) L.push(`| ${n.toLocaleString('en-US')}: KiB/idle stream | ` + systems.map(s => mmm(get('fanout', n, s, 'idle'), r => r.rssPerStream, kib)).join(' | ') + ' |')
  for (const n of ns) {
    L.push(`| ${n.toLocaleString('en-US')}: MiB RSS idle / after load | ` + systems.map(s => {
      const idle = median(get('fanout', n, s, 'idle').map(r => r.rssIdle))
      const after = median(get('fanout', n, s, 'after-load').map(r => r.rss))
      return `${mib(idle)} / ${mib(after)}`
    }).join(' | ') + ' |')
  }
  L.push('')

  // ---------------- many channels
  const many = recs.find(r => r.case === 'many' && r.type === 'idle')
  if (many) {
    L.push(`## Many channels: ${many.topics.toLocaleString('en-US')} topics × ${(many.n / many.topics).toLocaleString('en-US')} subscribers`)
    L.push('')
    L.push('Publishes go round-robin over the topics (event g to topic (g−1) mod T). Peers keep one Set (or better-sse Channel, or EventEmitter event) per topic; the plugin one templated channel `bench/:topic`.')
    L.push('')
    L.push('| scenario | system | deliveries/s | events/s | p50 ms | p99 ms | max ms | server µs/delivery | × floor | client CPU | ok runs |')
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    const manyScen = [...new Set(scen.filter(r => r.case === 'many').map(r => `${r.scenario}|${r.scenario === 'rate' ? r.rate : r.inflight}`))]
    for (const k of manyScen) {
      const [sc, p] = k.split('|')
      for (const s of systems) {
        const runs = get('many', many.n, s, sc, Number(p))
        if (!runs.length) continue
        const good = ok(runs)
        const label = sc === 'rate' ? `rate ${Number(p).toLocaleString('en-US')}/s` : `${p} in flight`
        const kept = sc === 'rate' ? ` (${good.filter(r => r.keptUp).length}/${good.length} kept up)` : ''
        L.push(`| ${label}${kept} | ${LABEL[s]} | ${mmm(good, r => r.deliveriesPerSec)} | ${mmm(good, r => r.eventsPerSec)} | ${mmm(good, r => r.latencyMs.p50, msf)} | ${mmm(good, r => r.latencyMs.p99, msf)} | ${mmm(good, r => r.latencyMs.max, msf)} | ${mmm(good, r => r.cpuUsPerDelivery, x => x.toFixed(2))} | ${ratio(median(good.map(r => r.deliveriesPerSec)), dps('many', many.n, 'floor', sc, Number(p)))} | ${mmm(good, r => r.clientCpuFrac * 100, x => x.toFixed(0) + '%')} | ${good.length}/${runs.length} |`)
      }
    }
    L.push('')
  }

  // ---------------- slow consumer
  const slow = recs.find(r => r.case === 'slow' && r.type === 'idle')
  if (slow) {
    const sm = meta.matrix?.slow ?? {}
    const w0 = sm.scenarios?.[0]
    const w1 = sm.scenarios?.find(x => x.stuck)
    L.push(`## Slow consumer: one subscriber that never reads beside ${slow.n.toLocaleString('en-US')} healthy ones`)
    L.push('')
    L.push(`Each case first runs the closed loop (8 in flight) with the ${slow.n.toLocaleString('en-US')} healthy subscribers alone for ${((w0?.windowMs ?? 0) / 1000).toFixed(0)} s, then opens one more stream that sends its request and never reads, and runs again for ${((w1?.windowMs ?? 0) / 1000).toFixed(0)} s. Events carry ${w1?.pad ?? '?'} bytes of padding (about 1 KiB) in both phases, so the stuck reader's backlog grows by megabytes within the window. The plugin runs with \`maxBufferedBytes: ${sm.pluginOptions?.maxBufferedBytes ?? '?'}\` (its option for exactly this; the default is 4 MiB) so its cut can happen inside the window; the other systems have no such limit. "RSS growth" is the server's RSS at the end of the stuck window minus at its start (the largest RSS seen during it in brackets). "Stuck cut" = the server had dropped the stuck stream by the end.`)
    L.push('')
    L.push('| system | deliveries/s healthy only | with the stuck reader | ratio | p99 ms healthy only | with the stuck reader | ratio | RSS growth MiB | stuck cut | ok runs |')
    L.push('|---|---:|---:|---:|---:|---:|---:|---:|---|---:|')
    for (const s of systems) {
      const base = ok(get('slow', slow.n, s, 'closed', 8))
      const runs = get('slow', slow.n, s, 'closed-stuck', 8)
      if (!runs.length) continue
      const good = ok(runs)
      const v0 = median(base.map(r => r.deliveriesPerSec))
      const v1 = median(good.map(r => r.deliveriesPerSec))
      const p0 = median(base.filter(r => r.latencyComplete !== false).map(r => r.latencyMs.p99))
      const p1 = median(good.filter(r => r.latencyComplete !== false).map(r => r.latencyMs.p99))
      const st = get('slow', slow.n, s, 'slow-consumer')
      const cut = st.length ? `${st.filter(r => r.stuckCut).length}/${st.length}` : '–'
      L.push(`| ${LABEL[s]} | ${mmm(base, r => r.deliveriesPerSec)} | ${mmm(good, r => r.deliveriesPerSec)} | ${ratio(v1, v0)} | ${mmm(base, r => r.latencyMs.p99, msf)} | ${mmm(good, r => r.latencyMs.p99, msf)} | ${ratio(p1, p0)} | ${mmm(good, r => (r.rssEnd - r.rssStart) / 2 ** 20, x => x.toFixed(1))} [${mib(median(good.map(r => r.rssMax)))}] | ${cut} | ${good.length}/${runs.length} |`)
    }
    L.push('')
  }

  // ---------------- redis extra
  if (systems.includes('plugin-redis')) {
    const redisRows = ok(scen.filter(r => r.system === 'plugin-redis' && Array.isArray(r.auxCpuFrac) &&
      ((r.case === 'fanout' && r.scenario === 'closed') || r.case === 'targeted')))
    if (redisRows.length) {
      L.push('## Redis variant: where the CPU goes')
      L.push('')
      L.push('Server CPU per delivery above is instance B\'s (the one holding the subscribers, alone on core ' + (m.pinning?.server ?? 0) + '). Instance A (receives the POSTs, publishes to Redis), redis-server and the load client share the other core: their shares of one core, medians, and the CPU each spends per delivery. When the last column nears 100%, that core sets the rate, not instance B.')
      L.push('')
      L.push('| case | instance B | instance A | redis-server | load client | A + redis + client | µs per delivery: B / A / redis |')
      L.push('|---|---:|---:|---:|---:|---:|---:|')
      const pct = (x) => `${(x * 100).toFixed(0)}%`
      const cases = [
        ...ns.map(n => ({ label: `fan-out, N = ${n.toLocaleString('en-US')}, 8 in flight`, rows: redisRows.filter(r => r.case === 'fanout' && r.n === n) })),
        ...[...new Set(redisRows.filter(r => r.case === 'targeted').map(r => r.topics))].map(topics => {
          const rows = redisRows.filter(r => r.case === 'targeted' && r.topics === topics)
          const per = rows[0].n / topics
          return { label: `targeted, ${topics.toLocaleString('en-US')} topics × ${per} subscriber${per === 1 ? '' : 's'}, ${rows[0].inflight} in flight`, rows }
        })
      ]
      for (const { label, rows: g } of cases) {
        if (!g.length) continue
        const perDeliv = (frac) => median(g.map(r => frac(r) * r.windowMs * 1000 / Math.max(1, r.deliveries)))
        L.push(`| ${label} | ${pct(median(g.map(r => r.serverCpuFrac)))} | ${pct(median(g.map(r => r.auxCpuFrac[0])))} | ${pct(median(g.map(r => r.auxCpuFrac[1])))} | ${pct(median(g.map(r => r.clientCpuFrac)))} | ${pct(median(g.map(sharedCore)))} | ${median(g.map(r => r.cpuUsPerDelivery)).toFixed(1)} / ${perDeliv(r => r.auxCpuFrac[0]).toFixed(1)} / ${perDeliv(r => r.auxCpuFrac[1]).toFixed(1)} |`)
      }
      L.push('')
    }
  }

  // ---------------- client saturation
  L.push('## Was the load client the bottleneck?')
  L.push('')
  const sat = scen.filter(r => r.clientSaturated)
  L.push(`Client CPU = subscriber worker(s) + publisher/orchestrator, as a share of the client core(s) over the window. A window counts as client-saturated above 90%. ${sat.length} of ${scen.length} measured windows were.`)
  if (sat.length) {
    const by = new Map()
    for (const r of sat) {
      const k = `${r.case} N=${r.n} ${r.scenario === 'rate' ? 'rate ' + r.rate : r.scenario + ' ' + r.inflight}`
      if (!by.has(k)) by.set(k, new Set())
      by.get(k).add(r.system)
    }
    L.push('')
    for (const [k, s] of by) L.push(`- ${k}: ${[...s].map(x => LABEL[x]).join(', ')}`)
  }
  const ceil = ns.map(n => [n, dps('fanout', n, 'ceiling')]).filter(([, v]) => v != null)
  if (ceil.length) {
    L.push('')
    L.push('The ceiling variant does the least work per delivery a Node server can do (one shared chunk per turn, written straight to the socket), so its rate is the most this client measured at each N: ' + ceil.map(([n, v]) => `${si(v)} deliveries/s at N = ${n.toLocaleString('en-US')}`).join(', ') + '. A system close to it may be limited by the client rather than by itself.')
  }
  L.push('')

  // ---------------- failures
  const failed = recs.filter(r => (r.type === 'scenario' && r.failed) || r.type === 'error')
  L.push('## Failed runs')
  L.push('')
  if (failed.length === 0) L.push('None.')
  for (const r of failed) {
    const what = r.type === 'error' ? 'case error' : r.scenario === 'rate' ? `rate ${r.rate}/s` : `${r.scenario}, ${r.inflight} in flight`
    L.push(`- rep ${r.rep}, ${LABEL[r.system]}, ${r.case} N=${r.n}, ${what}: ${r.type === 'error' ? r.error.split('\n')[0] : r.failReason}`)
  }
  L.push('')
  writeFileSync(`${dir}RESULTS.md`, L.join('\n'))
  const svg = chart(get, systems, ns)
  if (svg) writeFileSync(`${dir}chart.svg`, svg)
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2]
  if (!file) {
    console.error('usage: node benchmark/lib/report.mjs results/<run>.jsonl')
    process.exit(2)
  }
  const dir = new URL('../', import.meta.url).pathname
  writeReport(file, dir)
  console.log(`wrote ${dir}RESULTS.md and ${dir}chart.svg`)
}
