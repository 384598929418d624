// fastify-sse-v2: reply.sse(asyncIterable), the iterable per connection
// being `events.on(emitter, topic)` as the plugin's README shows for
// broadcasting from an EventEmitter. Best effort: the JSON is serialised once
// per publish and emitted as the event's data string.
import Fastify from 'fastify'
import { FastifySSEPlugin } from 'fastify-sse-v2'
import { EventEmitter, on } from 'node:events'
import { args, fastifyRoutes, onTerm, ready } from './common.mjs'

const opts = args()
const app = Fastify({ logger: false })
await app.register(FastifySSEPlugin)
const bus = new EventEmitter()
bus.setMaxListeners(0)
let subscribers = 0

app.get('/sse/:topic', (req, reply) => {
  const ac = new AbortController()
  // Listening starts now, before the response head goes out.
  const events = on(bus, req.params.topic, { signal: ac.signal })
  subscribers++
  req.socket.on('close', () => {
    subscribers--
    ac.abort()
  })
  reply.sse((async function * () {
    try {
      for await (const [message] of events) yield message
    } catch {}
  })())
})

app.post('/publish/:topic', async (req, reply) => {
  bus.emit(req.params.topic, { id: String(req.body.n), event: 'tick', data: JSON.stringify(req.body) })
  reply.code(204)
})
fastifyRoutes(app, () => subscribers)

await app.listen({ port: opts.port, host: opts.host })
ready(app.server.address().port)
onTerm(() => app.close())
