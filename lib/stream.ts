/**
 * One SSE connection: headers, coalesced writes, heartbeat, backpressure and
 * one way to end. The hub's per-stream state lives on the hub's side; the
 * stream reaches the hub only through the small `StreamOwner` it was given.
 */
import { Socket } from 'node:net'
import type { ServerResponse } from 'node:http'
import type { Http2ServerResponse } from 'node:http2'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import { encode, commentText, packet, packetOf, retryFrame, type Packet, type SseMessage } from './encoder.js'
import { PRINTABLE } from './ids.js'
import type { Pump } from './pump.js'
import type { Subscribable } from './channel.js'

/** What ended a stream, as logged and counted. */
export type CloseReason = 'client' | 'server' | 'end' | 'error' | 'slow' | 'shutdown' | 'expired' | 'disconnect' | 'shed'

/** @internal What a stream asks of the hub that opened it. */
export interface StreamOwner {
  subscribe: (stream: SseStream, list: Subscribable[]) => Promise<void>
  unsubscribe: (stream: SseStream, list: Subscribable[]) => void
  /** The stream ended (once), after it released its socket. */
  closed: (stream: SseStream, reason: CloseReason) => void
}

/** A source for `reply.sse(source)`: every value is sent as one event. */
export type SseSource = AsyncIterable<SseMessage | string> | Iterable<SseMessage | string>

type Response = ServerResponse | Http2ServerResponse

/** Pacing threshold for sources and replays: pull more only below this many unsent bytes. */
const PACE_BYTES = 64 * 1024
/**
 * Unsent bytes past which a stream is cut at once, as a multiple of
 * `maxBufferedBytes`, even while it drains: the bound on what one stream can
 * keep alive (bytes shared with other streams included).
 */
export const BACKLOG_FACTOR = 16

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

/** @internal The stream open on this response, if any. */
export function streamOf (res: unknown): SseStream | undefined {
  return (res as { [kStream]?: SseStream } | null | undefined)?.[kStream]
}

function onResponseClose (this: Response & { [kStream]?: SseStream }): void {
  this[kStream]?.end('client')
}

/**
 * Where the shared packets written to a stream end in its byte count, so the
 * bytes it holds of its own can be told from bytes it shares with other
 * streams (which cost memory once, however many streams hold them).
 */
class SharedWrites {
  readonly ends: number[] = []
  readonly sizes: number[] = []
  head = 0
  /** Shared bytes still unsent when `drained` bytes of the stream have gone out. */
  unsent (drained: number): number {
    while (this.head < this.ends.length && this.ends[this.head] <= drained) this.head++
    if (this.head > 64 && this.head * 2 > this.ends.length) {
      this.ends.splice(0, this.head)
      this.sizes.splice(0, this.head)
      this.head = 0
    }
    let bytes = 0
    for (let i = this.head; i < this.ends.length; i++) bytes += Math.min(this.sizes[i], this.ends[i] - drained)
    return bytes
  }
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
  /** The tags given at `reply.sse({ tags })`, for `fastify.sse.disconnect({ tag })`. */
  readonly tags: readonly string[]

  /** @internal Heartbeat clock value at the last write. */
  lastWriteTick: number

  private readonly pump: Pump
  private readonly owner: StreamOwner
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
  /** Bytes handed to the connection so far: with its unsent count, how much has drained. */
  private handed = 0
  /** Shared packets among them, once any was left unsent (see SharedWrites). */
  private shared: SharedWrites | null = null
  /** On the slow-client watch: the drained count last seen, and when it last moved. */
  private watchedDrained = -1
  private progressAt = 0
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
  constructor (pump: Pump, owner: StreamOwner, reply: FastifyReply, tags: readonly string[] = NO_TAGS) {
    this.pump = pump
    this.owner = owner
    this.request = reply.request
    this.res = reply.raw
    this.reply = reply
    this.tags = tags.length === 0 ? NO_TAGS : tags
    this.lastWriteTick = pump.tick
    const id = readLastEventId(reply.request)
    if (id === undefined || (typeof id === 'string' && PRINTABLE.test(id))) {
      this.lastEventId = id
    } else {
      // Malformed, or given twice (`?lastEventId=a&lastEventId=b`): never a silent fresh start.
      const text = typeof id === 'string' ? id : id.join(',')
      this.invalidLastEventId = text.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')
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
    this.queue.unshift(this.pump.options.retry === false ? Buffer.from(':\n\n') : retryFrame(this.pump.reconnectDelay()))
    this.queueBytes += this.queue[0].length
    if (!this.dirty) {
      this.dirty = true
      this.pump.schedule(this)
    }
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
    return this.owner.subscribe(this, subscribables)
  }

  /** Stops following these channels or topics on this stream. */
  unsubscribe (...subscribables: Subscribable[]): void {
    this.owner.unsubscribe(this, subscribables)
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
      this.wrote(p.chunk.length, false)
    } else {
      const body = queue.length === 1 ? queue[0] : Buffer.concat(queue, bytes)
      queue.length = 0
      ;(this.res as ServerResponse).write(body)
      this.started = true
      this.wrote(body.length, false)
    }
  }

  /** @internal Writes a packet shared by many streams, straight away if nothing else is queued. */
  writeShared (p: Packet): void {
    if (this.isClosed) return
    if (this.dirty || this.socket === null || !this.started) {
      this.push(p.body)
      return
    }
    this.socket.write(p.chunk)
    this.wrote(p.chunk.length, true)
  }

  /** @internal A heartbeat from the shared clock; skipped while the socket still has unsent bytes. */
  heartbeat (): void {
    if (this.isClosed || this.dirty || this.buffered() > 0) return
    this.pump.heartbeats++
    if (this.socket !== null && this.started) {
      this.socket.write(HEARTBEAT.chunk)
      this.wrote(HEARTBEAT.chunk.length, false)
    } else {
      this.push(HEARTBEAT.body)
    }
  }

  /**
   * After each write: the slow-client rules. Bytes of its own past
   * `maxBufferedBytes` cut the stream at once (nobody else holds them);
   * shared bytes only count towards the hard bound (`BACKLOG_FACTOR` times
   * it), so a burst that every subscriber shares never cuts a reader that
   * drains it. Past `maxBufferedBytes` in all, the stream goes on the watch,
   * which cuts it once it has made no progress for `slowClientTimeout`.
   */
  private wrote (bytes: number, shared: boolean): void {
    this.pump.writes++
    this.lastWriteTick = this.pump.tick
    this.handed += bytes
    const buffered = this.buffered()
    if (buffered === 0) {
      this.shared = null
    } else if (shared) {
      const s = this.shared ??= new SharedWrites()
      s.ends.push(this.handed)
      s.sizes.push(bytes)
    }
    const limit = this.pump.options.maxBufferedBytes
    if (buffered > limit) {
      const own = this.shared === null ? buffered : buffered - this.shared.unsent(this.handed - buffered)
      if (own > limit || buffered > limit * BACKLOG_FACTOR) {
        this.cut()
        return
      }
      if (this.watchedDrained < 0) {
        this.watchedDrained = this.handed - buffered
        this.progressAt = Date.now()
        this.pump.watch(this)
      }
    }
    if (this.drainWaiters !== null) this.checkDrain(buffered)
  }

  /** @internal The slow-client watch (see `Pumped.watch`). */
  watch (now: number): boolean {
    if (this.isClosed) return false
    const buffered = this.buffered()
    if (buffered <= this.pump.options.maxBufferedBytes) {
      this.watchedDrained = -1
      return false
    }
    const drained = this.handed - buffered
    if (drained > this.watchedDrained) {
      this.watchedDrained = drained
      this.progressAt = now
    } else if (now - this.progressAt >= this.pump.options.slowClientTimeout) {
      this.cut()
      return false
    }
    return true
  }

  /** @internal Cuts the stream as a slow client (also when a catch-up's backlog overflows); during a flush, right after it. */
  cut (): void {
    if (this.isClosed || this.pump.deferCut(this)) return
    this.pump.slowClientCuts++
    this.log.warn({ buffered: this.buffered(), maxBufferedBytes: this.pump.options.maxBufferedBytes }, 'fastify-sse-hub: cutting a slow client')
    this.end('slow')
  }

  /**
   * Bytes handed to the connection and not yet to the kernel. Node counts a
   * write as pending until all of it is written, so one large write would
   * look stuck however fast the client reads; libuv's queue size says how
   * much of the write in flight is still unsent.
   */
  private buffered (): number {
    const socket = this.socket
    if (socket === null) return this.res.writableLength || 0
    const pending = socket.writableLength
    const handle = (socket as Socket & { _handle?: { writeQueueSize?: unknown } | null })._handle
    const state = (socket as Socket & { _writableState?: { writing?: boolean, writelen?: number } })._writableState
    const queued = handle?.writeQueueSize
    if (typeof queued !== 'number' || state?.writing !== true || typeof state.writelen !== 'number') return pending
    return pending - state.writelen + queued
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

  /** @internal `Pumped.expire`: its lifetime is over. */
  expire (retry: number): void {
    this.end('expired', retry)
  }

  /** @internal `Pumped.shutdown`: the server is closing. */
  shutdown (retry: number): void {
    this.end('shutdown', retry)
  }

  /**
   * @internal The one way a stream ends, for every reason. With `retry`, the
   * client is first told when to come back. A slow client is cut (its
   * socket destroyed); anything else ends the body cleanly after what is
   * queued. A stream that never opened (turned away before its headers)
   * writes nothing: the reply answers instead. Everything the stream holds
   * is released exactly once, and its owner told.
   */
  end (reason: CloseReason, retry?: number): void {
    if (this.isClosed) return
    const res = this.res
    if (!this.opened) {
      this.isClosed = true
      this.queue.length = 0
      this.abort?.abort()
      this.resolveClosed?.()
      this.closeFns = null
      return
    }
    if (reason === 'slow') {
      this.queue.length = 0
      res.destroy()
    } else if (!res.destroyed && !res.writableEnded) {
      if (retry !== undefined) this.push(retryFrame(retry))
      if (this.queue.length > 0) this.flush()
      if (!this.isClosed) res.end()
    }
    if (this.isClosed) return
    this.isClosed = true
    this.queue.length = 0
    this.pump.remove(this)
    this.owner.closed(this, reason)
    const r = res as Response & { [kStream]?: SseStream }
    r[kStream] = undefined
    r.removeListener('close', onResponseClose)
    if (this.onDrain !== null) {
      ;((this.socket ?? r) as NodeJS.EventEmitter).removeListener('drain', this.onDrain)
      this.onDrain = null
    }
    if (this.socket !== null && !this.socket.destroyed) {
      this.socket.setTimeout((this.request.server.server as { timeout?: number }).timeout ?? 0)
    }
    this.shared = null
    this.releaseDrainWaiters()
    const it = this.iterator
    this.iterator = null
    if (it !== null && typeof it.return === 'function') {
      try {
        const ret = it.return()
        if (ret !== null && typeof (ret as Promise<unknown>).then === 'function') (ret as Promise<unknown>).then(noop, noop)
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

/**
 * The client's last event id: the `Last-Event-ID` header, else the
 * `lastEventId` query parameter. A parameter given more than once comes back
 * as its list, which the caller treats as malformed.
 */
function readLastEventId (request: FastifyRequest): string | string[] | undefined {
  const header = request.headers['last-event-id']
  if (typeof header === 'string' && header !== '') return header
  const query = request.query as Record<string, unknown> | null | undefined
  const value = query !== null && typeof query === 'object' ? query.lastEventId : undefined
  if (Array.isArray(value)) return value.map(String)
  return typeof value === 'string' && value !== '' ? value : undefined
}
