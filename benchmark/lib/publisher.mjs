// The publisher: `conns` keep-alive TCP connections (one by default) carrying
// pipelined `POST /publish/t<k>` requests. Topic k always goes over
// connection k mod conns, so the server sees each topic's events in publish
// order (requests on one connection are handled in order); with one
// connection it sees every event in order. Each body is ~100 bytes of JSON
// whose first three numbers are what the subscribers read: {"g":<global
// seq>,"n":<per-topic seq>,"t":<publish time, us on the shared clock>,
// "p":"<padding>"}. The time is stamped when the requests are handed to the
// sockets.
//
// Which topic event g goes to is topicPicker(pick, topics)(g) (lib/topics.mjs):
// round-robin, or uniformly random for the targeted case. `seq` (an
// Int32Array per topic, owned by the caller so it lives across the scenarios
// of a case) holds each topic's last n.
//
// It does not pace itself: the orchestrator calls send(k) from its closed loop
// (k = room under the in-flight cap) or from its 1 ms pacing timer (k = what
// the fixed rate makes due). Responses are parsed only to count them and
// catch non-2xx statuses.
import net from 'node:net'
import { nowUs } from './clock.mjs'
import { topicPicker } from './topics.mjs'

class Conn {
  constructor (pub) {
    this.pub = pub
    this.socket = null
    this.buf = ''
    this.out = ''
  }

  connect (port, timeoutMs) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port })
      this.socket = socket
      socket.setNoDelay(true)
      socket.setEncoding('latin1')
      const timer = setTimeout(() => reject(new Error('publisher: connect timeout')), timeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        resolve(this)
      })
      socket.on('data', (s) => this.onData(s))
      socket.on('error', (err) => {
        this.pub.firstError ??= `publisher socket: ${err.code ?? err.message}`
        clearTimeout(timer)
        reject(err)
      })
      socket.on('close', () => {
        this.pub.closedConns++
        this.pub.check()
      })
    })
  }

  onData (s) {
    const pub = this.pub
    let buf = this.buf + s
    for (;;) {
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) break
      const head = buf.slice(0, end)
      const m = /\r\ncontent-length: *(\d+)/i.exec(head)
      const len = m ? Number(m[1]) : 0
      if (buf.length < end + 4 + len) break
      const status = Number(head.slice(9, 12))
      if (status < 200 || status > 299) {
        pub.errors++
        pub.firstError ??= `publish answered ${status}: ${buf.slice(end + 4, end + 4 + Math.min(len, 300))}`
      }
      pub.responses++
      buf = buf.slice(end + 4 + len)
    }
    this.buf = buf
    pub.check()
  }
}

export class Publisher {
  /**
   * `pad`: characters of padding in "p" (48 makes a ~100-byte body);
   * `conns`: keep-alive connections; `pick`: 'rr' or 'random';
   * `seq`: Int32Array(topics) of each topic's last n (kept by the caller).
   */
  constructor (port, topics, nextG, { pad = 48, conns = 1, pick = 'rr', seq = new Int32Array(topics) } = {}) {
    this.port = port
    this.topics = topics
    this.topicOf = topicPicker(pick, topics)
    this.seq = seq
    this.pad = 'x'.repeat(pad)
    this.g = nextG - 1 // last g sent
    this.sent = 0
    this.responses = 0
    this.errors = 0
    this.firstError = null
    this.conns = Array.from({ length: Math.max(1, conns) }, () => new Conn(this))
    this.closedConns = 0
    this.waiters = []
  }

  get closed () { return this.closedConns > 0 }

  async connect (timeoutMs = 5000) {
    await Promise.all(this.conns.map(c => c.connect(this.port, timeoutMs)))
    return this
  }

  /** The next event: advances g and its topic's n; returns the request's body. */
  next () {
    const g = ++this.g
    const topic = this.topicOf(g)
    const n = ++this.seq[topic]
    return { g, topic, n }
  }

  body (g, n, t) {
    return `{"g":${g},"n":${n},"t":${t},"p":"${this.pad}"}`
  }

  /** Sends the next k events, one write per connection; returns the last g sent. */
  send (k) {
    const t = Math.round(nowUs())
    const conns = this.conns
    const nc = conns.length
    for (let i = 0; i < k; i++) {
      const { g, topic, n } = this.next()
      const body = this.body(g, n, t)
      conns[topic % nc].out += `POST /publish/t${topic} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    }
    this.sent += k
    for (const c of conns) {
      if (c.out.length === 0) continue
      c.socket.write(c.out, 'latin1')
      c.out = ''
    }
    return this.g
  }

  check () {
    if (this.waiters.length === 0) return
    if (this.responses >= this.sent || this.closed) {
      const w = this.waiters
      this.waiters = []
      for (const fn of w) fn()
    }
  }

  /** Resolves once every request has been answered (or the deadline passed). */
  settle (ms) {
    if (this.responses >= this.sent) return Promise.resolve(true)
    return new Promise(resolve => {
      const timer = setTimeout(() => resolve(false), ms)
      this.waiters.push(() => {
        clearTimeout(timer)
        resolve(this.responses >= this.sent)
      })
    })
  }

  close () {
    for (const c of this.conns) c.socket?.destroy()
  }
}
