// The ceiling on Fastify: the same fan-out as ceiling.mjs (chunk-fanout.mjs:
// each turn's events of a topic framed once into one HTTP/1.1 chunk, that
// Buffer written straight to every subscriber's socket), behind Fastify's
// routing, its JSON body parser and an async handler, as a Fastify plugin
// would be. No validation, no ids, no history. What it measures: the most a
// Fastify route can reach in the targeted case, so the plugin can be
// compared with Fastify's own cost taken out.
import Fastify from 'fastify'
import { args, fastifyRoutes, onTerm, ready } from './common.mjs'
import { chunkFanout } from './chunk-fanout.mjs'

const opts = args()
const app = Fastify({ logger: false })
const fan = chunkFanout()

app.get('/sse/:topic', (req, reply) => {
  reply.hijack()
  fan.follow(req.params.topic, reply.raw)
})

app.post('/publish/:topic', async (req, reply) => {
  const name = req.params.topic
  if (fan.wants(name)) fan.publish(name, Buffer.from('event: tick\ndata: ' + JSON.stringify(req.body) + '\n\n'))
  reply.code(204)
})
fastifyRoutes(app, () => fan.subscribers)

await app.listen({ port: opts.port, host: opts.host })
ready(app.server.address().port)
onTerm(() => app.close())
