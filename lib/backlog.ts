/**
 * What one connection holds unsent, and what follows from it: the
 * slow-client rules and the pacing of producers. Made for a stream only when
 * it first holds something after a write, or a producer waits on it: an idle
 * stream carries none of this.
 */
import type { Socket } from 'node:net'

/** Pacing threshold for sources and replays: pull more only below this many unsent bytes. */
export const PACE_BYTES = 64 * 1024
/**
 * Unsent bytes past which a stream is cut at once, as a multiple of
 * `maxBufferedBytes`, even while it drains: the bound on what one stream can
 * keep alive (bytes shared with other streams included).
 */
export const BACKLOG_FACTOR = 16

/** What the stream is written through: its socket (HTTP/1.1 chunks), else the response. */
export type Sink = NodeJS.EventEmitter & { writableLength: number }

/**
 * Bytes handed to `sink` and not yet to the kernel. Node counts a write as
 * pending until all of it is written, so one large write would look stuck
 * however fast the client reads; libuv's queue size says how much of the
 * write in flight is still unsent.
 */
export function unsent (sink: Sink): number {
  const pending = sink.writableLength
  // The common case, checked first: the kernel took everything (no write in flight).
  if (!(pending > 0)) return 0
  const state = (sink as Socket & { _writableState?: { writing?: boolean, writelen?: number } })._writableState
  if (state?.writing !== true || typeof state.writelen !== 'number') return pending
  // Only now the native accessor (a call into C++): a write is in flight.
  const queued = (sink as Socket & { _handle?: { writeQueueSize?: unknown } | null })._handle?.writeQueueSize
  return typeof queued === 'number' ? pending - state.writelen + queued : pending
}

/** What a write or a check decided: nothing to do, watch the stream, or cut it. */
export type Verdict = 'ok' | 'watch' | 'cut'

export class Backlog {
  /**
   * Where the stream's own writes (not shared with other streams) end in its
   * byte count, and their sizes, while any may be unsent: see `own()`. The
   * hot path (shared packets) records nothing.
   */
  private ends: number[] = []
  private sizes: number[] = []
  private head = 0
  /** On the slow-client watch: the drained count last seen, and when it last moved. */
  private watchedDrained = -1
  private progressAt = 0
  private waiters: Array<() => void> | null = null
  /** The armed 'drain' listener, if a producer is waiting. */
  private onDrain: (() => void) | null = null

  /** `dirty` says the stream has frames queued for this turn: a producer waits until they are written too. */
  constructor (private readonly sink: Sink, private readonly dirty: () => boolean) {}

  /**
   * After a write of `bytes` (shared with other streams or not), when `handed`
   * bytes have been handed in all and `buffered` are unsent. Bytes of its own
   * past `limit` cut at once (nobody else holds them); shared bytes count only
   * towards the hard bound (`BACKLOG_FACTOR` x `limit`), so a burst that every
   * subscriber shares never cuts a reader that drains it. Past `limit` in
   * all, the stream is to be watched.
   */
  wrote (bytes: number, shared: boolean, handed: number, buffered: number, limit: number): Verdict {
    if (buffered === 0) {
      if (this.ends.length > 0) this.head = this.ends.length = this.sizes.length = 0
    } else if (!shared) {
      this.ends.push(handed)
      this.sizes.push(bytes)
    }
    let verdict: Verdict = 'ok'
    if (buffered > limit) {
      if (this.own(handed, buffered) > limit || buffered > limit * BACKLOG_FACTOR) return 'cut'
      if (this.watchedDrained < 0) {
        this.watchedDrained = handed - buffered
        this.progressAt = Date.now()
        verdict = 'watch'
      }
    }
    if (this.waiters !== null) this.checkDrain(buffered)
    return verdict
  }

  /** Unsent bytes of its own: what is left unsent of its own writes (the unsent bytes are the newest handed). */
  private own (handed: number, buffered: number): number {
    const drained = handed - buffered
    while (this.head < this.ends.length && this.ends[this.head] <= drained) this.head++
    if (this.head > 64 && this.head * 2 > this.ends.length) {
      this.ends.splice(0, this.head)
      this.sizes.splice(0, this.head)
      this.head = 0
    }
    let own = 0
    for (let i = this.head; i < this.ends.length; i++) own += Math.min(this.sizes[i], this.ends[i] - drained)
    return own
  }

  /**
   * The watch's check: 'ok' once no more than `limit` is unsent (it leaves
   * the watch), 'cut' after `timeout` ms without a byte drained, else 'watch'.
   */
  watch (now: number, handed: number, buffered: number, limit: number, timeout: number): Verdict {
    if (buffered <= limit) {
      this.watchedDrained = -1
      return 'ok'
    }
    const drained = handed - buffered
    if (drained > this.watchedDrained) {
      this.watchedDrained = drained
      this.progressAt = now
    } else if (now - this.progressAt >= timeout) {
      return 'cut'
    }
    return 'watch'
  }

  /** Resolves when the stream has drained to `PACE_BYTES` (or `release()` runs). */
  wait (): Promise<void> {
    return new Promise(resolve => { (this.waiters ??= []).push(resolve) })
  }

  private checkDrain (buffered: number): void {
    if (buffered <= PACE_BYTES) {
      this.release()
    } else if (this.onDrain === null) {
      // Made only when a producer actually waits: most streams never do.
      const onDrain = (): void => {
        this.onDrain = null
        if (!this.dirty()) this.release()
      }
      this.onDrain = onDrain
      this.sink.once('drain', onDrain)
    }
  }

  /** Lets every waiting producer go, and drops the drain listener. */
  release (): void {
    if (this.onDrain !== null) {
      this.sink.removeListener('drain', this.onDrain)
      this.onDrain = null
    }
    const waiters = this.waiters
    if (waiters === null) return
    this.waiters = null
    for (const resolve of waiters) resolve()
  }
}
