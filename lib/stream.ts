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
import { lastEventIdOf, writeHead } from './response.js'
import { Backlog, PACE_BYTES, unsent } from './backlog.js'
import type { Pump } from './pump.js'
import type { Subscribable } from './channel.js'
import { EndWaiters, pipe } from './stream-end.js'

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

const HEARTBEAT = packet(Buffer.from(':\n\n'))
const kStream = Symbol('fastify-sse-hub.stream')

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
  /** What it holds unsent and who waits on it, once it ever held something (see backlog.ts). */
  private backlog: Backlog | null = null
  /** What waits on the end (stream-end.ts), made on first use. */
  private waiters: EndWaiters | null = null

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
    const { valid, invalid } = lastEventIdOf(reply.request)
    this.lastEventId = valid
    this.invalidLastEventId = invalid
  }

  /**
   * @internal Writes the headers and queues the opening frame. A stream that
   * is only being turned away (`counted` false) is not counted as opened and
   * gets no heartbeat.
   */
  open (reply: FastifyReply, counted = true): void {
    const res = this.res
    const http2 = writeHead(reply, res, this.request.raw.httpVersionMajor === 2)

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
    (this.waiters ??= new EndWaiters()).onClose(fn, this.isClosed, this.log)
  }

  /** An AbortSignal that aborts when the stream ends: pass it to work that should stop then. */
  get signal (): AbortSignal {
    return (this.waiters ??= new EndWaiters()).signal(this.isClosed)
  }

  /** A promise that resolves (never rejects) when the stream has ended. */
  get closed (): Promise<void> {
    return (this.waiters ??= new EndWaiters()).closed(this.isClosed)
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

  /** After each write: the slow-client rules and waiting producers (backlog.ts). */
  private wrote (bytes: number, shared: boolean): void {
    this.pump.writes++
    this.lastWriteTick = this.pump.tick
    this.handed += bytes
    const buffered = this.buffered()
    const limit = this.pump.options.maxBufferedBytes
    // The hot path: nothing held before, and nothing to record now.
    if (this.backlog === null && (buffered === 0 || (shared && buffered <= limit))) return
    const verdict = this.backlogOf().wrote(bytes, shared, this.handed, buffered, limit)
    if (verdict === 'cut') this.cut()
    else if (verdict === 'watch') this.pump.watch(this)
  }

  private backlogOf (): Backlog {
    if (this.backlog === null) this.backlog = new Backlog(this.socket ?? this.res, () => this.dirty)
    return this.backlog
  }

  /** @internal The slow-client watch (see `Pumped.watch`). */
  watch (now: number): boolean {
    if (this.isClosed || this.backlog === null) return false
    const { maxBufferedBytes, slowClientTimeout } = this.pump.options
    const verdict = this.backlog.watch(now, this.handed, this.buffered(), maxBufferedBytes, slowClientTimeout)
    if (verdict === 'cut') this.cut()
    return verdict === 'watch'
  }

  /** @internal Cuts the stream as a slow client (also when a catch-up's backlog overflows); during a flush, right after it. */
  cut (): void {
    if (this.isClosed || this.pump.deferCut(this)) return
    this.pump.slowClientCuts++
    this.log.warn({ buffered: this.buffered(), maxBufferedBytes: this.pump.options.maxBufferedBytes }, 'fastify-sse-hub: cutting a slow client')
    this.end('slow')
  }

  private buffered (): number {
    return unsent(this.socket ?? this.res)
  }

  /**
   * @internal Resolves when the stream can take more without growing its
   * buffer: what is queued has been written and the socket is below the
   * pacing threshold (or the stream has ended). Used to pace sources and replays.
   */
  writable (): Promise<void> {
    if (this.isClosed || (!this.dirty && this.buffered() <= PACE_BYTES)) return Promise.resolve()
    return this.backlogOf().wait()
  }

  /** @internal True when a paced producer should wait for `writable()`. */
  get saturated (): boolean {
    return this.queueBytes + this.buffered() > PACE_BYTES
  }

  /** @internal Sends every value of `source` as an event, paced by the socket, then ends. */
  pipeFrom (source: SseSource): Promise<void> {
    this.waiters ??= new EndWaiters()
    return pipe(this, source, this.waiters, this.log)
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
      this.waiters?.drop()
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
    if (this.socket !== null && !this.socket.destroyed) {
      this.socket.setTimeout((this.request.server.server as { timeout?: number }).timeout ?? 0)
    }
    this.backlog?.release()
    this.waiters?.settle(this.log)
    this.log.info({ responseTime: this.reply.elapsedTime, reason }, 'sse stream closed')
  }
}
