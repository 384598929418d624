/**
 * One SSE connection: headers, coalesced writes, heartbeat, backpressure and
 * close. Plus the `Pump` that all streams of one plugin instance share: the
 * single flush per event-loop turn and the single heartbeat timer.
 */
import { Socket } from 'node:net'
import type { ServerResponse } from 'node:http'
import type { Http2ServerResponse } from 'node:http2'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import { encode, commentText, packet, packetOf, type Packet, type SseMessage } from './encoder.js'
import type { NormalizedOptions } from './options.js'
import type { Subscribable } from './channel.js'

/** What ended a stream, as logged and counted. */
export type CloseReason = 'client' | 'server' | 'end' | 'error' | 'slow' | 'shutdown' | 'expired' | 'disconnect' | 'shed'

/** What a stream asks of the hub (kept as an interface: the hub imports this file, not the reverse). */
export interface HubLink {
  subscribeStream: (stream: SseStream, list: Subscribable[]) => Promise<void>
  unsubscribeStream: (stream: SseStream, list: Subscribable[]) => void
}

/** A source for `reply.sse(source)`: every value is sent as one event. */
export type SseSource = AsyncIterable<SseMessage | string> | Iterable<SseMessage | string>

type Response = ServerResponse | Http2ServerResponse

/** Pacing threshold for sources and replays: pull more only below this many unsent bytes. */
const PACE_BYTES = 64 * 1024
/** The heartbeat timer ticks this many times per `heartbeat` interval. */
const TICKS_PER_BEAT = 4
/** How often the shared lifetime sweep looks for streams past their deadline. */
const LIFETIME_SWEEP_MS = 250
/** Printable ASCII, at most 128 bytes: what a resumable id may be. */
const VALID_LAST_EVENT_ID = /^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$/

const HEARTBEAT = packet(Buffer.from(':\n\n'))
const kStream = Symbol('fastify-sse-hub.stream')

const noop = (): void => {}
/** Flattens a concatenated string in place (see `open()`). Kept in a sink so no compiler drops the conversion. */
let flattenSink = 0
function flatten (s: string): void {
  flattenSink = Number(s) || flattenSink
}
/** The tags of a stream given none: one shared array, not one per stream. */
const NO_TAGS: readonly string[] = Object.freeze([])

/**
 * The state all streams of one plugin instance share: the set of open
 * streams, the list of streams with frames to write this turn (flushed once,
 * in one `setImmediate`), the heartbeat clock, and the counters of `stats()`.
 */
export class Pump {
  readonly options: NormalizedOptions
  readonly streams = new Set<SseStream>()
  /** Heartbeat clock, advanced by the shared timer; streams note it on each write. */
  tick = 0
  /** Streams opened since start. */
  opened = 0
  /** Streams cut for holding more than `maxBufferedBytes` unsent. */
  slowClientCuts = 0
  /** Socket writes made (each connection at most one per event-loop turn). */
  writes = 0
  /** Heartbeat comments written. */
  heartbeats = 0
  closing = false
  /** Runs first in every flush: the hub fans this turn's topic batches out into streams. */
  beforeFlush: (() => void) | null = null
  /** Called when a stream ends, so the hub can drop its subscriptions. */
  onStreamClosed: ((stream: SseStream, reason: CloseReason) => void) | null = null
  /** The hub, for `stream.subscribe()` / `stream.unsubscribe()`. */
  link: HubLink | null = null

  /** Streams with a lifetime, and when each ends (ms since epoch): swept by one shared timer, not one timer each. */
  private readonly expiring = new Map<SseStream, number>()
  private lifetimeTimer: NodeJS.Timeout | null = null
  private dirty: SseStream[] = []
  private flushScheduled = false
  private flushing = false
  private flushAgain = false
  private beatTimer: NodeJS.Timeout | null = null

  constructor (options: NormalizedOptions) {
    this.options = options
  }

  /** Queues `stream` for the next flush. */
  schedule (stream: SseStream): void {
    this.dirty.push(stream)
    this.requestFlush()
  }

  /** Makes sure a flush runs this event-loop turn: one `setImmediate` serves every stream and topic. */
  requestFlush (): void {
    if (this.flushing) {
      this.flushAgain = true
    } else if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(this.flush)
    }
  }

  private readonly flush = (): void => {
    this.flushing = true
    try {
      if (this.beforeFlush !== null) this.beforeFlush()
      const list = this.dirty
      this.dirty = []
      for (let i = 0; i < list.length; i++) list[i].flush()
    } finally {
      this.flushing = false
      this.flushScheduled = false
      if (this.flushAgain || this.dirty.length > 0) {
        this.flushAgain = false
        this.requestFlush()
      }
    }
  }

  add (stream: SseStream): void {
    this.streams.add(stream)
    this.opened++
    if (this.beatTimer === null && this.options.heartbeat !== false) {
      this.beatTimer = setInterval(this.beat, Math.max(1, Math.floor(this.options.heartbeat / TICKS_PER_BEAT)))
      this.beatTimer.unref()
    }
  }

  remove (stream: SseStream): void {
    this.streams.delete(stream)
    if (this.streams.size === 0 && this.beatTimer !== null) {
      clearInterval(this.beatTimer)
      this.beatTimer = null
    }
    if (this.expiring.delete(stream) && this.expiring.size === 0 && this.lifetimeTimer !== null) {
      clearInterval(this.lifetimeTimer)
      this.lifetimeTimer = null
    }
  }

  /** Ends `stream` (with a jittered `retry:`) once `ms` have passed. */
  expireAfter (stream: SseStream, ms: number): void {
    this.expiring.set(stream, Date.now() + ms)
    if (this.lifetimeTimer === null) {
      this.lifetimeTimer = setInterval(this.sweep, LIFETIME_SWEEP_MS)
      this.lifetimeTimer.unref()
    }
  }

  private readonly sweep = (): void => {
    const now = Date.now()
    for (const [stream, deadline] of this.expiring) {
      if (deadline <= now) stream.expire(this.jitteredRetry(this.retryBase(), this.options.retryJitter))
    }
  }

  /** The `retry` option, or the common browser default when it is off. */
  retryBase (): number {
    return this.options.retry === false ? 3_000 : this.options.retry
  }

  /**
   * One tick of the shared heartbeat clock. A stream last written to at tick
   * k gets a comment at tick k + TICKS_PER_BEAT: silent for between 3/4 of
   * `heartbeat` and `heartbeat`, never longer, and never while it carries traffic.
   */
  private readonly beat = (): void => {
    const due = ++this.tick - TICKS_PER_BEAT
    for (const stream of this.streams) {
      if (stream.lastWriteTick <= due) stream.heartbeat()
    }
  }

  /** A `retry:` value with this instance's jitter added: `base + random(0..jitter)`. */
  jitteredRetry (base: number, jitter: number): number {
    return base + Math.floor(Math.random() * (jitter + 1))
  }

  /** Ends every open stream, each first told to come back after a jittered delay. */
  shutdown (): void {
    this.closing = true
    const base = this.retryBase()
    for (const stream of [...this.streams]) {
      stream.shutdown(this.jitteredRetry(base, this.options.shutdownJitter))
    }
  }
}

/** @internal The stream open on this response, if any. */
export function streamOf (res: unknown): SseStream | undefined {
  return (res as { [kStream]?: SseStream } | null | undefined)?.[kStream]
}

function onResponseClose (this: Response & { [kStream]?: SseStream }): void {
  this[kStream]?.gone()
}

/**
 * The handle `reply.sse()` returns: one open event stream.
 *
 * `send()` is synchronous: it checks and frames the event at once (throwing a
 * coded error for a bad one, before anything is written) and queues it; the
 * queue goes out in one write per event-loop turn. After the stream has
 * closed, `send()` drops the event and returns `false` (an invalid event still throws).
 *
 * The handle is thenable: awaiting it waits until the stream ends (the same as
 * `await stream.closed`). That is what lets both
 * `(req, reply) => reply.sse(...)` and `async (req, reply) => reply.sse(...)`
 * hand it back to Fastify without a warning.
 */
export class SseStream implements PromiseLike<void> {
  /** The `Last-Event-ID` the client sent (header, else the `lastEventId` query parameter), if it is a valid id. */
  readonly lastEventId: string | undefined
  /** The `Last-Event-ID` as received when it was present but malformed (truncated, never written raw). */
  readonly invalidLastEventId: string | undefined
  /** The Fastify request this stream answers. */
  readonly request: FastifyRequest

  /** @internal Heartbeat clock value at the last write. */
  lastWriteTick: number
  /** @internal The hub's per-stream state (its subscriptions), owned by the hub. */
  hubState: unknown = null
  /** The tags given at `reply.sse({ tags })`, for `fastify.sse.disconnect({ tag })`. */
  tags: readonly string[] = NO_TAGS
  /** @internal The key this stream counts under for `maxStreamsPerClient`. */
  clientKey: string | null = null
  /** @internal The hub emitted 'connect' for it, so it owes a 'disconnect'. */
  announced = false

  private readonly pump: Pump
  private readonly res: Response
  /** The reply: its logger, and its start time for the closing log line. */
  private readonly reply: FastifyReply
  /** The socket to write chunks straight to (HTTP/1.1 with chunked encoding), else null. */
  private socket: Socket | null = null
  private queue: Buffer[] = []
  private queueBytes = 0
  private dirty = false
  /** Headers are written: the queue may be flushed. */
  private opened = false
  /** Headers and the opening frame have gone out. */
  private started = false
  private isClosed = false
  private closeFns: Array<() => void> | null = null
  private abort: AbortController | null = null
  private closedPromise: Promise<void> | null = null
  private resolveClosed: (() => void) | null = null
  private drainWaiters: Array<() => void> | null = null
  private iterator: Iterator<unknown> | AsyncIterator<unknown> | null = null

  private get log (): FastifyBaseLogger {
    return this.reply.log
  }

  /** @internal Use `reply.sse()`. */
  constructor (pump: Pump, request: FastifyRequest, reply: FastifyReply) {
    this.pump = pump
    this.request = request
    this.res = reply.raw
    this.reply = reply
    this.lastWriteTick = pump.tick
    const id = readLastEventId(request)
    if (id === undefined || VALID_LAST_EVENT_ID.test(id)) {
      this.lastEventId = id
    } else {
      this.invalidLastEventId = id.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')
    }
  }

  /**
   * @internal Writes the headers and queues the opening frame. A stream that
   * is only being turned away (`counted` false) is not counted as opened and
   * gets no heartbeat.
   */
  open (reply: FastifyReply, counted = true): void {
    const res = this.res
    const headers = reply.getHeaders()
    delete headers['content-length']
    delete headers['content-encoding']
    delete headers['transfer-encoding']
    const http2 = this.request.raw.httpVersionMajor === 2
    if (http2) {
      delete headers.connection
      delete headers['keep-alive']
      delete headers['proxy-connection']
      delete headers.upgrade
    }
    headers['content-type'] = 'text/event-stream; charset=utf-8'
    headers['cache-control'] = 'no-cache, no-transform'
    headers['x-accel-buffering'] = 'no'
    res.writeHead(200, headers as Record<string, string>)
    // Node keeps the header block for the response's whole life as a rope of
    // ~25 concatenated pieces (~770 bytes per open stream). Converting it to a
    // number makes V8 flatten it in place into one string (~200 bytes): the
    // trick pino's flatstr uses. Harmless where it does not apply.
    const block = (res as { _header?: unknown })._header
    if (typeof block === 'string') flatten(block)

    if (this.request.raw.method === 'HEAD') {
      res.end()
      this.isClosed = true
      return
    }

    const socket = (res as ServerResponse).socket as (Socket & { _httpMessage?: unknown }) | null
    if (!http2 && socket instanceof Socket) {
      // Fastify's connectionTimeout must never cut a live stream; restored on close.
      socket.setTimeout(0)
      socket.setNoDelay(true)
      if ((res as ServerResponse).chunkedEncoding && socket._httpMessage === res) this.socket = socket
    }
    (res as Response & { [kStream]?: SseStream })[kStream] = this
    res.on('close', onResponseClose)
    if (counted) this.pump.add(this)
    this.opened = true

    // The opening frame goes first, before anything sent while the open was pending.
    const { retry, retryJitter } = this.pump.options
    this.queue.unshift(Buffer.from(retry === false ? ':\n\n' : `retry: ${this.pump.jitteredRetry(retry, retryJitter)}\n\n`))
    this.queueBytes += this.queue[0].length
    if (!this.dirty) {
      this.dirty = true
      this.pump.schedule(this)
    }
  }

  /**
   * @internal Ends a stream that never opened (its subscription was refused):
   * nothing is written; the reply answers instead.
   */
  abandon (): void {
    if (this.isClosed) return
    this.isClosed = true
    this.queue.length = 0
    this.abort?.abort()
    this.resolveClosed?.()
    this.closeFns = null
  }

  /** True once the stream has ended, for whatever reason. */
  get ended (): boolean {
    return this.isClosed
  }

  /**
   * Sends one event. Checked and framed now (a bad `id`, `event`, `retry` or
   * an event over `maxEventBytes` throws a coded error and nothing is written);
   * written with everything else queued this event-loop turn, in one write.
   * @returns `false` if the stream has closed (the event is dropped), else `true`.
   */
  send (message: SseMessage | string): boolean {
    const frame = encode(message, this.pump.options.maxEventBytes)
    if (this.isClosed) return false
    this.push(frame)
    return true
  }

  /**
   * Sends a comment line (`: text`), which clients ignore; no CR, LF or NUL.
   * @returns `false` if the stream has closed, else `true`.
   */
  comment (text = ''): boolean {
    const frame = Buffer.from(commentText(text) + '\n')
    if (this.isClosed) return false
    this.push(frame)
    return true
  }

  /**
   * Follows more channels or topics on this open stream. Each is authorised
   * like at open, and catches up from the stream's last id (events since then,
   * or a `reset` if history no longer has them). Rejects with
   * `FST_ERR_SSEHUB_FORBIDDEN` if refused; the stream stays open either way.
   */
  subscribe (...subscribables: Subscribable[]): Promise<void> {
    if (this.pump.link === null) return Promise.reject(new Error('fastify-sse-hub: no hub'))
    return this.pump.link.subscribeStream(this, subscribables)
  }

  /** Stops following these channels or topics on this stream. */
  unsubscribe (...subscribables: Subscribable[]): void {
    this.pump.link?.unsubscribeStream(this, subscribables)
  }

  /** Ends the stream cleanly after writing what is queued. Does nothing if already closed. */
  close (): void {
    this.end('server')
  }

  /**
   * Runs `fn` once when the stream ends, whoever ends it; at once (on the
   * next microtask) if it already has. Errors thrown by `fn` are logged.
   */
  onClose (fn: () => void): void {
    if (this.isClosed) {
      queueMicrotask(() => this.runCloseFn(fn))
      return
    }
    (this.closeFns ??= []).push(fn)
  }

  /** An AbortSignal that aborts when the stream ends: pass it to work that should stop then. */
  get signal (): AbortSignal {
    if (this.abort === null) {
      this.abort = new AbortController()
      if (this.isClosed) this.abort.abort()
    }
    return this.abort.signal
  }

  /** A promise that resolves (never rejects) when the stream has ended. */
  get closed (): Promise<void> {
    if (this.closedPromise === null) {
      this.closedPromise = this.isClosed
        ? Promise.resolve()
        : new Promise<void>(resolve => { this.resolveClosed = resolve })
    }
    return this.closedPromise
  }

  /** Awaiting the stream waits until it ends; see the class note. */
  then<T1 = void, T2 = never> (
    onfulfilled?: ((value: void) => T1 | PromiseLike<T1>) | null,
    onrejected?: ((reason: unknown) => T2 | PromiseLike<T2>) | null
  ): Promise<T1 | T2> {
    return this.closed.then(onfulfilled, onrejected)
  }

  /** @internal Queues bytes for this turn's write. */
  push (frame: Buffer): void {
    this.queue.push(frame)
    this.queueBytes += frame.length
    if (!this.dirty) {
      this.dirty = true
      this.pump.schedule(this)
    }
  }

  /** @internal Writes everything queued as one write. Called by the pump once per turn. */
  flush (): void {
    this.dirty = false
    const queue = this.queue
    if (this.isClosed || queue.length === 0 || !this.opened) return
    const bytes = this.queueBytes
    this.queueBytes = 0
    if (this.socket !== null && this.started) {
      const p = packetOf(queue, bytes)
      queue.length = 0
      this.socket.write(p.chunk)
    } else {
      const body = queue.length === 1 ? queue[0] : Buffer.concat(queue, bytes)
      queue.length = 0
      ;(this.res as ServerResponse).write(body)
      this.started = true
    }
    this.wrote()
  }

  /** @internal Cuts the stream as a slow client (the hub calls this when its backlog overflows). */
  cut (): void {
    if (this.isClosed) return
    this.pump.slowClientCuts++
    this.log.warn({ maxBufferedBytes: this.pump.options.maxBufferedBytes }, 'fastify-sse-hub: cutting a slow client (replay backlog)')
    this.end('slow')
  }

  /** @internal Writes a packet shared by many streams, straight away if nothing else is queued. */
  writeShared (p: Packet): void {
    if (this.isClosed) return
    if (this.dirty || this.socket === null || !this.started) {
      this.push(p.body)
      return
    }
    this.socket.write(p.chunk)
    this.wrote()
  }

  /** @internal A heartbeat from the shared clock; skipped while the socket still has unsent bytes. */
  heartbeat (): void {
    if (this.isClosed || this.dirty || this.buffered() > 0) return
    this.pump.heartbeats++
    if (this.socket !== null && this.started) {
      this.socket.write(HEARTBEAT.chunk)
      this.wrote()
    } else {
      this.push(HEARTBEAT.body)
    }
  }

  private wrote (): void {
    this.pump.writes++
    this.lastWriteTick = this.pump.tick
    const buffered = this.buffered()
    if (buffered > this.pump.options.maxBufferedBytes) {
      this.pump.slowClientCuts++
      this.log.warn({ buffered, maxBufferedBytes: this.pump.options.maxBufferedBytes }, 'fastify-sse-hub: cutting a slow client')
      this.end('slow')
      return
    }
    if (this.drainWaiters !== null) this.checkDrain(buffered)
  }

  /** Bytes handed to the connection and not yet to the kernel. */
  private buffered (): number {
    return (this.socket !== null ? this.socket.writableLength : this.res.writableLength) || 0
  }

  /**
   * @internal Resolves when the stream can take more without growing its
   * buffer: what is queued has been written and the socket is below the
   * pacing threshold (or the stream has ended). Used to pace sources and replays.
   */
  writable (): Promise<void> {
    if (this.isClosed || (!this.dirty && this.buffered() <= PACE_BYTES)) return Promise.resolve()
    return new Promise(resolve => {
      (this.drainWaiters ??= []).push(resolve)
    })
  }

  /** @internal True when a paced producer should wait for `writable()`. */
  get saturated (): boolean {
    return this.queueBytes + this.buffered() > PACE_BYTES
  }

  private checkDrain (buffered: number): void {
    if (buffered <= PACE_BYTES) {
      this.releaseDrainWaiters()
    } else if (this.onDrain === null) {
      // Made only when a producer actually waits: most streams never do.
      const onDrain = (): void => {
        this.onDrain = null
        if (!this.dirty) this.releaseDrainWaiters()
      }
      this.onDrain = onDrain
      ;((this.socket ?? this.res) as NodeJS.EventEmitter).once('drain', onDrain)
    }
  }

  /** The armed 'drain' listener, if a producer is waiting. */
  private onDrain: (() => void) | null = null

  private releaseDrainWaiters (): void {
    const waiters = this.drainWaiters
    if (waiters === null) return
    this.drainWaiters = null
    for (const resolve of waiters) resolve()
  }

  /** @internal Sends every value of `source` as an event, paced by the socket, then ends. */
  async pipeFrom (source: SseSource): Promise<void> {
    const it: Iterator<unknown> | AsyncIterator<unknown> = Symbol.asyncIterator in source
      ? (source as AsyncIterable<unknown>)[Symbol.asyncIterator]()
      : (source as Iterable<unknown>)[Symbol.iterator]()
    this.iterator = it
    try {
      while (!this.isClosed) {
        const step = await it.next()
        if (step.done === true || this.isClosed) break
        this.send(step.value as SseMessage)
        if (this.saturated) await this.writable()
      }
      this.iterator = null
      this.end('end')
    } catch (err) {
      this.iterator = null
      this.log.error({ err }, 'fastify-sse-hub: the event source of a stream failed; closing that stream')
      this.end('error')
    }
  }

  /**
   * @internal The route handler threw (or its promise rejected) after
   * `reply.sse()` opened this stream: Fastify cannot answer any more, so the
   * error is logged and this stream alone ends; the client reconnects.
   */
  handlerFailed (err: unknown): void {
    if (this.isClosed) return
    this.log.error({ err }, 'fastify-sse-hub: the route handler failed after reply.sse(); closing that stream')
    this.end('error')
  }

  /**
   * @internal Ends the stream at shutdown: a jittered `retry:`, then a clean
   * end. Node's server.close() then drops the connection even if the client
   * has stopped reading, so no stream holds fastify.close() up.
   */
  shutdown (retry: number, reason: CloseReason = 'shutdown'): void {
    if (this.isClosed) return
    this.push(Buffer.from(`retry: ${retry}\n\n`))
    this.end(reason)
  }

  /** @internal Its lifetime is over: a jittered `retry:` and a clean end; the client comes back through authentication. */
  expire (retry: number): void {
    this.shutdown(retry, 'expired')
  }

  /** @internal The response closed under us: the client went away (or a write failed). */
  gone (): void {
    this.release('client')
  }

  /** Ends the stream: a clean end of the body for every reason but a slow client, which is cut. */
  private end (reason: CloseReason): void {
    if (this.isClosed) return
    const res = this.res
    if (reason === 'slow') {
      this.queue.length = 0
      res.destroy()
    } else if (!res.destroyed && !res.writableEnded) {
      if (this.queue.length > 0) this.flush()
      if (!this.isClosed) res.end()
    }
    this.release(reason)
  }

  /** Releases everything the stream holds, exactly once. */
  private release (reason: CloseReason): void {
    if (this.isClosed) return
    this.isClosed = true
    this.queue.length = 0
    this.pump.remove(this)
    this.pump.onStreamClosed?.(this, reason)
    const res = this.res as Response & { [kStream]?: SseStream }
    res[kStream] = undefined
    res.removeListener('close', onResponseClose)
    if (this.onDrain !== null) {
      ;((this.socket ?? res) as NodeJS.EventEmitter).removeListener('drain', this.onDrain)
      this.onDrain = null
    }
    if (this.socket !== null && !this.socket.destroyed) {
      this.socket.setTimeout((this.request.server.server as { timeout?: number }).timeout ?? 0)
    }
    this.releaseDrainWaiters()
    const it = this.iterator
    this.iterator = null
    if (it !== null && typeof it.return === 'function') {
      try {
        const r = it.return()
        if (r !== null && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(noop, noop)
      } catch {}
    }
    this.abort?.abort()
    this.resolveClosed?.()
    const fns = this.closeFns
    this.closeFns = null
    if (fns !== null) for (const fn of fns) this.runCloseFn(fn)
    this.log.info({ responseTime: this.reply.elapsedTime, reason }, 'sse stream closed')
  }

  private runCloseFn (fn: () => void): void {
    try {
      fn()
    } catch (err) {
      this.log.error({ err }, 'fastify-sse-hub: an onClose callback threw')
    }
  }
}

/** The client's last event id: the `Last-Event-ID` header, else the `lastEventId` query parameter. */
function readLastEventId (request: FastifyRequest): string | undefined {
  const header = request.headers['last-event-id']
  if (typeof header === 'string' && header !== '') return header
  const query = request.query as Record<string, unknown> | null | undefined
  const value = query !== null && typeof query === 'object' ? query.lastEventId : undefined
  return typeof value === 'string' && value !== '' ? value : undefined
}
