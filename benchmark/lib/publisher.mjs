// The publisher: ONE keep-alive TCP connection carrying pipelined
// `POST /publish/t<k>` requests, so the server sees events in publish order.
// Each body is ~100 bytes of JSON whose first three numbers are what the
// subscribers read: {"g":<global seq>,"n":<per-topic seq>,"t":<publish time,
// us on the shared clock>,"p":"<padding>"}. The time is stamped when the
// request is handed to the socket.
//
// It does not pace itself: the orchestrator calls send(k) from its closed loop
// (k = room under the in-flight cap) or from its 1 ms pacing timer (k = what
// the fixed rate makes due). Responses are parsed only to count them and
// catch non-2xx statuses.
import net from 'node:net'
import { nowUs } from './clock.mjs'

export class Publisher {
  /** `pad`: characters of padding in "p" (48 makes a ~100-byte body). */
  constructor (port, topics, nextG, pad = 48) {
    this.port = port
    this.topics = topics
    this.pad = 'x'.repeat(pad)
    this.g = nextG - 1 // last g sent
    this.sent = 0
    this.responses = 0
    this.errors = 0
    this.firstError = null
    this.socket = null
    this.buf = ''
    this.closed = false
    this.waiters = []
  }

  connect (timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port: this.port })
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
        this.firstError ??= `publisher socket: ${err.code ?? err.message}`
        clearTimeout(timer)
        reject(err)
      })
      socket.on('close', () => {
        this.closed = true
        this.check()
      })
    })
  }

  /** Sends the next k events as one write; returns the last g sent. */
  send (k) {
    let out = ''
    const t = Math.round(nowUs())
    for (let i = 0; i < k; i++) {
      const g = ++this.g
      const topic = (g - 1) % this.topics
      const n = Math.floor((g - 1) / this.topics) + 1
      const body = `{"g":${g},"n":${n},"t":${t},"p":"${this.pad}"}`
      out += `POST /publish/t${topic} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    }
    this.sent += k
    this.socket.write(out, 'latin1')
    return this.g
  }

  onData (s) {
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
        this.errors++
        this.firstError ??= `publish answered ${status}: ${buf.slice(end + 4, end + 4 + Math.min(len, 300))}`
      }
      this.responses++
      buf = buf.slice(end + 4 + len)
    }
    this.buf = buf
    this.check()
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
    this.socket?.destroy()
  }
}
