// Summarises a V8 .cpuprofile (node --cpu-prof) of a benchmark server (the
// plugin by default): only the samples inside the measured window are
// counted, by self time per function and by where the code lives, with the
// garbage collector's share of the busy (non-idle) samples.
function key (cf) {
  const file = cf.url ? cf.url.replace(/^file:\/\//, '').replace(/.*\/node_modules\/\.cache\/fastify-sse-hub-bench\/[^/]+\//, 'dist/').replace(/.*\/node_modules\//, '') : ''
  return `${cf.functionName || '(anonymous)'} ${file ? `${file}:${cf.lineNumber + 1}` : ''}`.trim()
}

function area (cf) {
  const u = cf.url || ''
  if (!u && /^(writeBuffer|writev|writeUtf8String|writeLatin1String)$/.test(cf.functionName)) return 'socket writes (native, into the kernel)'
  if (!u) return cf.functionName.startsWith('(') ? cf.functionName : '(native / V8 builtins)'
  if (u.includes('fastify-sse-hub-bench') || u.includes('/dist/esm/')) return 'fastify-sse-hub (dist)'
  if (u.startsWith('node:')) return 'Node core (' + u.slice(5).split('/')[0] + ')'
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u)
  if (m) return m[1]
  if (u.includes('/benchmark/servers/')) return 'benchmark server script'
  return u
}

export function summarize (profile, { epoch, record, n, topics = 1, system = 'fastify-sse-hub (memory)', scenario = { inflight: 8, conns: 1 } }) {
  const byId = new Map(profile.nodes.map(nd => [nd.id, nd]))
  const parent = new Map()
  for (const nd of profile.nodes) for (const c of nd.children ?? []) parent.set(c, nd.id)
  const t0 = profile.startTime
  let t = t0
  const ws = record ? record.ws + epoch : -Infinity
  const we = record ? record.we + epoch : Infinity
  const self = new Map()
  const total = new Map()
  const areas = new Map()
  let counted = 0
  let all = 0
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    all++
    if (t < ws || t > we) continue
    counted++
    const nd = byId.get(profile.samples[i])
    const k = key(nd.callFrame)
    self.set(k, (self.get(k) ?? 0) + 1)
    const a = area(nd.callFrame)
    areas.set(a, (areas.get(a) ?? 0) + 1)
    // Inclusive: every distinct function on the stack once.
    const seen = new Set()
    for (let id = nd.id; id !== undefined; id = parent.get(id)) {
      const kk = key(byId.get(id).callFrame)
      if (seen.has(kk)) continue
      seen.add(kk)
      total.set(kk, (total.get(kk) ?? 0) + 1)
    }
  }
  const inWindow = counted > 0
  if (!inWindow) counted = all
  const pct = (c) => (100 * c / counted).toFixed(1) + '%'
  const idle = self.get('(idle)') ?? 0
  const busyPct = (c) => (100 * c / Math.max(1, counted - idle)).toFixed(1) + '%'
  const L = []
  const shape = topics > 1
    ? `${topics.toLocaleString('en-US')} topics x ${n / topics} subscriber${n / topics > 1 ? 's' : ''}, publishes to random topics`
    : `one channel, N = ${n.toLocaleString('en-US')}`
  L.push(`# CPU profile: ${system} server, ${shape}, closed loop (${scenario.inflight} in flight${(scenario.conns ?? 1) > 1 ? ` over ${scenario.conns} connections` : ''})`)
  L.push('')
  L.push(`\`node --cpu-prof\` on the ${system} server during \`node benchmark/run.mjs --profile${topics > 1 ? ' --cases targeted' : ''}\`; ` +
    (inWindow ? `${counted} samples inside the ${((we - ws) / 1e6).toFixed(1)} s measured window (of ${all} in the whole profile, which also has start-up and the 10k connections).` : `all ${all} samples (the window could not be located in the profile's clock).`))
  if (record) L.push(`In that window: ${Math.round(record.deliveriesPerSec).toLocaleString('en-US')} deliveries/s, ${Math.round(record.eventsPerSec)} events/s, server CPU ${(record.serverCpuFrac * 100).toFixed(0)}% of its core, ${record.cpuUsPerDelivery?.toFixed(2)} µs per delivery, client CPU ${(record.clientCpuFrac * 100).toFixed(0)}%.`)
  const gcSamples = self.get('(garbage collector)') ?? 0
  L.push('')
  L.push(`Garbage collector: ${pct(gcSamples)} of the window's samples, **${busyPct(gcSamples)} of the busy ones**` +
    (record?.gc?.share != null ? ` (the GC observer in the server counted ${record.gc.ms.toFixed(0)} ms of pauses in the window, ${(record.gc.share * 100).toFixed(1)}% of its CPU time, ${record.gc.count} collections, ${record.gc.majorMs.toFixed(0)} ms of them mark-compact).` : '.'))
  if (record?.rssEnd) L.push(`Server RSS at the end of the window: ${Math.round(record.rssEnd / 2 ** 20)} MiB; p50 / p99 latency ${record.latencyMs.p50} / ${record.latencyMs.p99} ms${record.deliveriesPerWrite ? `; ${record.deliveriesPerWrite.toFixed(2)} deliveries per socket write` : ''}.`)
  L.push('')
  L.push('## By where the code lives (self time)')
  L.push('')
  L.push('"of busy" leaves out `(idle)` (the event loop waiting).')
  L.push('')
  L.push('| area | self | of busy |')
  L.push('|---|---:|---:|')
  for (const [a, c] of [...areas].sort((x, y) => y[1] - x[1]).slice(0, 15)) L.push(`| ${a} | ${pct(c)} | ${a === '(idle)' ? '' : busyPct(c)} |`)
  L.push('')
  L.push('## Top functions by self time')
  L.push('')
  L.push('| function | self | self of busy | total |')
  L.push('|---|---:|---:|---:|')
  for (const [k, c] of [...self].sort((x, y) => y[1] - x[1]).slice(0, 30)) L.push(`| \`${k}\` | ${pct(c)} | ${k === '(idle)' ? '' : busyPct(c)} | ${pct(total.get(k) ?? c)} |`)
  L.push('')
  L.push('## Top functions by total (inclusive) time')
  L.push('')
  L.push('| function | total | self |')
  L.push('|---|---:|---:|')
  for (const [k, c] of [...total].sort((x, y) => y[1] - x[1]).slice(0, 30)) L.push(`| \`${k}\` | ${pct(c)} | ${pct(self.get(k) ?? 0)} |`)
  // The plugin's own functions, self time: what its code costs beside Node and V8.
  const mine = [...self].filter(([k]) => k.includes(' dist/')).sort((x, y) => y[1] - x[1])
  if (mine.length) {
    L.push('')
    L.push('## fastify-sse-hub functions by self time')
    L.push('')
    L.push('| function | self | self of busy | total |')
    L.push('|---|---:|---:|---:|')
    for (const [k, c] of mine.slice(0, 25)) L.push(`| \`${k}\` | ${pct(c)} | ${busyPct(c)} | ${pct(total.get(k) ?? c)} |`)
  }
  L.push('')
  return L.join('\n')
}

/**
 * Summarises an allocation sample of the window (`--profile --alloc`): V8's
 * sampling heap profiler with collected objects included, so the bytes are
 * what was allocated in the window (an estimate: one sample per ~8 KiB),
 * whether it survived or not. Divided by the events published in the window
 * it gives bytes allocated per publish, by function.
 */
export function summarizeAlloc (record, { n, topics = 1, system, scenario }) {
  const a = record.alloc
  const events = record.eventsPerSec * record.windowMs / 1000
  const per = (b) => events > 0 ? Math.round(b / events).toLocaleString('en-US') : '–'
  const shape = topics > 1 ? `${topics.toLocaleString('en-US')} topics x ${n / topics}` : `one channel, N = ${n.toLocaleString('en-US')}`
  const L = []
  L.push(`# Allocations: ${system} server, ${shape}, closed loop (${scenario.inflight} in flight${(scenario.conns ?? 1) > 1 ? ` over ${scenario.conns} connections` : ''})`)
  L.push('')
  L.push(`V8's sampling heap profiler (collected objects included) over the ${(record.windowMs / 1000).toFixed(1)} s window of \`node benchmark/run.mjs --profile --alloc${topics > 1 ? ' --cases targeted' : ''}\`: ${(a.bytes / 2 ** 20).toFixed(0)} MiB allocated on the JS heap for ~${Math.round(events).toLocaleString('en-US')} events delivered in the window (${Math.round(record.deliveriesPerSec).toLocaleString('en-US')} deliveries/s under the profiler): **~${per(a.bytes)} bytes per publish**. Buffers' backing stores outside the heap are not counted (their JS objects are). GC in the window: ${record.gc ? `${record.gc.count} collections, ${record.gc.ms.toFixed(0)} ms of pauses` : 'not measured'}.`)
  L.push('')
  L.push('| function (allocation site) | bytes per publish | share |')
  L.push('|---|---:|---:|')
  for (const [k, b] of a.byFunction.slice(0, 40)) L.push(`| \`${k}\` | ${per(b)} | ${(100 * b / a.bytes).toFixed(1)}% |`)
  L.push('')
  return L.join('\n')
}
