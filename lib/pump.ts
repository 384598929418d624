/**
 * The clocks all streams of one plugin instance share: the single flush per
 * event-loop turn, the heartbeat, the lifetime sweep and the slow-client
 * watch. The pump drives streams through the small `Pumped` interface and
 * knows nothing else of them; streams and the hub depend on it, never the
 * reverse.
 */
import type { NormalizedOptions } from './options.js'

/** What the pump asks of a stream. */
export interface Pumped {
  /** Heartbeat clock value at the stream's last write. */
  readonly lastWriteTick: number
  /** Writes everything queued this turn as one write. */
  flush: () => void
  /** A heartbeat is due (the stream skips it if it still has unsent bytes). */
  heartbeat: () => void
  /** Its lifetime is over: end with a jittered `retry:`. */
  expire: (retry: number) => void
  /** Ends at shutdown with a jittered `retry:`. */
  shutdown: (retry: number) => void
  /**
   * A slow-client check, on the watch's clock: returns false once the stream
   * holds no more than `maxBufferedBytes` unsent (it leaves the watch), and
   * cuts itself when it has made no progress for `slowClientTimeout`.
   */
  watch: (now: number) => boolean
  /** Cuts it as a slow client. */
  cut: () => void
}

/** Something that runs first in every flush (the hub's fan-out). */
export interface FlushSource {
  flush: () => void
}

/** The heartbeat timer ticks this many times per `heartbeat` interval. */
const TICKS_PER_BEAT = 4
/** How often the shared lifetime sweep looks for streams past their deadline. */
const LIFETIME_SWEEP_MS = 250
/** How often the slow-client watch checks streams holding more than `maxBufferedBytes`. */
const WATCH_MS = 100

/**
 * The state all streams of one plugin instance share: the set of open
 * streams, the list of streams with frames to write this turn (flushed once,
 * in one `setImmediate`), the heartbeat clock, and the counters of `stats()`.
 */
export class Pump {
  readonly options: NormalizedOptions
  readonly streams = new Set<Pumped>()
  /** Heartbeat clock, advanced by the shared timer; streams note it on each write. */
  tick = 0
  /** Streams opened since start. */
  opened = 0
  /** Streams cut as slow clients. */
  slowClientCuts = 0
  /** Socket writes made (each connection at most one per event-loop turn). */
  writes = 0
  /** Heartbeat comments written. */
  heartbeats = 0
  closing = false
  /**
   * Set while the hub writes outside a flush (a lone event written at once):
   * a stream found over its limit then is cut after the next flush, as one
   * found during a flush is, never in the middle of a publish.
   */
  deferCuts = false
  /** Runs first in every flush: the hub fans this turn's topic batches out into streams. */
  source: FlushSource | null = null

  /** Streams with a lifetime, and when each ends (ms since epoch): swept by one shared timer, not one timer each. */
  private readonly expiring = new Map<Pumped, number>()
  private lifetimeTimer: NodeJS.Timeout | null = null
  /** Streams holding more than `maxBufferedBytes` unsent, watched for progress. */
  private readonly watched = new Set<Pumped>()
  private watchTimer: NodeJS.Timeout | null = null
  private dirty: Pumped[] = []
  private flushScheduled = false
  private flushing = false
  private flushAgain = false
  private beatTimer: NodeJS.Timeout | null = null
  /** Streams to cut as slow clients once the flush that found them is over. */
  private cuts: Pumped[] | null = null
  /** Resolves at the end of the next flush, shared by every waiter; made only when someone waits. */
  private nextFlush: { promise: Promise<void>, resolve: () => void } | null = null

  constructor (options: NormalizedOptions) {
    this.options = options
  }

  /** Queues `stream` for the next flush. */
  schedule (stream: Pumped): void {
    this.dirty.push(stream)
    // During a flush, its end sees the list is not empty and asks for the next one.
    if (!this.flushing) this.requestFlush()
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

  /** Resolves once the next flush has run (a publisher yielding so one loop does not become one giant turn). */
  flushed (): Promise<void> {
    this.requestFlush()
    if (this.nextFlush === null) {
      let resolve!: () => void
      const promise = new Promise<void>(_resolve => { resolve = _resolve })
      this.nextFlush = { promise, resolve }
    }
    return this.nextFlush.promise
  }

  /**
   * During a flush, a stream found over its limit is cut right after it, not
   * in the middle: a cut ends the stream, which unsubscribes topics, and the
   * fan-out must not see its topics change under it. False outside a flush
   * (and outside `deferCuts`).
   */
  deferCut (stream: Pumped): boolean {
    if (!this.flushing && !this.deferCuts) return false
    ;(this.cuts ??= []).push(stream)
    if (!this.flushing) this.requestFlush()
    return true
  }

  private readonly flush = (): void => {
    this.flushing = true
    try {
      if (this.source !== null) this.source.flush()
      const list = this.dirty
      this.dirty = []
      for (let i = 0; i < list.length; i++) list[i].flush()
    } finally {
      this.flushing = false
      this.flushScheduled = false
      const cuts = this.cuts
      if (cuts !== null) {
        this.cuts = null
        for (const stream of cuts) stream.cut()
      }
      if (this.flushAgain || this.dirty.length > 0) {
        this.flushAgain = false
        this.requestFlush()
      }
      const next = this.nextFlush
      if (next !== null) {
        this.nextFlush = null
        next.resolve()
      }
    }
  }

  add (stream: Pumped): void {
    this.streams.add(stream)
    this.opened++
    if (this.beatTimer === null && this.options.heartbeat !== false) {
      this.beatTimer = setInterval(this.beat, Math.max(1, Math.floor(this.options.heartbeat / TICKS_PER_BEAT)))
      this.beatTimer.unref()
    }
  }

  remove (stream: Pumped): void {
    this.streams.delete(stream)
    if (this.streams.size === 0 && this.beatTimer !== null) {
      clearInterval(this.beatTimer)
      this.beatTimer = null
    }
    if (this.expiring.delete(stream) && this.expiring.size === 0 && this.lifetimeTimer !== null) {
      clearInterval(this.lifetimeTimer)
      this.lifetimeTimer = null
    }
    if (this.watched.delete(stream) && this.watched.size === 0) this.stopWatch()
  }

  /** Ends `stream` (with a jittered `retry:`) once `ms` have passed. */
  expireAfter (stream: Pumped, ms: number): void {
    this.expiring.set(stream, Date.now() + ms)
    if (this.lifetimeTimer === null) {
      this.lifetimeTimer = setInterval(this.sweep, LIFETIME_SWEEP_MS)
      this.lifetimeTimer.unref()
    }
  }

  private readonly sweep = (): void => {
    const now = Date.now()
    for (const [stream, deadline] of this.expiring) {
      if (deadline <= now) stream.expire(this.reconnectDelay())
    }
  }

  /** Puts `stream` on the slow-client watch (it holds more than `maxBufferedBytes` unsent). */
  watch (stream: Pumped): void {
    this.watched.add(stream)
    if (this.watchTimer === null) {
      this.watchTimer = setInterval(this.check, WATCH_MS)
      this.watchTimer.unref()
    }
  }

  private readonly check = (): void => {
    const now = Date.now()
    for (const stream of this.watched) {
      if (!stream.watch(now)) this.watched.delete(stream)
    }
    if (this.watched.size === 0) this.stopWatch()
  }

  private stopWatch (): void {
    if (this.watchTimer !== null) {
      clearInterval(this.watchTimer)
      this.watchTimer = null
    }
  }

  /** The `retry` option, or the common browser default when it is off. */
  retryBase (): number {
    return this.options.retry === false ? 3_000 : this.options.retry
  }

  /** When a stream ended by the server should come back: `retry` plus up to `retryJitter` (or `shutdownJitter`) ms. */
  reconnectDelay (jitter = this.options.retryJitter): number {
    return this.retryBase() + Math.floor(Math.random() * (jitter + 1))
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

  /** Ends every open stream, each first told to come back after a jittered delay. */
  shutdown (): void {
    this.closing = true
    for (const stream of [...this.streams]) stream.shutdown(this.reconnectDelay(this.options.shutdownJitter))
  }
}
