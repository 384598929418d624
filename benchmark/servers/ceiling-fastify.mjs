// The ceiling on Fastify: the same fan-out as ceiling.mjs (each turn's events
// of a topic framed once into one HTTP/1.1 chunk, that Buffer written straight
// to every subscriber's socket), behind Fastify's routing, its JSON body
// parser and an async handler, as a Fastify plugin would be. No validation,
// no ids, no history. What it measures: the most a Fastify route can reach
// in the targeted case, so the plugin can be compared with Fastify's own
// cost taken out (a diagnostic variant: `--systems ceiling-fastify`).
import Fastify from 'fastify'
import { args, fastifyRoutes, onTerm, ready } from './common.mjs'

const opts = args()
const app = Fastify({ logger: false })
const topics = new Map() // topic -> { socks: Set<Socket>, frames: Buffer[], bytes, dirty }
const dirty = []
let scheduled = false
let subscribers = 0

function topicOf (name) {
  let t = topics.get(name)
  if (t === undefined) topics.set(name, t = { socks: new Set(), frames: [], bytes: 0, dirty: false })
  return t
}

function flush () {
  scheduled = false
  const list = dirty.splice(0, dirty.length)
  for (const t of list) {
    t.dirty = false
    const head = t.bytes.toString(16) + '\r\n'
    const chunk = Buffer.allocUnsafe(head.length + t.bytes + 2)
    let at = chunk.write(head, 0, 'latin1')
    for (const f of t.frames) at += f.copy(chunk, at)
    chunk[at] = 13
    chunk[at + 1] = 10
    t.frames = []
    t.bytes = 0
    for (const s of t.socks) s.write(chunk)
  }
}

app.get('/sse/:topic', (req, reply) => {
  const t = topicOf(req.params.topic)
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
  res.write(': ok\n\n') // headers and chunked mode go out through the response once
  const sock = res.socket
  sock.setNoDelay(true)
  t.socks.add(sock)
  subscribers++
  res.on('close', () => {
    t.socks.delete(sock)
    subscribers--
  })
})

app.post('/publish/:topic', async (req, reply) => {
  const t = topics.get(req.params.topic)
  if (t !== undefined && t.socks.size > 0) {
    const frame = Buffer.from('event: tick\ndata: ' + JSON.stringify(req.body) + '\n\n')
    t.frames.push(frame)
    t.bytes += frame.length
    if (!t.dirty) {
      t.dirty = true
      dirty.push(t)
    }
    if (!scheduled) {
      scheduled = true
      setImmediate(flush)
    }
  }
  reply.code(204)
})
fastifyRoutes(app, () => subscribers)

await app.listen({ port: opts.port, host: opts.host })
ready(app.server.address().port)
onTerm(() => app.close())
