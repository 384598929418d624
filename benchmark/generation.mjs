#!/usr/bin/env node
// A generation (issue 16): one producer run of T tokens of 1-4 bytes,
// followed to its end by N followers over real sockets, against the same
// tokens sent to each connection by a plain `reply.sse(iterable)`.
//
//   node benchmark/generation.mjs [--tokens 10000] [--followers 1,100,1000] [--per-turn 1-4] [--reps 1] [--no-pin] [--json out.jsonl]
//
// Per N and repetition, a fresh server process (pinned with taskset to the
// first allowed core) and a followers process (pinned to the others):
// - hub: `fastify.sse.run(topic, producer)`, the producer yielding 1, 2, 3,
//   4, 1, ... tokens per event-loop turn (`--per-turn a-b` cycles a..b, or a
//   fixed count: a model's chunks, as fast as the server goes); followers on `reply.sse({ subscribe: [topic], since:
//   'start', until: 'done' })`, connected before the first token;
// - plain: `reply.sse(iterable)` per connection, the iterable yielding the
//   same tokens with the same turns (so the same per-turn coalescing), all
//   connections released at once.
// Measured on the server from the release to the last follower's end:
// process CPU time (process.cpuUsage: all threads), socket writes
// (`stats().writes`), hence writes per follower and CPU per token; the
// follower side counts its reads. Every follower must get every token's
// exact JSON, in order, then `done`, then the end of the response, or the
// run says FAILED.
import { spawn, execFileSync } from 'node:child_process'
import { writeFileSync, appendFileSync } from 'node:fs'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { allowedCpus } from './lib/proc.mjs'

const self = fileURLToPath(import.meta.url)
const argv = process.argv.slice(2)
const opt = { tokens: 10000, followers: [1, 100, 1000], perTurn: '1-4', reps: 1, pin: true, json: null, role: null }
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === '--tokens') opt.tokens = Number(argv[++i])
  else if (a === '--followers') opt.followers = argv[++i].split(',').map(Number)
  else if (a === '--reps') opt.reps = Number(argv[++i])
  else if (a === '--per-turn') opt.perTurn = argv[++i]
  else if (a === '--no-pin') opt.pin = false
  else if (a === '--json') opt.json = argv[++i]
  else if (a === '--role') opt.role = argv[++i]
  else {
    console.error(`unknown option ${a}`)
    process.exit(2)
  }
}

/** Token i: 1 to 4 bytes of ASCII, deterministic (both sides compute it). */
function token (i) {
  const len = 1 + ((i * 7 + (i >> 3)) % 4)
  let s = ''
  for (let k = 0; k < len; k++) s += 'abcdefghijklmnopqrstuvwxyz ,.'[(i * 31 + k * 17) % 29]
  return s
}
/** Tokens in turn n: lo, lo + 1, ..., hi, lo, ... */
const [lo, hi] = (() => {
  const [a, b = a] = opt.perTurn.split('-').map(Number)
  if (!(a >= 1 && b >= a)) { console.error(`--per-turn: a count or a range lo-hi, got ${opt.perTurn}`); process.exit(2) }
  return [a, b]
})()
const stepOf = (n) => lo + (n % (hi - lo + 1))
const turn = () => new Promise(resolve => setImmediate(resolve))

if (opt.role === 'server') await server()
else if (opt.role === 'followers') await followers()
else await main()

// ---- orchestrator -------------------------------------------------------------

function child (role, cpus) {
  const args = [self, '--role', role, '--tokens', String(opt.tokens), '--per-turn', opt.perTurn]
  const [cmd, full] = cpus !== null ? ['taskset', ['-c', cpus, process.execPath, ...args]] : [process.execPath, args]
  const c = spawn(cmd, full, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const waiting = []
  c.on('message', (m) => waiting.shift()?.(m))
  const exited = new Promise(resolve => c.once('exit', resolve))
  return {
    ask (msg, ms = 600_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${role}: no answer to ${msg.cmd} within ${ms} ms`)), ms)
        waiting.push((m) => { clearTimeout(timer); resolve(m) })
        c.send(msg)
      })
    },
    async stop () { c.kill('SIGTERM'); await exited }
  }
}

async function main () {
  const cpus = allowedCpus()
  let pin = opt.pin && cpus.length >= 2
  if (pin) {
    try { execFileSync('taskset', ['-V'], { stdio: 'ignore' }) } catch { pin = false }
  }
  const serverCpus = pin ? String(cpus[0]) : null
  const followerCpus = pin ? cpus.slice(1).join(',') : null
  const rows = []
  if (opt.json) writeFileSync(opt.json, '')
  for (let rep = 1; rep <= opt.reps; rep++) {
    for (const n of opt.followers) {
      for (const mode of ['hub', 'plain']) {
        const srv = child('server', serverCpus)
        const fol = child('followers', followerCpus)
        try {
          const { port } = await srv.ask({ cmd: 'listen' }, 30_000)
          const path = mode === 'hub' ? `/g/r${rep}n${n}` : `/plain/r${rep}n${n}`
          await srv.ask({ cmd: 'prepare', mode, path })
          const conn = await fol.ask({ cmd: 'connect', port, path, n }, 60_000)
          if (conn.failed > 0) throw new Error(`${conn.failed} followers could not connect: ${conn.firstError}`)
          await srv.ask({ cmd: 'wait-open', n }, 60_000)
          const doneP = fol.ask({ cmd: 'collect' })
          await srv.ask({ cmd: 'go' })
          const got = await doneP
          const m = await srv.ask({ cmd: 'measure' })
          const row = {
            mode,
            followers: n,
            tokens: opt.tokens,
            perTurn: opt.perTurn,
            rep,
            ok: got.fails.length === 0,
            fails: got.fails.slice(0, 5),
            ms: m.ms,
            cpuMs: m.cpuUs / 1000,
            cpuUsPerToken: m.cpuUs / opt.tokens,
            cpuUsPerDelivery: m.cpuUs / (opt.tokens * n),
            writesPerFollower: m.writes / n,
            readsPerFollower: got.reads / n,
            tokensPerFollower: got.tokens / n
          }
          rows.push(row)
          if (opt.json) appendFileSync(opt.json, JSON.stringify(row) + '\n')
          console.log(`rep ${rep} ${mode.padEnd(5)} N=${String(n).padStart(4)}: ${row.ok ? 'every follower exact' : 'FAILED: ' + row.fails.join('; ')}, ` +
            `${row.ms.toFixed(0)} ms, server CPU ${row.cpuMs.toFixed(1)} ms (${row.cpuUsPerToken.toFixed(2)} µs/token, ${row.cpuUsPerDelivery.toFixed(3)} µs/delivery), ` +
            `${row.writesPerFollower.toFixed(1)} writes and ${row.readsPerFollower.toFixed(1)} reads per follower for ${opt.tokens} tokens`)
        } finally {
          await fol.stop()
          await srv.stop()
        }
      }
    }
  }
  const med = (xs) => { const a = [...xs].sort((p, q) => p - q); return a.length % 2 ? a[a.length >> 1] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2 }
  console.log(`\n${opt.tokens} tokens of 1-4 bytes, ${opt.perTurn} per turn; medians of ${opt.reps} (Node ${process.version}${pin ? `, server on core ${serverCpus}, followers on ${followerCpus}` : ', not pinned'}):`)
  console.log('| followers | writes per follower (hub) | server CPU µs/token: hub | plain `reply.sse(iterable)` | hub / plain | wall ms: hub | plain | every text exact |')
  console.log('|---:|---:|---:|---:|---:|---:|---:|---|')
  for (const n of opt.followers) {
    const hub = rows.filter(r => r.mode === 'hub' && r.followers === n)
    const plain = rows.filter(r => r.mode === 'plain' && r.followers === n)
    const h = med(hub.map(r => r.cpuUsPerToken))
    const p = med(plain.map(r => r.cpuUsPerToken))
    console.log(`| ${n} | ${med(hub.map(r => r.writesPerFollower)).toFixed(1)} | ${h.toFixed(2)} | ${p.toFixed(2)} | ${(h / p).toFixed(2)}x | ${med(hub.map(r => r.ms)).toFixed(0)} | ${med(plain.map(r => r.ms)).toFixed(0)} | ${[...hub, ...plain].every(r => r.ok) ? 'yes' : 'NO'} |`)
  }
  if (rows.some(r => !r.ok)) process.exitCode = 1
}

// ---- server -------------------------------------------------------------------

async function server () {
  process.on('disconnect', () => process.exit(0))
  const { default: Fastify } = await import('fastify')
  const { Type } = await import('@sinclair/typebox')
  const { default: sse } = await import('../dist/esm/index.js')
  const app = Fastify({ logger: false })
  await app.register(sse)
  const gen = app.sse.channel('gen/:id', {
    events: { token: Type.Object({ text: Type.String() }), done: Type.Object({ reason: Type.String() }) },
    history: { limit: opt.tokens + 10, ttl: 0 }
  })
  let gate = null
  let open = null
  let run = null
  const plainDone = []
  /** The same tokens, turns and end for both ways: released by the gate, --per-turn tokens a turn, then done. */
  async function * tokens () {
    await gate
    let i = 0
    for (let s = 0; i < opt.tokens; s++) {
      for (let k = stepOf(s); k > 0 && i < opt.tokens; k--) yield { event: 'token', data: { text: token(i++) } }
      await turn()
    }
    yield { event: 'done', data: { reason: 'stop' } }
  }
  app.get('/g/:id', (req, reply) => reply.sse({ subscribe: [gen.topic(req.params)], since: 'start', until: 'done' }))
  app.get('/plain/:id', (req, reply) => {
    const stream = reply.sse(tokens())
    plainDone.push(stream.closed)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  let cpu0, writes0, t0
  process.on('message', async (m) => {
    if (m.cmd === 'listen') process.send({ port: app.server.address().port })
    else if (m.cmd === 'prepare') {
      gate = new Promise(resolve => { open = resolve })
      if (m.mode === 'hub') {
        const id = m.path.split('/').pop()
        run = app.sse.run(gen.topic({ id }), tokens)
        await run.started
      }
      process.send({ ok: true })
    } else if (m.cmd === 'wait-open') {
      for (let i = 0; i < 1200 && app.sse.stats().openStreams < m.n; i++) await new Promise(resolve => setTimeout(resolve, 50))
      process.send({ open: app.sse.stats().openStreams })
    } else if (m.cmd === 'go') {
      t0 = performance.now()
      const c = process.cpuUsage()
      cpu0 = c.user + c.system
      writes0 = app.sse.stats().writes
      open()
      process.send({ ok: true })
    } else if (m.cmd === 'measure') {
      const c = process.cpuUsage()
      process.send({ cpuUs: c.user + c.system - cpu0, writes: app.sse.stats().writes - writes0, ms: performance.now() - t0 })
    }
  })
}

// ---- followers ----------------------------------------------------------------

async function followers () {
  process.on('disconnect', () => process.exit(0))
  // The exact data line of every token, and of done.
  const lines = []
  for (let i = 0; i < opt.tokens; i++) lines.push('data: ' + JSON.stringify({ text: token(i) }))
  const doneLine = 'data: {"reason":"stop"}'
  let sockets = []
  let finished = 0
  let onAllDone = null
  let endAt = 0

  /** One follower: raw HTTP/1.1, chunked decoding and SSE lines, checked as they come. */
  function follower (port, path) {
    const f = { socket: null, reads: 0, tokens: 0, event: '', gotDone: false, ended: false, fail: null, status: 0, head: '', pending: '', remaining: 0, state: 'head' }
    const fail = (why) => { f.fail ??= why }
    const line = (l) => {
      if (l === '') { f.event = ''; return }
      if (l.startsWith('event: ')) f.event = l.slice(7)
      else if (l.startsWith('data: ') && f.event === 'token') {
        if (f.gotDone) fail('token after done')
        else if (l !== lines[f.tokens]) fail(`token ${f.tokens}: got ${l.slice(0, 40)}, want ${lines[f.tokens]}`)
        f.tokens++
      } else if (l.startsWith('data: ') && f.event === 'done') {
        if (l !== doneLine) fail(`done: ${l}`)
        if (f.tokens !== opt.tokens) fail(`done after ${f.tokens} tokens`)
        f.gotDone = true
      }
    }
    let text = ''
    const body = (s) => {
      text += s
      let nl
      while ((nl = text.indexOf('\n')) !== -1) {
        line(text.slice(0, nl))
        text = text.slice(nl + 1)
      }
    }
    const finish = () => {
      if (f.ended) return
      f.ended = true
      if (!f.gotDone) fail(`ended after ${f.tokens} tokens without done`)
      f.socket.destroy()
      if (++finished === sockets.length) { endAt = performance.now(); onAllDone?.() }
    }
    f.connected = new Promise((resolve) => {
      f.socket = net.connect(port, '127.0.0.1', () => {
        f.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`)
      })
      f.socket.setEncoding('latin1')
      f.socket.on('error', (err) => { fail(String(err)); resolve(); finish() })
      f.socket.on('close', () => { if (!f.ended) { fail('socket closed early'); finish() } })
      f.socket.on('data', (chunk) => {
        f.reads++
        let s = f.pending + chunk
        f.pending = ''
        while (s.length > 0 && !f.ended) {
          if (f.state === 'head') {
            const end = s.indexOf('\r\n\r\n')
            if (end === -1) { f.pending = s; return }
            f.status = Number(s.slice(9, 12))
            if (f.status !== 200) { fail(`status ${f.status}`); resolve(); finish(); return }
            resolve()
            s = s.slice(end + 4)
            f.state = 'size'
          } else if (f.state === 'size') {
            const end = s.indexOf('\r\n')
            if (end === -1) { f.pending = s; return }
            f.remaining = parseInt(s.slice(0, end), 16)
            s = s.slice(end + 2)
            if (f.remaining === 0) { finish(); return }
            f.state = 'data'
          } else if (f.state === 'data') {
            const take = Math.min(f.remaining, s.length)
            // Tokens are ASCII: latin1 characters are bytes.
            body(s.slice(0, take))
            f.remaining -= take
            s = s.slice(take)
            if (f.remaining === 0) f.state = 'crlf'
          } else {
            if (s.length < 2) { f.pending = s; return }
            s = s.slice(2)
            f.state = 'size'
          }
        }
      })
    })
    return f
  }

  process.on('message', async (m) => {
    if (m.cmd === 'connect') {
      sockets = []
      finished = 0
      for (let i = 0; i < m.n; i++) {
        sockets.push(follower(m.port, m.path))
        // A few at a time: the server's accept queue stays short.
        if (i % 64 === 63) await Promise.all(sockets.slice(-64).map(f => f.connected))
      }
      await Promise.all(sockets.map(f => f.connected))
      const failed = sockets.filter(f => f.fail !== null)
      process.send({ failed: failed.length, firstError: failed[0]?.fail ?? null })
    } else if (m.cmd === 'collect') {
      if (finished < sockets.length) await new Promise(resolve => { onAllDone = resolve })
      const fails = sockets.filter(f => f.fail !== null).map(f => f.fail)
      process.send({
        fails,
        reads: sockets.reduce((a, f) => a + f.reads, 0),
        tokens: sockets.reduce((a, f) => a + f.tokens, 0),
        endAt
      })
    }
  })
}
