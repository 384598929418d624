/**
 * Test helpers: a Fastify app on a real port, an SSE client over undici that
 * parses with eventsource-parser (an independent oracle), and event-driven
 * waits with bounded timeouts (never fixed sleeps).
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Client } from 'undici'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import { Writable } from 'node:stream'
import tap from 'tap'
import ssePlugin, { type Backend, type SseHubOptions } from '../../lib/index.js'
import { RedisServer } from './redis.js'

/**
 * Which backend makeApp() gives apps that do not choose one: 'memory', or
 * 'redis' when HUB_BACKEND=redis (the contract suite runs the hub's
 * behaviour files both ways). On Redis, apps of one process share one
 * redis-server and each gets its own key prefix, so each is its own hub.
 */
export const backendKind: 'memory' | 'redis' = process.env.HUB_BACKEND === 'redis' ? 'redis' : 'memory'
let sharedRedis: Promise<RedisServer> | null = null
let prefixes = 0

async function defaultBackend (): Promise<Backend | undefined> {
  if (backendKind !== 'redis') return undefined
  if (sharedRedis === null) {
    sharedRedis = new RedisServer().start()
    tap.teardown(async () => { await (await sharedRedis as RedisServer).stop() })
  }
  const server = await sharedRedis
  const { redisBackend } = await import('../../lib/redis.js')
  return redisBackend({ url: server.url, prefix: `t${process.pid}-${++prefixes}` })
}

/** The subset of tap's Test these helpers use. */
export interface T {
  teardown: (fn: () => unknown) => void
}

export interface LogLine { level: number, msg: string, [key: string]: unknown }

/** A Fastify app with the plugin, logging to an array, listening on 127.0.0.1:0. */
export async function makeApp (
  t: T,
  setup: (app: FastifyInstance) => void | Promise<void>,
  options: { plugin?: SseHubOptions, fastify?: FastifyServerOptions, listen?: boolean } = {}
): Promise<{ app: FastifyInstance, url: string, logs: LogLine[], untilLog: (what: string, match: (line: LogLine) => boolean, ms?: number) => Promise<LogLine> }> {
  const logs: LogLine[] = []
  const wakers = new Set<() => void>()
  const stream = new Writable({
    write (chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line !== '') logs.push(JSON.parse(line))
      for (const wake of [...wakers]) wake()
      cb()
    }
  })
  /** Resolves with the first log line (from now on, or already logged) that matches. */
  const untilLog = async (what: string, match: (line: LogLine) => boolean, ms = 5_000): Promise<LogLine> => {
    let found: LogLine | undefined
    await waitFor(what, () => (found = logs.find(match)) !== undefined, (wake) => {
      wakers.add(wake)
      return () => wakers.delete(wake)
    }, ms)
    return found as LogLine
  }
  const app = Fastify({ logger: { level: 'info', stream }, ...options.fastify } as FastifyServerOptions) as unknown as FastifyInstance
  t.teardown(() => app.close())
  const plugin = { ...options.plugin }
  if (plugin.backend === undefined) {
    const backend = await defaultBackend()
    if (backend !== undefined) plugin.backend = backend
  }
  await app.register(ssePlugin, plugin)
  await setup(app)
  if (options.listen === false) {
    await app.ready()
    return { app, url: '', logs, untilLog }
  }
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url: address, logs, untilLog }
}

/** Resolves when `check()` turns true, re-checked whenever `subscribe` signals; rejects after `ms`. */
export function waitFor (
  what: string,
  check: () => boolean,
  subscribe: (wake: () => void) => () => void,
  ms = 5_000
): Promise<void> {
  if (check()) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe()
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`))
    }, ms)
    const unsubscribe = subscribe(() => {
      if (!check()) return
      clearTimeout(timer)
      unsubscribe()
      resolve()
    })
  })
}

/** Resolves with the first `event` emitted by `emitter`, or rejects after `ms`. */
export function once (emitter: NodeJS.EventEmitter, event: string, ms = 5_000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, on)
      reject(new Error(`timed out after ${ms} ms waiting for '${event}'`))
    }, ms)
    function on (...args: unknown[]): void {
      clearTimeout(timer)
      resolve(args)
    }
    emitter.once(event, on)
  })
}

/**
 * Something a test waits on: subclasses call `wake()` whenever their state
 * changes, and `until()` re-checks a condition then (event-driven, bounded).
 */
export class Wakeable {
  private readonly wakers = new Set<() => void>()

  protected wake (): void {
    for (const w of [...this.wakers]) w()
  }

  /** Resolves when `check()` holds, re-checked at every wake; rejects after `ms`. */
  until (what: string, check: () => boolean, ms = 5_000): Promise<void> {
    return waitFor(what, check, (wake) => {
      this.wakers.add(wake)
      return () => this.wakers.delete(wake)
    }, ms)
  }
}

/** An open SSE response read by eventsource-parser. */
export class SseClient extends Wakeable {
  status = 0
  headers: Record<string, string | string[] | undefined> = {}
  readonly events: EventSourceMessage[] = []
  /** `sse-hub:head` events (a fresh subscriber's starting id), kept apart: apps never listen for them. */
  readonly heads: EventSourceMessage[] = []
  /** The client's last event id, as a browser would hold it. */
  lastEventId: string | undefined
  readonly comments: string[] = []
  readonly retries: number[] = []
  /** Every byte received, decoded as UTF-8. */
  text = ''
  /** Chunks as they arrived from the socket. */
  chunks = 0
  /** How the body ended: 'end' (clean end), 'error' (reset or abort), or null while open. */
  ending: 'end' | 'error' | null = null
  private readonly controller = new AbortController()
  /** One connection per client, closed with it: no pooled sockets linger to hold up a server's close(). */
  private connection: Client | null = null

  /** Opens `url` with `headers` and resolves once the response headers are in. */
  static async open (url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<SseClient> {
    const client = new SseClient()
    const decoder = new TextDecoder()
    const parser = createParser({
      onEvent: (e) => {
        if (e.id !== undefined) client.lastEventId = e.id
        if (e.event === 'sse-hub:head') client.heads.push(e)
        else client.events.push(e)
      },
      onComment: (c) => { client.comments.push(c) },
      onRetry: (r) => { client.retries.push(r) }
    })
    const target = new URL(url)
    client.connection = new Client(target.origin)
    const res = await client.connection.request({
      path: target.pathname + target.search,
      method: method as 'GET',
      headers: { accept: 'text/event-stream', ...headers },
      signal: client.controller.signal
    })
    client.status = res.statusCode
    client.headers = res.headers
    res.body.on('data', (chunk: Buffer) => {
      client.chunks++
      const text = decoder.decode(chunk, { stream: true })
      client.text += text
      parser.feed(text)
      client.wake()
    })
    res.body.on('end', () => { client.ending = 'end'; client.wake() })
    res.body.on('error', () => { client.ending ??= 'error'; client.wake() })
    return client
  }

  /** Resolves once `n` events have arrived. */
  async waitEvents (n: number, ms = 5_000): Promise<EventSourceMessage[]> {
    await this.until(`${n} events (have ${this.events.length})`, () => this.events.length >= n, ms)
    return this.events
  }

  /** Resolves with how the body ended. */
  async waitEnd (ms = 5_000): Promise<'end' | 'error'> {
    await this.until('the end of the body', () => this.ending !== null, ms)
    return this.ending as 'end' | 'error'
  }

  /** Aborts the request (the client goes away) and closes its connection. */
  close (): void {
    this.controller.abort()
    this.connection?.destroy().catch(() => {})
  }
}

/** The `retry:` value of the frame the body ends with, or null. */
export function finalRetry (c: SseClient): number | null {
  const m = /retry: (\d+)\n\n$/.exec(c.text)
  return m === null ? null : Number(m[1])
}
