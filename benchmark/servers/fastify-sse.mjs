// @fastify/sse (the official plugin): an SSE-only route (`sse: { kind: 'only' }`),
// reply.sse.keepAlive(), and a Set of the open reply.sse contexts per topic;
// a publish loops over the Set calling reply.sse.send(). Best effort: the
// JSON is serialised once per publish and the route's serializer passes the
// string through, instead of JSON.stringify running once per subscriber.
import Fastify from 'fastify'
import fastifySse from '@fastify/sse'
import { args, fastifyRoutes, onTerm, ready } from './common.mjs'

const opts = args()
const app = Fastify({ logger: false })
await app.register(fastifySse)

const topics = new Map() // topic -> Set<SSEContext>
let subscribers = 0
const noop = () => {}

app.get('/sse/:topic', { sse: { kind: 'only', serializer: (s) => s } }, async (req, reply) => {
  reply.sse.keepAlive()
  const name = req.params.topic
  let set = topics.get(name)
  if (set === undefined) topics.set(name, set = new Set())
  const ctx = reply.sse
  set.add(ctx)
  subscribers++
  ctx.onClose(() => {
    if (set.delete(ctx)) subscribers--
  })
  await ctx.send({ data: 'connected' })
})

app.post('/publish/:topic', async (req, reply) => {
  const set = topics.get(req.params.topic)
  if (set !== undefined) {
    const msg = { id: String(req.body.n), event: 'tick', data: JSON.stringify(req.body) }
    for (const ctx of set) ctx.send(msg).catch(noop)
  }
  reply.code(204)
})
fastifyRoutes(app, () => subscribers)

await app.listen({ port: opts.port, host: opts.host })
ready(app.server.address().port)
onTerm(() => app.close())
