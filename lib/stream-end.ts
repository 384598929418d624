/**
 * What waits on a stream's end: `onClose` callbacks, the `signal`, the
 * `closed` promise, and a `reply.sse(source)` source, piped until it or the
 * stream ends (its iterator is returned if the stream ends first).
 * Cut out of stream.ts because none of it is on the write path: a stream
 * makes one `EndWaiters` only when something first asks to wait (most never
 * do), and `SseStream.end()` settles it exactly once.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { SseMessage } from './encoder.js'

const noop = (): void => {}

/** @internal The waiters of one stream; made on first use. */
export class EndWaiters {
  fns: Array<() => void> | null = null
  abort: AbortController | null = null
  promise: Promise<void> | null = null
  resolve: (() => void) | null = null
  /** The source being piped (`SseStream.pipeFrom`), returned when the stream ends first. */
  iterator: Iterator<unknown> | AsyncIterator<unknown> | null = null

  onClose (fn: () => void, ended: boolean, log: FastifyBaseLogger): void {
    if (ended) {
      queueMicrotask(() => runCloseFn(fn, log))
      return
    }
    (this.fns ??= []).push(fn)
  }

  signal (ended: boolean): AbortSignal {
    if (this.abort === null) {
      this.abort = new AbortController()
      if (ended) this.abort.abort()
    }
    return this.abort.signal
  }

  closed (ended: boolean): Promise<void> {
    if (this.promise === null) {
      this.promise = ended
        ? Promise.resolve()
        : new Promise<void>(resolve => { this.resolve = resolve })
    }
    return this.promise
  }

  /** A stream that never opened ended: signal and promise settle; callbacks are dropped unrun. */
  drop (): void {
    this.abort?.abort()
    this.resolve?.()
    this.fns = null
  }

  /** The stream ended: the source is returned, then signal, promise and callbacks, in that order. */
  settle (log: FastifyBaseLogger): void {
    const it = this.iterator
    this.iterator = null
    if (it !== null && typeof it.return === 'function') {
      try {
        const ret = it.return()
        if (ret !== null && typeof (ret as Promise<unknown>).then === 'function') (ret as Promise<unknown>).then(noop, noop)
      } catch {}
    }
    this.abort?.abort()
    this.resolve?.()
    const fns = this.fns
    this.fns = null
    if (fns !== null) for (const fn of fns) runCloseFn(fn, log)
  }
}

function runCloseFn (fn: () => void, log: FastifyBaseLogger): void {
  try {
    fn()
  } catch (err) {
    log.error({ err }, 'fastify-sse-hub: an onClose callback threw')
  }
}

/** What `pipe` uses of a stream (an `SseStream`; an interface so this file does not import stream.ts). */
interface PipeTarget {
  readonly ended: boolean
  readonly saturated: boolean
  send: (message: SseMessage | string) => boolean
  writable: () => Promise<void>
  end: (reason: 'end' | 'error') => void
}

/** `SseStream.pipeFrom`: sends every value of `source` as an event, paced by the socket, then ends the stream. */
export async function pipe (stream: PipeTarget, source: AsyncIterable<unknown> | Iterable<unknown>, waiters: EndWaiters, log: FastifyBaseLogger): Promise<void> {
  const it: Iterator<unknown> | AsyncIterator<unknown> = Symbol.asyncIterator in source
    ? (source as AsyncIterable<unknown>)[Symbol.asyncIterator]()
    : (source as Iterable<unknown>)[Symbol.iterator]()
  waiters.iterator = it
  try {
    while (!stream.ended) {
      const step = await it.next()
      if (step.done === true || stream.ended) break
      stream.send(step.value as SseMessage)
      if (stream.saturated) await stream.writable()
    }
    waiters.iterator = null
    stream.end('end')
  } catch (err) {
    waiters.iterator = null
    log.error({ err }, 'fastify-sse-hub: the event source of a stream failed; closing that stream')
    stream.end('error')
  }
}
