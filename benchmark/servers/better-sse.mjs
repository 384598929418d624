// better-sse with Fastify: the handler hijacks the reply and hands the raw
// request/response to createSession(); one better-sse Channel per topic;
// a publish is channel.broadcast(). Best effort: the JSON is serialised once
// per publish (sessions use a pass-through serializer) and the event id is
// given, so no UUID is generated per broadcast.
import Fastify from 'fastify'
import { createSession, createChannel } from 'better-sse'
import { args, fastifyRoutes, onTerm, ready } from './common.mjs'

const opts = args()
const app = Fastify({ logger: false })
const channels = new Map() // topic -> Channel
const passThrough = (s) => s

function channelOf (name) {
  let ch = channels.get(name)
  if (ch === undefined) channels.set(name, ch = createChannel())
  return ch
}

app.get('/sse/:topic', async (req, reply) => {
  reply.hijack()
  const session = await createSession(req.raw, reply.raw, { serializer: passThrough })
  channelOf(req.params.topic).register(session)
})

app.post('/publish/:topic', async (req, reply) => {
  const ch = channels.get(req.params.topic)
  if (ch !== undefined) ch.broadcast(JSON.stringify(req.body), 'tick', { eventId: String(req.body.n) })
  reply.code(204)
})
fastifyRoutes(app, () => {
  let n = 0
  for (const ch of channels.values()) n += ch.sessionCount
  return n
})

await app.listen({ port: opts.port, host: opts.host })
ready(app.server.address().port)
onTerm(() => app.close())
