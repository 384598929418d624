/**
 * Drives test/fixtures/sse-load-client.mjs, a child process holding
 * thousands of raw SSE sockets, over its fork() IPC channel. Every wait is
 * bounded; the child is killed on teardown whatever happened.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import type { T } from './index.js'

const fixture = fileURLToPath(new URL('../fixtures/sse-load-client.mjs', import.meta.url))

export interface LoadOptions {
  port: number
  count: number
  /** Request path; `{i}` is replaced by the socket's index (0-based). */
  path: string
  /** Sockets connecting at once (until ready). */
  concurrency?: number
  /** The child's own deadline for its whole life. */
  timeoutMs?: number
  /** A string (with `{i}`) every event's data of socket i must contain. */
  expectData?: string
  /** 'id' (default): ready at the first frame with an id (a hub stream's head id). 'bytes': at the first body bytes. */
  readyOn?: 'id' | 'bytes'
}

export interface Connected { ready: number, failed: number, ms: number, failures: Array<{ i: number, why: string }> }

/** Per-socket columns, index = socket index. */
export interface LoadReport {
  count: number[]
  firstId: Array<string | null>
  lastId: Array<string | null>
  headId: Array<string | null>
  outOfOrder: number[]
  idOnly: number[]
  noId: number[]
  dataMismatch: number[]
  hash: number[]
  firstData: Array<string | null>
  closed: boolean[]
  error: Array<string | null>
}

type Msg = { type: string, [k: string]: unknown }

/** FNV-1a over each id followed by '\n': the same as the fixture's per-socket hash. */
export function idsHash (ids: string[]): number {
  let h = 0x811c9dc5
  for (const id of ids) {
    for (let i = 0; i < id.length; i++) {
      h ^= id.charCodeAt(i)
      h = Math.imul(h, 0x01000193)
    }
    h ^= 10
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

export class LoadClient {
  private readonly child: ChildProcess
  private readonly inbox: Msg[] = []
  private readonly waiters = new Set<() => void>()
  private exited: string | null = null
  private fatal: string | null = null

  private constructor (child: ChildProcess) {
    this.child = child
    child.on('message', (msg: Msg) => {
      if (msg.type === 'fatal') this.fatal = String(msg.message)
      this.inbox.push(msg)
      this.wake()
    })
    child.on('exit', (code, signal) => {
      this.exited = `load client exited (code ${code}, signal ${signal})`
      this.wake()
    })
    child.on('error', (err) => {
      this.exited = `load client failed: ${err.message}`
      this.wake()
    })
  }

  /** Forks the client and starts connecting; resolves once the child is up (not yet connected). */
  static async start (t: T, options: LoadOptions): Promise<LoadClient> {
    const env = { ...process.env }
    delete env.NODE_OPTIONS
    const child = fork(fixture, [], {
      execArgv: ['--max-semi-space-size=16'],
      env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'json'
    })
    const client = new LoadClient(child)
    t.teardown(() => client.kill())
    await client.next('hello', 10_000)
    child.send({ type: 'start', ...options })
    return client
  }

  private wake (): void {
    for (const w of [...this.waiters]) w()
  }

  /** The next message of `type` (taken from the inbox), or a rejection naming what went wrong. */
  next<M extends Msg = Msg> (type: string, ms: number, what = `'${type}' from the load client`): Promise<M> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const i = this.inbox.findIndex(m => m.type === type)
        if (i !== -1) {
          done()
          resolve(this.inbox.splice(i, 1)[0] as M)
          return true
        }
        if (this.fatal !== null || this.exited !== null) {
          done()
          reject(new Error(`waiting for ${what}: ${this.fatal ?? this.exited}`))
          return true
        }
        return false
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`))
      }, ms)
      const done = (): void => {
        clearTimeout(timer)
        this.waiters.delete(waker)
      }
      const waker = (): void => { check() }
      if (check()) return
      this.waiters.add(waker)
    })
  }

  /** Resolves when every socket is ready or has failed. */
  connected (ms: number): Promise<Connected> {
    return this.next<Msg & Connected>('connected', ms, 'every socket to connect')
  }

  /**
   * Tells the client to watch for `n` events on every socket; call before
   * publishing. `complete()` then resolves with the wall-clock time (ms,
   * performance.timeOrigin-based, comparable across processes) at which the
   * last socket got its n-th event.
   */
  expect (n: number): void {
    this.child.send({ type: 'expect', n })
  }

  async complete (n: number, ms: number): Promise<number> {
    try {
      const msg = await this.next<Msg & { at: number }>('complete', ms, `every socket to have ${n} events`)
      return msg.at
    } catch (err) {
      // Say which sockets fell short, if the child can still tell.
      let detail = ''
      try {
        const r = await this.report(5_000)
        const short = r.count.map((c, i) => [i, c] as const).filter(([, c]) => c < n)
        const hist = new Map<number, number>()
        for (const [, c] of short) hist.set(c, (hist.get(c) ?? 0) + 1)
        detail = `; ${short.length} sockets short (count -> sockets: ${JSON.stringify(Object.fromEntries(hist))}), ` +
          `first: ${JSON.stringify(short.slice(0, 5).map(([i, c]) => ({ i, count: c, closed: r.closed[i], error: r.error[i] })))}`
      } catch {}
      throw new Error((err as Error).message + detail)
    }
  }

  report (ms = 20_000): Promise<LoadReport> {
    this.child.send({ type: 'report' })
    return this.next<Msg & LoadReport>('report', ms, 'the per-socket report')
  }

  /** Closes every socket; resolves when all have closed on the client side and the child has exited. */
  async close (ms = 30_000): Promise<number> {
    this.child.send({ type: 'close' })
    const msg = await this.next<Msg & { ms: number }>('closed', ms, 'every socket to close')
    if (this.exited === null) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('load client did not exit after closing')), 5_000)
        this.child.once('exit', () => { clearTimeout(timer); resolve() })
      })
    }
    return msg.ms
  }

  kill (): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

/** Per-socket problems, summarised: how many sockets are bad and the first few, for a failure message. */
export function badSockets (report: LoadReport, check: (i: number) => string | null): { bad: number, examples: string } {
  let bad = 0
  const examples: string[] = []
  for (let i = 0; i < report.count.length; i++) {
    const why = check(i)
    if (why === null) continue
    bad++
    if (examples.length < 5) examples.push(`#${i}: ${why}`)
  }
  return { bad, examples: examples.join('; ') }
}

let gcFn: (() => void) | null = null
/** RSS, V8 heap and ArrayBuffer (Buffer) bytes after full GCs. */
export function memoryAfterGc (): { rss: number, heap: number, arrayBuffers: number } {
  if (gcFn === null) {
    v8.setFlagsFromString('--expose-gc')
    gcFn = vm.runInNewContext('gc') as () => void
  }
  gcFn(); gcFn()
  const m = process.memoryUsage()
  return { rss: m.rss, heap: m.heapUsed, arrayBuffers: m.arrayBuffers }
}

export const mib = (bytes: number): string => (bytes / 1048576).toFixed(1) + ' MiB'

/** Wall-clock milliseconds with sub-millisecond precision (comparable with a child process's). */
export const now = (): number => performance.timeOrigin + performance.now()

/** One event-loop turn. */
export const turn = (): Promise<void> => new Promise(resolve => setImmediate(resolve))
