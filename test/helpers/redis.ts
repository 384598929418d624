/**
 * A real redis-server for tests: started on a free port with a temp dir and
 * no persistence, stopped by PID. Where redis-server is not installed the
 * suite is skipped with one line saying how to install it, except under
 * CI=true, where its absence fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import { Redis } from 'ioredis'

export const HOW_TO_INSTALL = 'redis-server not found on PATH; install it with: apt-get install -y redis-server'
export const HOW_TO_INSTALL_SENTINEL = 'redis-sentinel not found on PATH; install it with: apt-get install -y redis-sentinel'

/** True if redis-server is on PATH. */
export function haveRedis (): boolean {
  return spawnSync('redis-server', ['--version']).status === 0
}

/**
 * Decides whether a Redis suite runs: returns a skip reason, or false.
 * Under CI=true a missing redis-server throws instead.
 */
export function redisSkip (): string | false {
  if (haveRedis()) return false
  if (process.env.CI === 'true') throw new Error(HOW_TO_INSTALL + ' (CI=true: the Redis suites must run)')
  return HOW_TO_INSTALL
}

/** Like redisSkip(), for suites that also need redis-sentinel. */
export function sentinelSkip (): string | false {
  const redis = redisSkip()
  if (redis !== false) return redis
  if (spawnSync('redis-sentinel', ['--version']).status === 0) return false
  if (process.env.CI === 'true') throw new Error(HOW_TO_INSTALL_SENTINEL + ' (CI=true: the Sentinel suites must run)')
  return HOW_TO_INSTALL_SENTINEL
}

export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
    server.on('error', reject)
  })
}

/** One redis-server process; `args` are extra config (`['--maxmemory', '2mb']`, `['--replicaof', ...]`). */
export class RedisServer {
  port = 0
  private child: ChildProcess | null = null
  /** Its working directory (dump.rdb lives here). */
  readonly dir = mkdtempSync(join(tmpdir(), 'sse-hub-redis-'))

  constructor (private readonly args: string[] = []) {}

  /** The process id, while it runs. */
  get pid (): number | undefined {
    return this.child?.pid
  }

  /** Sends a signal (SIGSTOP, SIGCONT) to the running server. */
  signal (sig: NodeJS.Signals): void {
    this.child?.kill(sig)
  }

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /** Starts (or restarts, on the same port) and resolves once it says it accepts connections. */
  async start (port?: number): Promise<this> {
    this.port = port ?? this.port
    if (this.port === 0) this.port = await freePort()
    const child = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'notice', ...this.args
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    await new Promise<void>((resolve, reject) => {
      let out = ''
      const timer = setTimeout(() => reject(new Error('redis-server did not start within 10 s: ' + out)), 10_000)
      const onData = (chunk: Buffer): void => {
        out += chunk.toString()
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer)
          child.stdout?.removeListener('data', onData)
          child.stdout?.resume()
          resolve()
        }
      }
      child.stdout?.on('data', onData)
      child.stderr?.resume()
      child.once('exit', code => { clearTimeout(timer); reject(new Error(`redis-server exited with ${code}: ${out}`)) })
    })
    return this
  }

  /** Kills the server (SIGKILL: nothing is saved) and resolves once it has exited. */
  async kill (): Promise<void> {
    const child = this.child
    if (child === null || child.exitCode !== null) return
    this.child = null
    await new Promise<void>(resolve => {
      child.once('exit', () => resolve())
      child.kill('SIGKILL')
    })
  }

  /** A fresh client for the test's own commands (FLUSHALL, CLIENT KILL...). */
  client (): Redis {
    const client = new Redis(this.url, { maxRetriesPerRequest: 1 })
    client.on('error', () => {})
    return client
  }

  async stop (): Promise<void> {
    await this.kill()
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** A redis-sentinel watching one master (`name`, quorum 1), fast to decide: down after 400 ms. */
export class Sentinel {
  port = 0
  private child: ChildProcess | null = null
  private readonly dir = mkdtempSync(join(tmpdir(), 'sse-hub-sentinel-'))
  /** Everything it logged, for +switch-master and friends. */
  log = ''

  constructor (readonly name: string, private readonly masterPort: number) {}

  async start (): Promise<this> {
    this.port = await freePort()
    const conf = join(this.dir, 'sentinel.conf')
    writeFileSync(conf, [
      `port ${this.port}`, 'bind 127.0.0.1', 'protected-mode no', `dir ${this.dir}`,
      `sentinel monitor ${this.name} 127.0.0.1 ${this.masterPort} 1`,
      `sentinel down-after-milliseconds ${this.name} 400`,
      `sentinel failover-timeout ${this.name} 3000`,
      `sentinel parallel-syncs ${this.name} 1`
    ].join('\n') + '\n')
    const child = spawn('redis-sentinel', [conf], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    child.stdout?.on('data', (chunk: Buffer) => { this.log += chunk.toString() })
    child.stderr?.resume()
    await this.until('+monitor master', 10_000)
    return this
  }

  /** Resolves once the log shows `text` (bounded). */
  until (text: string, ms = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = this.child as ChildProcess
      if (this.log.includes(text)) { resolve(); return }
      const timer = setTimeout(() => { child.stdout?.removeListener('data', on); reject(new Error(`sentinel did not log ${text} within ${ms} ms: ${this.log}`)) }, ms)
      const on = (): void => {
        if (!this.log.includes(text)) return
        clearTimeout(timer)
        child.stdout?.removeListener('data', on)
        resolve()
      }
      child.stdout?.on('data', on)
    })
  }

  async stop (): Promise<void> {
    const child = this.child
    this.child = null
    if (child !== null && child.exitCode === null) {
      await new Promise<void>(resolve => { child.once('exit', () => resolve()); child.kill('SIGKILL') })
    }
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** One acknowledged publish: its id and the payload number it carried. */
export interface Acked { id: string, n: number, topic: string }
/** What a client received: hub events and resets (event 'reset'). */
export interface Got { id?: string, event?: string, data: string }

export interface SequenceReport {
  /** Acknowledged events of the client's topics it neither received nor was told of by a reset first. */
  lost: number
  /** Resets the client got. */
  resets: number
  /** Events received out of order or twice. */
  disorder: number
  /** Events received that no acknowledged publish made and no refused one may have. */
  unknown: number
}

function parse (id: string): { epoch: string, seq: number } {
  const at = id.lastIndexOf('-')
  return { epoch: id.slice(0, at), seq: Number(id.slice(at + 1)) }
}

/**
 * Checks one client's events against the log of acknowledged publishes:
 * every acknowledged event of its topics after `start` (the client's head
 * id) arrives once, in order, or a reset comes first. Events of publishes
 * that were refused (`uncertain` payload numbers) may arrive too.
 */
export function checkSequence (got: Got[], acked: Acked[], topics: string[], start: string | undefined, uncertain: Set<number>): SequenceReport {
  // Epochs in the order they first appear, then seq: the hub's order.
  const rank = new Map<string, number>()
  for (const a of acked) { const e = parse(a.id).epoch; if (!rank.has(e)) rank.set(e, rank.size) }
  const key = (id: string): number => { const p = parse(id); return (rank.get(p.epoch) ?? -1) * 1e12 + p.seq }
  const mine = acked.filter(a => topics.includes(a.topic)).sort((x, y) => key(x.id) - key(y.id))
  const at = new Map(mine.map((a, i) => [a.id, i]))
  const ackedIds = new Set(acked.map(a => a.id))
  const after = (id: string | undefined): number => {
    if (id === undefined) return 0
    const p = parse(id)
    // An epoch nobody published in yet starts before all later ones, after all earlier ones.
    if (!rank.has(p.epoch)) rank.set(p.epoch, rank.size)
    const k = key(id)
    const i = mine.findIndex(a => key(a.id) > k)
    return i < 0 ? mine.length : i
  }
  const report: SequenceReport = { lost: 0, resets: 0, disorder: 0, unknown: 0 }
  let next = after(start)
  for (const e of got) {
    if (e.event === 'reset') {
      report.resets++
      next = after(e.id)
      continue
    }
    if (e.id === undefined || !ackedIds.has(e.id)) {
      const n = (JSON.parse(e.data) as { n?: number }).n
      if (n === undefined || !uncertain.has(n)) report.unknown++
      continue
    }
    const i = at.get(e.id)
    if (i === undefined) { report.unknown++; continue }
    if (i < next) { report.disorder++; continue }
    report.lost += i - next
    next = i + 1
  }
  report.lost += mine.length - next
  return report
}

/** Ids that name two different payloads across everything seen (acknowledged publishes and every client's events). */
/** The epoch an event id names (the part before its first '-'). */
export function epochOf (id: string): string {
  return id.split('-')[0]
}

/** The distinct epochs of these acknowledged publishes. */
export function epochsOf (acked: Acked[]): Set<string> {
  return new Set(acked.map(x => epochOf(x.id)))
}

export function reusedIds (acked: Acked[], clients: Got[][]): number {
  const byId = new Map<string, string>()
  const reused = new Set<string>()
  const see = (id: string, n: string): void => {
    const had = byId.get(id)
    if (had === undefined) byId.set(id, n)
    else if (had !== n) reused.add(id)
  }
  for (const a of acked) see(a.id, String(a.n))
  for (const got of clients) {
    for (const e of got) {
      if (e.event === 'reset' || e.id === undefined) continue
      see(e.id, String((JSON.parse(e.data) as { n?: number }).n))
    }
  }
  return reused.size
}
