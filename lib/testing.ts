/**
 * Test helpers for apps that use fastify-sse-hub: `fastify-sse-hub/testing`.
 *
 * `app.inject()` resolves when the response ends, and a subscribe stream
 * never ends by itself, so it never resolves. `injectSse()` injects with
 * light-my-request's `payloadAsStream`, resolves once the stream is open
 * (from then on, publishes reach it), and reads events as they come.
 *
 * ```ts
 * import { injectSse } from 'fastify-sse-hub/testing'
 *
 * const stream = await injectSse(app, '/ticker')
 * await ticker.publish('price', { symbol: 'ACME', price: 1 })
 * const [price] = await stream.take(1)  // { event: 'price', data: { symbol: 'ACME', price: 1 }, id: '...' }
 * stream.close()
 * ```
 *
 * Self-contained on purpose: no import of the plugin, Fastify only as types.
 */
import type { FastifyInstance, InjectOptions } from 'fastify'
import type { OutgoingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'

/** One event as a client receives it; `data` parsed as JSON where it is JSON. */
export interface TestEvent {
  /** The event name (`message` when the frame had none). */
  event: string
  /** The data, parsed as JSON if it parses, else the text as sent. */
  data: unknown
  /** The `id:` the frame carried, if any. */
  id?: string
  /** The `retry:` the frame carried, if any. */
  retry?: number
}

/** What `injectSse()` takes besides the app: a URL, or inject options (method GET by default). */
export type InjectSseOptions = string | (InjectOptions & {
  /** Sent as the `Last-Event-ID` header, to test a resume. */
  lastEventId?: string
  /** Keep the hub's `sse-hub:head` marker events (skipped by default: clients never listen for them). @default false */
  includeHead?: boolean
  /** The default bound, in ms, of every `take()`. @default 5000 */
  timeout?: number
})

/** An injected event stream. */
export interface InjectedSse {
  statusCode: number
  headers: OutgoingHttpHeaders
  /** Every event received so far, in order (whether taken or not). */
  readonly events: readonly TestEvent[]
  /**
   * Resolves with the next `count` events not yet taken; rejects if they do
   * not all arrive within `timeout` ms (default: the stream's), or if the
   * stream ends first (the error says what did arrive).
   */
  take: (count: number, timeout?: number) => Promise<TestEvent[]>
  /** Resolves with the whole body once the response ends: for a refusal (403 JSON) or a stream that ends by itself. */
  body: () => Promise<string>
  /** Closes the connection, as a client that goes away (the server sees reason `client`). */
  close: () => void
}

const HEAD_EVENT = 'sse-hub:head'

/** A Fastify instance, whatever its type provider or logger. */
export type Injectable = Pick<FastifyInstance, 'inject'>

/**
 * Injects a request to an SSE route without listening on a port. Resolves
 * when the response head arrives: for `reply.sse({ subscribe })` routes the
 * stream is then subscribed, so events published from then on reach it.
 * Close it (`stream.close()`) when done, or `app.close()` ends it.
 */
export async function injectSse (app: Injectable, options: InjectSseOptions): Promise<InjectedSse> {
  const { lastEventId, includeHead = false, timeout = 5_000, ...inject } = typeof options === 'string' ? { url: options } : options
  const headers: OutgoingHttpHeaders = { ...inject.headers }
  if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
  const res = await app.inject({ method: 'GET', ...inject, headers, payloadAsStream: true } as InjectOptions & { payloadAsStream: true })
  const stream = res.stream() as Readable

  const events: TestEvent[] = []
  let taken = 0
  let text = ''
  let ended = false
  // Pending take()s, re-checked on every chunk and at the end.
  const wakers = new Set<() => void>()
  const wake = (): void => { for (const w of [...wakers]) w() }
  const parser = frameParser(event => {
    if (!includeHead && event.event === HEAD_EVENT) return
    events.push(event)
  })
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    text += chunk
    parser(chunk)
    wake()
  })
  const end = (): void => { ended = true; wake() }
  stream.on('end', end)
  stream.on('close', end)
  stream.on('error', end)

  const take = (count: number, ms = timeout): Promise<TestEvent[]> => new Promise((resolve, reject) => {
    const check = (): void => {
      if (events.length - taken >= count) {
        done()
        resolve(events.slice(taken, taken += count))
      } else if (ended) {
        done()
        reject(new Error(`fastify-sse-hub/testing: the stream ended after ${events.length - taken} of the ${count} events asked for: ${JSON.stringify(events.slice(taken))}`))
      }
    }
    const timer = setTimeout(() => {
      done()
      reject(new Error(`fastify-sse-hub/testing: ${events.length - taken} of the ${count} events asked for arrived within ${ms} ms: ${JSON.stringify(events.slice(taken))}`))
    }, ms)
    const done = (): void => { clearTimeout(timer); wakers.delete(check) }
    wakers.add(check)
    check()
  })

  const body = (): Promise<string> => ended
    ? Promise.resolve(text)
    : new Promise(resolve => stream.once('close', () => resolve(text)).once('end', () => resolve(text)))

  return {
    statusCode: res.statusCode,
    headers: res.headers,
    events,
    take,
    body,
    close: () => {
      // What a client leaving looks like to the server: the response's
      // connection closes. Destroying only the payload stream would not
      // reach the server.
      const raw = (res as { raw?: { res?: { destroy?: () => void } } }).raw
      raw?.res?.destroy?.()
      stream.destroy()
    }
  }
}

/**
 * Injects, takes `count` events and closes: the one-call form of
 * `injectSse()` for a stream whose events come by themselves (an iterable
 * source, `since`, a snapshot, a resume).
 */
export async function collectEvents (app: Injectable, options: InjectSseOptions, count: number): Promise<TestEvent[]> {
  const stream = await injectSse(app, options)
  try {
    return await stream.take(count)
  } finally {
    stream.close()
  }
}

/** A small, spec-following SSE parser (WHATWG HTML "event stream interpretation"), fed text chunks. */
function frameParser (emit: (event: TestEvent) => void): (chunk: string) => void {
  let buffer = ''
  let data: string[] = []
  let name = ''
  let id: string | undefined
  let retry: number | undefined
  let pendingCR = false
  const line = (l: string): void => {
    if (l === '') {
      if (data.length > 0) {
        const raw = data.join('\n')
        let value: unknown = raw
        try { value = JSON.parse(raw) } catch {}
        const event: TestEvent = { event: name || 'message', data: value }
        if (id !== undefined) event.id = id
        if (retry !== undefined) event.retry = retry
        emit(event)
      }
      data = []
      name = ''
      id = undefined
      retry = undefined
      return
    }
    if (l[0] === ':') return
    const colon = l.indexOf(':')
    const field = colon === -1 ? l : l.slice(0, colon)
    let value = colon === -1 ? '' : l.slice(colon + 1)
    if (value[0] === ' ') value = value.slice(1)
    if (field === 'data') data.push(value)
    else if (field === 'event') name = value
    else if (field === 'id' && !value.includes('\0')) id = value
    else if (field === 'retry' && /^\d+$/.test(value)) retry = Number(value)
  }
  return chunk => {
    if (pendingCR && chunk[0] === '\n') chunk = chunk.slice(1)
    pendingCR = false
    buffer += chunk
    const parts = buffer.split(/\r\n|\r|\n/)
    buffer = parts.pop() as string
    // A CR at the very end may be the first half of a CRLF split across chunks.
    if (buffer === '' && chunk.endsWith('\r')) pendingCR = true
    for (const p of parts) line(p)
  }
}

export { backendContract, type ContractOptions, type ContractTest } from './contract.js'
