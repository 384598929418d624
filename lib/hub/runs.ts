/**
 * Producer runs (`fastify.sse.run()`): a generation of events (LLM tokens,
 * build logs, job progress) published to one topic by a producer that
 * outlives any client, always closed by ONE terminal `end` event.
 *
 * The backend's `RunStore` keeps the run's record and fence: a run's events
 * go out only while its record says it runs, and ending a run publishes its
 * `end` in the same atomic step, so nothing can follow the end. A run ends
 * when its producer returns (`complete`) or throws (`error`), when it is
 * cancelled from any process (`cancelled`), or when its process dies or
 * closes (`lost`: on Redis another instance notices the lost lease and
 * publishes it). Its values are published in order through a small window of
 * publishes in flight; a burst of small ones in one turn still goes out in
 * one write per follow (`until`), and at most two per other connection (a
 * lone event to a small topic is written at once, the rest batched).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Backend, HubEvent, RunStore } from '../backend.js'
import type { ChannelImpl, EventMap, EventOf } from '../channel.js'
import { oversize } from '../encoder.js'
import {
  FST_ERR_SSEHUB_EVENT_TOO_LARGE,
  FST_ERR_SSEHUB_PAYLOAD_INVALID,
  FST_ERR_SSEHUB_RUN_ACTIVE,
  FST_ERR_SSEHUB_RUNS_UNSUPPORTED,
  FST_ERR_SSEHUB_SOURCE_INVALID
} from '../errors.js'

/** Why a run ended, as its `end` event says: `{ reason }`. */
export type RunEndReason = 'complete' | 'cancelled' | 'error' | 'lost'

/** The data of the hub's `end` event, the last event of every run. */
export interface RunEnd {
  reason: RunEndReason
}

/** What `run.finished` resolves to. */
export interface RunOutcome {
  /** Why the run ended (what its `end` event says, when this process published it). */
  reason: RunEndReason
  /** The id of the last event of the run published from this process (its `end` when this process ended it), or null. */
  lastId: string | null
  /** What the producer threw, or why the run could not start or end; only with `reason: 'error'`. */
  error?: unknown
}

/** A producer: called once with a signal that aborts when the run is cancelled or lost; each value it yields is published in order. */
export type Producer<E extends EventMap = EventMap> = (signal: AbortSignal) => AsyncIterable<EventOf<E>> | Iterable<EventOf<E>>

/** A run started by `fastify.sse.run()`. */
export interface Run {
  /** The topic key it publishes to. */
  readonly topic: string
  /**
   * Resolves once the run holds its topic (its first value may then be
   * published); rejects with `FST_ERR_SSEHUB_RUN_ACTIVE` when a run on the
   * topic is still running. Await it before telling clients to follow, so
   * an early follower finds the run.
   */
  readonly started: Promise<void>
  /** Resolves (never rejects) once the run has ended and its `end` event is published. */
  readonly finished: Promise<RunOutcome>
  /** Aborts when the run is cancelled or lost (the one the producer is called with). */
  readonly signal: AbortSignal
  /** Cancels this run, like `fastify.sse.cancel(topic)`; resolves to whether it was still running. */
  cancel: () => Promise<boolean>
}

/** The topic a run publishes to, resolved against the hub. */
interface Target {
  readonly key: string
  readonly channel: ChannelImpl
}

/** Publishes a run keeps in flight at most: enough to hide a Redis round trip, few enough to stop soon after a failure. */
const WINDOW = 64

/** @internal What runs need from the rest of the hub. */
export interface RunsHost {
  readonly backend: Backend
  readonly maxEventBytes: number
  readonly log: FastifyBaseLogger
  /** Counts a published event (for stats), and waits for the flush when this turn has framed enough. */
  published: () => Promise<void> | undefined
}

const endData = (reason: RunEndReason): string => `{"reason":"${reason}"}`

/** @internal */
export class Runs {
  /** Runs whose producer runs in this process, by topic key. */
  private readonly local = new Map<string, LocalRun>()

  constructor (private readonly host: RunsHost) {
    const store = host.backend.runs
    if (store !== undefined) store.onEnded = (topic, token, reason) => this.local.get(topic)?.stop(token, reason)
  }

  /** The backend's run store, or a coded error naming the backend that has none. */
  private get store (): RunStore {
    const store = this.host.backend.runs
    if (store === undefined) throw new FST_ERR_SSEHUB_RUNS_UNSUPPORTED(this.host.backend.stats().kind)
    return store
  }

  start (target: Target, producer: Producer): Run {
    const store = this.store
    if (typeof producer !== 'function') throw new FST_ERR_SSEHUB_SOURCE_INVALID(`${typeof producer} as a run's producer (pass a function (signal) => async iterable)`)
    return new LocalRun(this, store, target, producer).handle
  }

  /** Ends the run on `target`, wherever it runs: its `end` says `cancelled`, and its producer's signal aborts. */
  async cancel (target: Target): Promise<boolean> {
    const ev = await this.store.end(target.key, null, 'end', endData('cancelled'), target.channel.name)
    // The run's own process stops its producer; in another process the store tells it (onEnded).
    this.local.get(target.key)?.stop(null, 'cancelled')
    return ev !== null
  }

  /** Ends every run of this process (the app is closing): followers get `end` with `lost`. */
  async close (): Promise<void> {
    await Promise.all([...this.local.values()].map(run => run.shutdown()))
  }

  /** @internal */
  track (key: string, run: LocalRun | null): void {
    if (run === null) this.local.delete(key)
    else this.local.set(key, run)
  }

  /** @internal */
  get hub (): RunsHost {
    return this.host
  }
}

class LocalRun {
  readonly handle: Run
  private readonly controller = new AbortController()
  private token: string | null = null
  /** Set once the run was ended by someone else than its producer (cancel, lost lease, shutdown). */
  private endedBy: RunEndReason | null = null
  private lastId: string | null = null
  private closing: Promise<void> | null = null

  constructor (
    private readonly runs: Runs,
    private readonly store: RunStore,
    private readonly target: Target,
    private readonly producer: Producer
  ) {
    let started!: () => void
    let refused!: (err: unknown) => void
    const startedP = new Promise<void>((resolve, reject) => { started = resolve; refused = reject })
    // Marked handled: a caller that never awaits `started` is not an unhandled rejection; one that does still gets it.
    startedP.catch(noop)
    const finished = this.drive(started, refused)
    this.handle = {
      topic: target.key,
      started: startedP,
      finished,
      signal: this.controller.signal,
      cancel: () => runs.cancel(target)
    }
  }

  /** Ended elsewhere (`token` null: by this process's cancel): stop the producer; the `end` is already published. */
  stop (token: string | null, reason: RunEndReason): void {
    if (this.token === null || (token !== null && token !== this.token) || this.endedBy !== null) return
    this.endedBy = reason
    this.controller.abort(reason)
  }

  /** The app closes: end the run as lost, now. */
  shutdown (): Promise<void> {
    if (this.closing === null) {
      const token = this.token
      this.closing = token === null || this.endedBy !== null
        ? Promise.resolve()
        : this.store.end(this.target.key, token, 'end', endData('lost'), this.target.channel.name).then(ev => {
          if (ev !== null) this.lastId = ev.id
        }, err => this.runs.hub.log.error({ err, topic: this.target.key }, 'fastify-sse-hub: could not end a run at shutdown'))
      this.stop(token, 'lost')
    }
    return this.closing
  }

  private async drive (started: () => void, refused: (err: unknown) => void): Promise<RunOutcome> {
    const { key, channel } = this.target
    let token: string | null
    try {
      token = await this.store.begin(key, channel.name, endData('lost'))
      if (token === null) throw new FST_ERR_SSEHUB_RUN_ACTIVE(key)
    } catch (error) {
      refused(error)
      return { reason: 'error', lastId: null, error }
    }
    this.token = token
    this.runs.track(key, this)
    started()
    let reason: RunEndReason = 'complete'
    let error: unknown
    try {
      await this.publishAll(token, channel)
    } catch (err) {
      reason = 'error'
      error = err
    }
    if (this.endedBy !== null) {
      // Cancelled or lost: that `end` is published already; what the producer did after is fenced off.
      await this.closing
      this.runs.track(key, null)
      return { reason: this.endedBy, lastId: this.lastId }
    }
    try {
      const ev = await this.store.end(key, token, 'end', endData(reason), channel.name)
      if (ev !== null) this.lastId = ev.id
      else reason = this.endedBy ?? 'lost'
    } catch (err) {
      this.runs.hub.log.error({ err, topic: key }, 'fastify-sse-hub: could not publish the end of a run; the backend ends it as lost')
      if (reason === 'complete') error = err
      reason = 'error'
    }
    this.runs.track(key, null)
    if (reason === 'error' && error !== undefined) {
      this.runs.hub.log.warn({ err: error, topic: key }, 'fastify-sse-hub: a run ended with an error; its followers got end { reason: "error" }')
      return { reason, lastId: this.lastId, error }
    }
    return { reason: this.endedBy ?? reason, lastId: this.lastId }
  }

  /** Publishes what the producer yields, in order, with at most WINDOW publishes in flight; stops at the first failure. */
  private async publishAll (token: string, channel: ChannelImpl): Promise<void> {
    const key = this.target.key
    const signal = this.controller.signal
    const hub = this.runs.hub
    const inflight: Array<Promise<HubEvent>> = []
    const settle = async (): Promise<void> => {
      const ev = await (inflight.shift() as Promise<HubEvent>)
      this.lastId = ev.id
    }
    try {
      const source = this.producer(signal)
      if (source === null || typeof source !== 'object' || !(Symbol.asyncIterator in source || Symbol.iterator in source)) {
        throw new FST_ERR_SSEHUB_SOURCE_INVALID(`${source === null ? 'null' : typeof source} from a run's producer (it must return an (async) iterable of { event, data })`)
      }
      for await (const item of source as AsyncIterable<EventOf<EventMap>>) {
        if (this.endedBy !== null) break
        if (item === null || typeof item !== 'object' || typeof item.event !== 'string') {
          throw new FST_ERR_SSEHUB_PAYLOAD_INVALID('(run)', channel.name, '/', 'a producer yields { event, data }')
        }
        const { json, value } = channel.serialize(item.event, item.data)
        const bytes = oversize(item.event, json, hub.maxEventBytes)
        if (bytes > 0) throw new FST_ERR_SSEHUB_EVENT_TOO_LARGE(bytes, hub.maxEventBytes)
        const p = this.store.publish(token, key, item.event, json, value, channel.name)
        p.catch(noop)
        inflight.push(p)
        if (inflight.length >= WINDOW) await settle()
        const flushed = hub.published()
        if (flushed !== undefined) await flushed
      }
      while (inflight.length > 0) await settle()
    } catch (err) {
      // Cancelled or lost meanwhile: a refused publish is the fence at work, not the producer's error.
      if (this.endedBy === null) throw err
    } finally {
      for (const p of inflight) p.catch(noop)
    }
  }
}

const noop = (): void => {}
