// Starting and stopping the processes of a case: servers (pinned with
// taskset), redis-server, the subscriber workers; and the little HTTP the
// orchestrator speaks to servers (/stats, /gc). Every wait is bounded.
import { spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('..', import.meta.url))

export const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

function pinned (cpu, cmd, args) {
  return cpu == null ? [cmd, args] : ['taskset', ['-c', String(cpu), cmd, ...args]]
}

/**
 * Starts benchmark/servers/<file> and waits for its ready line: { child, port, pid }.
 * `log`: a file its stdout and stderr are appended to (for flags such as --trace-gc).
 */
export function startServer (file, { cpu = null, args = [], nodeArgs = [], timeoutMs = 20000, log = null } = {}) {
  const [cmd, argv] = pinned(cpu, process.execPath, ['--expose-gc', ...nodeArgs, `${here}servers/${file}`, ...args])
  // An IPC channel only so that the server sees 'disconnect' (and exits, servers/common.mjs) if
  // the orchestrator dies without stopping it (killed by a test's timeout, say).
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], cwd: here })
  if (log) {
    const out = createWriteStream(log, { flags: 'a' })
    child.stdout.pipe(out)
    child.stderr.pipe(out)
  }
  let err = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (s) => { if (err.length < 4000) err += s })
  return new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${file}: no ready line after ${timeoutMs} ms. stderr: ${err.slice(0, 1000)}`))
    }, timeoutMs)
    child.stdout.setEncoding('utf8')
    let ready = false
    child.stdout.on('data', (s) => {
      if (ready) return
      out += s
      // The ready line is the first line that starts with {"ready" (flags such as --trace-gc print before it).
      for (;;) {
        const nl = out.indexOf('\n')
        if (nl === -1) {
          if (out.length > 65536) out = out.slice(-1024)
          return
        }
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        if (!line.startsWith('{"ready"')) continue
        ready = true
        clearTimeout(timer)
        try {
          const msg = JSON.parse(line)
          resolve({ child, port: msg.port, pid: msg.pid, stderr: () => err })
        } catch (e) {
          reject(new Error(`${file}: bad ready line ${line.slice(0, 200)}`))
        }
        return
      }
    })
    child.once('exit', (code, sig) => {
      clearTimeout(timer)
      reject(new Error(`${file} exited (${code ?? sig}) before ready. stderr: ${err.slice(0, 1500)}`))
    })
  })
}

/** SIGTERM, then SIGKILL after `ms`; resolves when the process is gone. */
export function stop (child, ms = 5000) {
  if (child == null || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise(resolve => {
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill('SIGTERM')
  })
}

/** A small JSON request to 127.0.0.1:port (no keep-alive). */
export function request (port, method, path, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (s) => { body += s })
      res.on('end', () => {
        try {
          resolve(JSON.parse(body))
        } catch {
          reject(new Error(`${method} ${path}: ${res.statusCode} ${body.slice(0, 200)}`))
        }
      })
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: timeout`)))
    req.on('error', reject)
    req.end()
  })
}

/** Polls /stats until `subscribers` reaches n. */
export async function waitSubscribers (port, n, timeoutMs) {
  const end = Date.now() + timeoutMs
  let last = null
  while (Date.now() < end) {
    last = await request(port, 'GET', '/stats')
    if (last.subscribers >= n) return last
    await sleep(50)
  }
  throw new Error(`server has ${last?.subscribers} subscribers, expected ${n}, after ${timeoutMs} ms`)
}

export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
}

/** One inline Redis command, its first reply line. */
export function redisCommand (port, line, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port })
    let buf = ''
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`redis ${line}: timeout`)) }, timeoutMs)
    s.on('connect', () => s.write(line + '\r\n'))
    s.setEncoding('latin1')
    s.on('data', (d) => {
      buf += d
      const nl = buf.indexOf('\r\n')
      if (nl !== -1) {
        clearTimeout(timer)
        s.destroy()
        resolve(buf.slice(0, nl))
      }
    })
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
  })
}

export async function startRedis (cpu) {
  const port = await freePort()
  const [cmd, argv] = pinned(cpu, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning'])
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] })
  const end = Date.now() + 10000
  while (Date.now() < end) {
    if (child.exitCode !== null) throw new Error('redis-server exited at start')
    try {
      if ((await redisCommand(port, 'PING', 1000)) === '+PONG') {
        // The pid of redis-server itself (taskset execs it).
        return { child, port, pid: child.pid, url: `redis://127.0.0.1:${port}` }
      }
    } catch {}
    await sleep(50)
  }
  child.kill('SIGKILL')
  throw new Error('redis-server did not answer PING within 10 s')
}

/**
 * The subscriber workers of one case: `count` sockets spread over the
 * workers, socket i following topic i % topics (events reach topics as
 * `pick` says, lib/topics.mjs). Tracks each worker's
 * watermark; `wm` is the minimum over workers.
 */
export class Clients {
  constructor (workers) {
    this.n = workers
    this.procs = []
    this.wms = []
    this.recvs = []
    this.onWm = null
    this.closed = [] // sockets that ended early: { i, why }
    this.fatal = null
    this.pending = new Map() // worker index -> resolver of the next 'report'
    this.wmWaiters = []
  }

  get pids () { return this.procs.map(p => p.pid) }

  /** Events received by all sockets so far (as last reported). */
  get recv () { return this.recvs.reduce((a, b) => a + b, 0) }

  get wm () {
    let m = Infinity
    for (const w of this.wms) if (w < m) m = w
    return m === Infinity ? 0 : m
  }

  async start ({ port, count, topics, pick = 'rr', epoch, spreadSources = false, concurrency = 256, timeoutMs = 90000 }) {
    const per = Math.ceil(count / this.n)
    const connected = []
    for (let w = 0; w < this.n; w++) {
      const first = w * per
      const mine = Math.max(0, Math.min(per, count - first))
      const child = spawn(process.execPath, [`${here}client/subscriber.mjs`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      this.procs.push(child)
      this.wms.push(0)
      this.recvs.push(0)
      connected.push(new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${w}: no 'connected' after ${timeoutMs + 5000} ms`)), timeoutMs + 5000)
        child.on('message', (msg) => {
          switch (msg.t) {
            case 'connected':
              clearTimeout(timer)
              resolve(msg)
              break
            case 'wm':
              this.wms[w] = msg.wm
              this.recvs[w] = msg.recv
              this.onWm?.()
              if (this.wmWaiters.length > 0) {
                const ws = this.wmWaiters
                this.wmWaiters = []
                for (const fn of ws) fn()
              }
              break
            case 'closed':
              if (this.closed.length < 1000) this.closed.push({ i: msg.i, why: msg.why })
              break
            case 'report': {
              const fn = this.pending.get(w)
              this.pending.delete(w)
              fn?.(msg)
              break
            }
            case 'fatal':
              this.fatal ??= msg.message
              clearTimeout(timer)
              reject(new Error(msg.message))
              break
          }
        })
        child.once('exit', (code) => {
          clearTimeout(timer)
          if (code !== 0 && code !== null) this.fatal ??= `worker ${w} exited with ${code}`
          reject(new Error(`worker ${w} exited (${code})`))
          const fn = this.pending.get(w)
          this.pending.delete(w)
          fn?.(null)
        })
        child.send({ cmd: 'connect', port, count: mine, first, topics, pick, epoch, concurrency, timeoutMs, spreadSources })
      }))
    }
    const res = await Promise.all(connected)
    return {
      ok: res.reduce((a, r) => a + r.ok, 0),
      failed: res.reduce((a, r) => a + r.failed, 0),
      ms: Math.max(...res.map(r => r.ms)),
      firstError: res.find(r => r.firstError)?.firstError ?? null
    }
  }

  window (ws, we, eager) {
    for (const p of this.procs) if (p.connected) p.send({ cmd: 'window', ws, we, eager })
  }

  /** Asks every worker for its watermark; resolves on the next wm message (bounded). */
  pollWm (timeoutMs = 1000) {
    return new Promise(resolve => {
      const timer = setTimeout(resolve, timeoutMs)
      this.wmWaiters.push(() => { clearTimeout(timer); resolve() })
      for (const p of this.procs) if (p.connected) p.send({ cmd: 'wm' })
    })
  }

  /** Every worker's report, merged by the caller; `seq`: each topic's last n published (Int32Array). */
  report (seq = null, timeoutMs = 10000) {
    const s = seq == null ? null : Array.from(seq)
    return Promise.all(this.procs.map((p, w) => new Promise(resolve => {
      if (!p.connected) return resolve(null)
      const timer = setTimeout(() => { this.pending.delete(w); resolve(null) }, timeoutMs)
      this.pending.set(w, (msg) => { clearTimeout(timer); resolve(msg) })
      p.send({ cmd: 'report', seq: s })
    })))
  }

  async close () {
    await Promise.all(this.procs.map(p => new Promise(resolve => {
      if (p.exitCode !== null || p.signalCode !== null) return resolve()
      const timer = setTimeout(() => p.kill('SIGKILL'), 5000)
      p.once('exit', () => { clearTimeout(timer); resolve() })
      if (p.connected) p.send({ cmd: 'close' })
      else p.kill('SIGTERM')
    })))
  }
}

/** A subscriber that never reads: connects, sends its GET, and pauses. */
export function stuckSubscriber (port, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port })
    const timer = setTimeout(() => { s.destroy(); reject(new Error('stuck subscriber: connect timeout')) }, timeoutMs)
    s.on('connect', () => {
      clearTimeout(timer)
      s.write('GET /sse/t0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n')
      s.pause()
      resolve(s)
    })
    s.on('error', () => {})
  })
}
