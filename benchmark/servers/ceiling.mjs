// The ceiling for Node: plain node:http where each event-loop turn's events
// of a topic are framed ONCE into one HTTP/1.1 chunk (one Buffer) and that
// same Buffer is written straight to every subscriber's socket. One write per
// connection per turn, nothing per subscriber but the write itself.
import http from 'node:http'
import { args, httpRoutes, onTerm, ready } from './common.mjs'

const opts = args()
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

const server = http.createServer((req, res) => {
  const url = req.url
  if (req.method === 'GET' && url.startsWith('/sse/')) {
    const t = topicOf(url.slice(5))
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
    return
  }
  if (req.method === 'POST' && url.startsWith('/publish/')) {
    const t = topics.get(url.slice(9))
    const parts = []
    req.on('data', (c) => parts.push(c))
    req.on('end', () => {
      if (t !== undefined && t.socks.size > 0) {
        const frame = Buffer.concat([Buffer.from('event: tick\ndata: '), ...parts, Buffer.from('\n\n')])
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
      res.writeHead(204)
      res.end()
    })
    return
  }
  if (httpRoutes(req, res, () => subscribers)) return
  res.writeHead(404)
  res.end()
})

server.listen(opts.port, opts.host, () => ready(server.address().port))
onTerm(() => { server.closeAllConnections(); server.close() })
