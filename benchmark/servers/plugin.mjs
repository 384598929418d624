// fastify-sse-hub (this repository, built: run `npm run build` at the root
// first), memory backend by default, or the Redis backend with --redis <url>
// --prefix <p> (run two of these on one prefix: publish to one, subscribe on
// the other). Logger off. Idiomatic use: one templated channel, a typed event,
// reply.sse({ subscribe: [topic] }) and topic.publish().
//
// --dist <dir> loads the build from a copy of dist/esm instead (the
// orchestrator snapshots dist/ at the start of a run, so a rebuild during the
// run cannot change or remove what is measured).
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import { pathToFileURL } from 'node:url'
import { args, fastifyRoutes, onTerm, ready } from './common.mjs'

const opts = args()
const dist = opts.dist ? pathToFileURL(opts.dist + '/').href : new URL('../../dist/esm/', import.meta.url).href
const { default: sse } = await import(dist + 'index.js')
const app = Fastify({ logger: false })
let backend
if (opts.redis) {
  const { redisBackend } = await import(dist + 'redis.js')
  backend = redisBackend({ url: opts.redis, prefix: opts.prefix })
}
// --options '<json>': plugin options for a case (the slow-consumer case lowers maxBufferedBytes).
await app.register(sse, { ...(opts.options ? JSON.parse(opts.options) : {}), ...(backend ? { backend } : {}) })

const bench = app.sse.channel('bench/:topic', {
  events: {
    tick: Type.Object({ g: Type.Integer(), n: Type.Integer(), t: Type.Number(), p: Type.String() })
  }
})

app.get('/sse/:topic', (req, reply) => reply.sse({ subscribe: [bench.topic({ topic: req.params.topic })] }))
app.post('/publish/:topic', async (req, reply) => {
  await bench.topic({ topic: req.params.topic }).publish('tick', req.body)
  reply.code(204)
})
fastifyRoutes(app, () => app.sse.stats().subscriptions, () => {
  const s = app.sse.stats()
  return { openStreams: s.openStreams, slowClientCuts: s.slowClientCuts, writes: s.writes, deliveries: s.deliveries, historyBytes: s.historyBytes }
})

await app.listen({ port: opts.port, host: opts.host })
ready(app.server.address().port)
onTerm(() => app.close())
