// The ceilings' fan-out (ceiling.mjs on node:http, ceiling-fastify.mjs behind
// a Fastify route): each event-loop turn's events of a topic are framed ONCE
// into one HTTP/1.1 chunk (one Buffer) and that same Buffer is written
// straight to every subscriber's socket. One write per connection per turn,
// nothing per subscriber but the write itself.

export function chunkFanout () {
  const topics = new Map() // topic -> { socks: Set<Socket>, frames: Buffer[], bytes, dirty }
  const dirty = []
  let scheduled = false
  let subscribers = 0

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

  return {
    get subscribers () {
      return subscribers
    },

    /** Opens the stream on a node:http response and follows topic `name` until it closes. */
    follow (name, res) {
      let t = topics.get(name)
      if (t === undefined) topics.set(name, t = { socks: new Set(), frames: [], bytes: 0, dirty: false })
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
    },

    /** Whether topic `name` has a subscriber (frame the event only then). */
    wants (name) {
      const t = topics.get(name)
      return t !== undefined && t.socks.size > 0
    },

    /** Adds an SSE frame to this turn's chunk of topic `name` (which `wants()` it). */
    publish (name, frame) {
      const t = topics.get(name)
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
  }
}
