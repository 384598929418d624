// A subscriber load-client worker: holds many raw TCP sockets, each a
// `GET /sse/<topic>` SSE stream, decodes HTTP/1.1 chunked framing and the SSE
// lines byte by byte, and for every event reads the three numbers the
// publisher embeds at the start of the JSON data: g (global publish seq),
// n (per-topic seq) and t (publish time, microseconds on the run's shared
// monotonic clock). Nothing is allocated per event: one read buffer shared by
// every socket (net `onread`), a fixed latency histogram, a ring of counters.
//
// Per socket: events, last n, gaps (missing), duplicates, out-of-order.
// Per worker: the watermark `wm` = highest g such that every event up to g
// has reached every socket here that follows its topic (for the closed loop),
// deliveries received inside the measured window, and a latency histogram of
// events published inside it.
//
// IPC (parent -> worker):
//   { cmd: 'connect', port, count, first, topics, pick, concurrency, timeoutMs, epoch }
//                                        pick: how events map to topics (lib/topics.mjs)
//   { cmd: 'window', ws, we, eager }     measured window [ws, we) in shared-clock us;
//                                        eager: report wm changes at once (closed loop)
//   { cmd: 'report', seq }                -> { t: 'report', ... } and resets window counters;
//                                        seq (optional): each topic's last n published so far,
//                                        so sockets short of it are counted (`short`)
//   { cmd: 'wm' }                         -> { t: 'wm', wm, recv } (recv: events received in all)
//   { cmd: 'close' }                      -> destroys the sockets, exits
// worker -> parent: { t: 'connected', ok, failed, ms, firstError }, { t: 'wm', wm },
//   { t: 'closed', i, why } (a socket ended early), { t: 'fatal', message }
import net from 'node:net'
import { BUCKETS, bucketOf, sparse } from '../lib/hist.mjs'
import { nowUs, setEpoch } from '../lib/clock.mjs'
import { topicPicker } from '../lib/topics.mjs'

const RING = 1 << 20
const MASK = RING - 1

// Chunked-framing states.
const S_HEAD = 0
const S_SIZE = 1
const S_SIZE_EXT = 2
const S_DATA = 3
const S_CRLF = 4
const S_RAW = 5
const S_END = 6
// SSE line states.
const L_START = 0
const L_PREFIX = 1
const L_NUMS = 2
const L_SKIP = 3
const DATA_COLON = [100, 97, 116, 97, 58] // "data:"

let topics = 1
let topicOf = topicPicker('rr', 1)
let subsPerTopic = null // Int32Array: this worker's sockets per topic
const ring = new Int32Array(RING)
let wm = 0
let maxG = 0
let eager = false
let wmTimer = null
let wmSent = -1
let ws = Infinity
let we = -Infinity
let hist = new Float64Array(BUCKETS)
let latMax = 0
let latCount = 0
let recvInWindow = 0
let recvTotal = 0
let now = 0
let conns = []
let closing = false
let deadline = null

function send (msg) {
  if (process.connected) process.send(msg)
}

function fatal (message) {
  send({ t: 'fatal', message })
  for (const c of conns) c?.socket?.destroy()
  setTimeout(() => process.exit(1), 50)
}

/** Advances the watermark over fully delivered events. */
function advance () {
  for (;;) {
    const g = wm + 1
    const expected = subsPerTopic[topicOf(g)]
    if (expected === 0) {
      // No socket here follows that topic: done, but never run past what was seen.
      if (g > maxG + topics) return
      wm = g
      continue
    }
    const slot = g & MASK
    if (ring[slot] < expected) return
    ring[slot] = 0
    wm = g
  }
}

function scheduleWm () {
  if (!eager || wmTimer !== null) return
  wmTimer = setImmediate(flushWm)
}

function flushWm () {
  wmTimer = null
  if (wm !== wmSent) {
    wmSent = wm
    send({ t: 'wm', wm, recv: recvTotal })
  }
}

class Conn {
  constructor (i, topic) {
    this.i = i
    this.topic = topic
    this.socket = null
    this.state = S_HEAD
    this.head = ''
    this.size = 0
    this.rem = 0
    this.crlf = 0
    this.ls = L_START
    this.pi = 0
    this.ni = 0
    this.cur = 0
    this.inNum = false
    this.g = 0
    this.n = 0
    this.ready = false
    this.ended = false
    // Integrity, per scenario.
    this.lastN = 0
    this.count = 0
    this.gaps = 0
    this.dups = 0
    this.ooo = 0
  }

  onBytes (buf, len) {
    let p = 0
    while (p < len) {
      switch (this.state) {
        case S_HEAD: {
          // Only once per socket: the response head, as text (it may span reads).
          const before = this.head.length
          const text = this.head + buf.latin1Slice(p, len)
          const end = text.indexOf('\r\n\r\n')
          if (end === -1) {
            if (text.length > 16384) return this.fail('response head too large')
            this.head = text
            return
          }
          const head = text.slice(0, end)
          this.head = ''
          p += end + 4 - before
          const status = Number(head.slice(9, 12))
          if (status !== 200) return this.fail(`status ${status}`)
          if (!/\r\ncontent-type: *text\/event-stream/i.test(head)) return this.fail('not text/event-stream')
          this.state = /\r\ntransfer-encoding: *chunked/i.test(head) ? S_SIZE : S_RAW
          this.size = 0
          if (!this.ready) {
            this.ready = true
            onReady(this)
          }
          break
        }
        case S_SIZE: {
          const c = buf[p++]
          if (c === 10) {
            if (this.size === 0) {
              this.state = S_END
              return this.fail('the server ended the response')
            }
            this.rem = this.size
            this.size = 0
            this.state = S_DATA
          } else if (c >= 48 && c <= 57) this.size = this.size * 16 + (c - 48)
          else if (c >= 97 && c <= 102) this.size = this.size * 16 + (c - 87)
          else if (c >= 65 && c <= 70) this.size = this.size * 16 + (c - 55)
          else if (c !== 13) this.state = S_SIZE_EXT
          break
        }
        case S_SIZE_EXT: {
          const nl = buf.indexOf(10, p)
          if (nl === -1 || nl >= len) return
          p = nl
          this.state = S_SIZE
          break
        }
        case S_DATA: {
          const end = len - p < this.rem ? len : p + this.rem
          this.sse(buf, p, end)
          this.rem -= end - p
          p = end
          if (this.rem === 0) {
            this.state = S_CRLF
            this.crlf = 2
          }
          break
        }
        case S_CRLF: {
          p++
          if (--this.crlf === 0) this.state = S_SIZE
          break
        }
        case S_RAW:
          this.sse(buf, p, len)
          p = len
          break
        default:
          return
      }
    }
  }

  /** SSE lines in buf[p, end): only `data:` lines are looked at, for their first three numbers. */
  sse (buf, p, end) {
    while (p < end) {
      switch (this.ls) {
        case L_START: {
          const c = buf[p]
          if (c === 100) {
            this.ls = L_PREFIX
            this.pi = 1
            p++
          } else if (c === 10) {
            p++
          } else {
            this.ls = L_SKIP
          }
          break
        }
        case L_PREFIX: {
          const c = buf[p]
          if (c === DATA_COLON[this.pi]) {
            p++
            if (++this.pi === 5) {
              this.ls = L_NUMS
              this.ni = 0
              this.cur = 0
              this.inNum = false
            }
          } else {
            this.ls = L_SKIP
          }
          break
        }
        case L_NUMS: {
          const c = buf[p++]
          if (c >= 48 && c <= 57) {
            this.cur = this.cur * 10 + (c - 48)
            this.inNum = true
          } else {
            if (this.inNum) {
              const v = this.cur
              this.cur = 0
              this.inNum = false
              if (this.ni === 0) this.g = v
              else if (this.ni === 1) this.n = v
              else {
                this.event(this.g, this.n, v)
                this.ls = L_SKIP
                break
              }
              this.ni++
            }
            if (c === 10) this.ls = L_START // a data line without three numbers (a greeting)
          }
          break
        }
        default: { // L_SKIP
          const nl = buf.indexOf(10, p)
          if (nl === -1 || nl >= end) return
          p = nl + 1
          this.ls = L_START
        }
      }
    }
  }

  event (g, n, t) {
    const last = this.lastN
    if (n === last + 1) {
      this.lastN = n
    } else if (n > last) {
      this.gaps += n - last - 1
      this.lastN = n
    } else if (n === last) {
      this.dups++
    } else {
      this.ooo++
    }
    this.count++
    recvTotal++
    if (g > wm) {
      ring[g & MASK]++
      if (g > maxG) maxG = g
    }
    if (now >= ws && now < we) recvInWindow++
    if (t >= ws && t < we) {
      const lat = now - t
      hist[bucketOf(lat)]++
      latCount++
      if (lat > latMax) latMax = lat
    }
  }

  fail (why) {
    if (this.ended) return
    this.ended = true
    this.socket?.destroy()
    onEnded(this, why)
  }
}

let cfg = null
let started = 0
let readyCount = 0
let failedCount = 0
let firstError = null
let connectStart = 0
let connectedSent = false

const shared = Buffer.allocUnsafe(256 * 1024)

function openOne () {
  const idx = started++
  const c = conns[idx]
  const gi = cfg.first + idx
  const opts = {
    host: '127.0.0.1',
    port: cfg.port,
    onread: {
      buffer: shared,
      callback: (nread, buf) => {
        now = nowUs()
        c.onBytes(buf, nread)
        if (eager) {
          const before = wm
          advance()
          if (wm !== before) scheduleWm()
        }
      }
    }
  }
  // Past ~28k sockets one source address runs out of ports: spread them.
  if (cfg.spreadSources) opts.localAddress = `127.0.0.${1 + Math.floor(gi / 25000)}`
  const socket = net.connect(opts)
  c.socket = socket
  socket.setNoDelay(true)
  socket.on('connect', () => {
    socket.write(`GET /sse/t${c.topic} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`)
  })
  socket.on('error', (err) => { c.error ??= err.code ?? err.message })
  socket.on('end', () => c.fail(c.error ?? 'server ended the stream'))
  socket.on('close', () => c.fail(c.error ?? 'closed'))
}

function onReady () {
  readyCount++
  progressConnect()
}

function onEnded (c, why) {
  if (closing) return
  if (!c.ready) {
    failedCount++
    firstError ??= `socket ${c.i}: ${why}`
    progressConnect()
    return
  }
  send({ t: 'closed', i: c.i, why })
}

function progressConnect () {
  while (started < conns.length && started - readyCount - failedCount < cfg.concurrency) openOne()
  if (!connectedSent && readyCount + failedCount === conns.length) {
    connectedSent = true
    clearTimeout(deadline)
    send({ t: 'connected', ok: readyCount, failed: failedCount, ms: Date.now() - connectStart, firstError })
  }
}

function report (seq) {
  let events = 0
  let short = 0
  let gaps = 0
  let dups = 0
  let ooo = 0
  let ended = 0
  let minLastN = Infinity
  for (const c of conns) {
    events += c.count
    gaps += c.gaps
    dups += c.dups
    ooo += c.ooo
    if (c.ended) ended++
    if (c.lastN < minLastN) minLastN = c.lastN
    // Events of its topic this socket has not had by now (lost, or still on the way).
    if (seq != null && c.lastN < seq[c.topic]) short += seq[c.topic] - c.lastN
    c.count = 0
    c.gaps = 0
    c.dups = 0
    c.ooo = 0
  }
  advance()
  const out = {
    t: 'report',
    events,
    gaps,
    dups,
    ooo,
    ended,
    short,
    minLastN,
    wm,
    recvInWindow,
    latCount,
    latMax,
    hist: sparse(hist),
    cpu: process.cpuUsage()
  }
  hist = new Float64Array(BUCKETS)
  latMax = 0
  latCount = 0
  recvInWindow = 0
  return out
}

process.on('message', (msg) => {
  switch (msg.cmd) {
    case 'connect': {
      cfg = msg
      setEpoch(msg.epoch)
      topics = msg.topics
      topicOf = topicPicker(msg.pick ?? 'rr', topics)
      subsPerTopic = new Int32Array(topics)
      conns = new Array(msg.count)
      for (let k = 0; k < msg.count; k++) {
        const gi = msg.first + k
        const topic = gi % topics
        subsPerTopic[topic]++
        conns[k] = new Conn(gi, topic)
      }
      connectStart = Date.now()
      deadline = setTimeout(() => fatal(`connect: ${readyCount}/${conns.length} ready after ${msg.timeoutMs} ms (${failedCount} failed; ${firstError ?? 'no error'})`), msg.timeoutMs)
      progressConnect()
      break
    }
    case 'window':
      ws = msg.ws
      we = msg.we
      eager = msg.eager
      wmSent = -1
      advance()
      if (eager) scheduleWm()
      break
    case 'wm':
      advance()
      send({ t: 'wm', wm, recv: recvTotal })
      break
    case 'report':
      send(report(msg.seq ?? null))
      break
    case 'close':
      closing = true
      for (const c of conns) c.socket?.destroy()
      setTimeout(() => process.exit(0), 20)
      break
  }
})

process.on('disconnect', () => {
  closing = true
  for (const c of conns) c.socket?.destroy()
  process.exit(0)
})
