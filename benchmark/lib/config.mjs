// The systems and the matrix.
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('..', import.meta.url))
const requireHere = createRequire(`${here}servers/x.mjs`)

function resolvable (name) {
  try {
    requireHere.resolve(name)
    return true
  } catch {
    try {
      // ESM-only packages: look for the folder.
      return existsSync(`${here}node_modules/${name}/package.json`)
    } catch {
      return false
    }
  }
}

/**
 * name: id used on the command line and in results; label: for tables;
 * file: benchmark/servers/<file>; needs: packages that must resolve from
 * benchmark/servers (peers live in benchmark/node_modules); redis: two
 * instances on a Redis backend (publish to A, subscribe on B); options:
 * plugin options for every case; optional: runs only when named in --systems
 * (a diagnostic variant, not part of the matrix); cases: the only cases it
 * runs in (the ceiling on Fastify exists to bound the targeted targets).
 */
export const SYSTEMS = [
  { name: 'plugin', label: 'fastify-sse-hub (memory)', file: 'plugin.mjs', needs: ['fastify', '@sinclair/typebox'], build: true },
  { name: 'floor', label: 'node:http, write per event (floor)', file: 'floor.mjs', needs: [] },
  { name: 'ceiling', label: 'node:http, one chunk per turn (ceiling)', file: 'ceiling.mjs', needs: [] },
  { name: 'ceiling-fastify', label: 'Fastify route, one chunk per turn (ceiling on Fastify)', file: 'ceiling-fastify.mjs', needs: ['fastify'], cases: ['targeted'] },
  { name: 'fastify-sse', label: '@fastify/sse', file: 'fastify-sse.mjs', needs: ['@fastify/sse', 'fastify'], peer: true },
  { name: 'better-sse', label: 'better-sse + fastify', file: 'better-sse.mjs', needs: ['better-sse', 'fastify'], peer: true },
  { name: 'fastify-sse-v2', label: 'fastify-sse-v2', file: 'fastify-sse-v2.mjs', needs: ['fastify-sse-v2', 'fastify'], peer: true },
  { name: 'plugin-redis', label: 'fastify-sse-hub (Redis, 2 instances)', file: 'plugin.mjs', needs: ['fastify', '@sinclair/typebox', 'ioredis'], build: true, redis: true },
  { name: 'plugin-nohist', label: 'fastify-sse-hub (memory, history: 0)', file: 'plugin.mjs', needs: ['fastify', '@sinclair/typebox'], build: true, options: { history: 0 }, optional: true }
]

/** Why a system cannot run here, or null. */
export function unavailable (sys) {
  if (sys.build && !existsSync(fileURLToPath(new URL('../../dist/esm/index.js', import.meta.url)))) {
    return 'dist/ is missing: run `npm run build` at the root'
  }
  for (const n of sys.needs) {
    if (!resolvable(n)) return `${n} is not installed (npm install in benchmark/)`
  }
  return null
}

// How long a fixed-rate run may take to drain before it counts as fallen
// behind; raise it (BENCH_RATE_DRAIN_MS) to check that a backlog is delivered in full.
const RATE_DRAIN_MS = Number(process.env.BENCH_RATE_DRAIN_MS ?? 2000)

/**
 * The targeted case (issue 15): many topics, few subscribers each; publishes
 * go to uniformly random topics (`pick: 'random'`), 64 in flight over 8
 * keep-alive connections (topic k on connection k mod 8, so each topic's
 * events stay in order). A shape is `topics` x `n / topics` subscribers;
 * `skip` lists systems not run for it.
 */
function targeted (quick) {
  const closed = quick
    ? { kind: 'closed', inflight: 64, conns: 8, warmupMs: 150, windowMs: 700, drainMs: 3000 }
    : { kind: 'closed', inflight: 64, conns: 8, warmupMs: 1000, windowMs: 3000, drainMs: 10000 }
  const n = quick ? 200 : 10000
  return {
    pick: 'random',
    // fastify-sse-v2 is not in the comparison; Redis only for one subscriber per topic.
    shapes: [
      { n, topics: n, skip: ['fastify-sse-v2'] },
      { n, topics: n / 10, skip: ['fastify-sse-v2', 'plugin-redis'] }
    ],
    scenarios: [closed]
  }
}

/** Scenario lists and windows. Times in ms. */
export function matrix (quick) {
  if (quick) {
    return {
      targeted: targeted(true),
      reps: 1,
      ns: [100],
      fanout: [
        { kind: 'latency', inflight: 1, warmupMs: 150, windowMs: 500, drainMs: 3000 },
        { kind: 'closed', inflight: 8, warmupMs: 150, windowMs: 700, drainMs: 3000 },
        { kind: 'rate', rate: 1000, warmupMs: 150, windowMs: 500, drainMs: 1500 }
      ],
      many: { n: 100, topics: 10, scenarios: [{ kind: 'closed', inflight: 8, warmupMs: 150, windowMs: 500, drainMs: 3000 }] },
      slow: {
        n: 100,
        pluginOptions: { maxBufferedBytes: 1048576, maxEventBytes: 65536 },
        scenarios: [
          { kind: 'closed', inflight: 8, warmupMs: 150, windowMs: 500, drainMs: 3000, pad: 1000 },
          { kind: 'closed', inflight: 8, warmupMs: 150, windowMs: 700, drainMs: 3000, pad: 1000, stuck: true }
        ]
      }
    }
  }
  return {
    targeted: targeted(false),
    reps: 3,
    ns: [100, 1000, 10000],
    fanout: [
      { kind: 'latency', inflight: 1, warmupMs: 300, windowMs: 1500, drainMs: 10000 },
      { kind: 'closed', inflight: 8, warmupMs: 300, windowMs: 3000, drainMs: 10000 },
      { kind: 'rate', rate: 1000, warmupMs: 300, windowMs: 1500, drainMs: RATE_DRAIN_MS },
      { kind: 'rate', rate: 5000, warmupMs: 300, windowMs: 1500, drainMs: RATE_DRAIN_MS },
      { kind: 'rate', rate: 20000, warmupMs: 300, windowMs: 1500, drainMs: RATE_DRAIN_MS }
    ],
    many: {
      n: 10000,
      topics: 1000,
      scenarios: [
        { kind: 'closed', inflight: 8, warmupMs: 300, windowMs: 3000, drainMs: 10000 },
        { kind: 'rate', rate: 5000, warmupMs: 300, windowMs: 1500, drainMs: RATE_DRAIN_MS }
      ]
    },
    // 1 KiB events so the stuck reader's backlog grows by megabytes within the
    // window; the plugin runs with maxBufferedBytes 1 MiB (its documented knob
    // for this; default 4 MiB) so the cut happens inside the window. The same
    // case first measures the healthy subscribers alone, with the same events.
    slow: {
      n: 1000,
      pluginOptions: { maxBufferedBytes: 1048576, maxEventBytes: 65536 },
      scenarios: [
        { kind: 'closed', inflight: 8, warmupMs: 300, windowMs: 2500, drainMs: 10000, pad: 1000 },
        { kind: 'closed', inflight: 8, warmupMs: 300, windowMs: 15000, drainMs: 10000, pad: 1000, stuck: true }
      ]
    }
  }
}
