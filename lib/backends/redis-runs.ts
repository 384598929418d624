/**
 * Runs on Redis (`fastify.sse.run()` across instances): the run record and
 * its fence live in Redis, so a cancel on any instance ends the run, and an
 * instance that dies holding a run is noticed by the others.
 *
 * The owner renews a lease every `runLease / 3`; every instance sweeps
 * expired leases every `runLease / 2` and ends each such run as `lost` (its
 * `end` published by whichever instance claims it first, fenced by the run's
 * token, so a stale owner that comes back can publish nothing more). A
 * follower therefore gets the terminal event at most about `1.5 x runLease`
 * after the owner died. The owner learns that its run was ended elsewhere
 * (cancel, lost lease) from a notice on `{P}:runs`, or at its next renewal or
 * publish, and its producer's signal aborts. Scripts: redis-scripts.ts.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import type { HubEvent, RunStore } from '../backend.js'
import { FST_ERR_SSEHUB_RUN_ENDED } from '../errors.js'
import type { Scripts } from './redis-scripts.js'

/** What the runs need of the Redis backend. */
export interface RedisRunsHost {
  /** The command connection, once started. */
  readonly cmd: (Redis & Scripts) | null
  readonly log: FastifyBaseLogger | null
  /** `{P}:run:`, the head of every run record's key. */
  readonly runKeyHead: string
  /** `{P}:leases`. */
  readonly leasesKey: string
  /** `{P}:runs`, the pub/sub channel of notices to owners. */
  readonly noticeChannel: string
  /** How long a run's record is kept after its end, in ms (its channel's history ttl; 0: no expiry). */
  keepMs: (channel: string) => number
  /**
   * Runs `script` the way a publish runs (epoch checks and switches,
   * timeout, durability); resolves to the event, or null when the script
   * found the run not running under its token (fenced).
   */
  publishRun: (script: 'ssePublishRun' | 'sseEndRun', keys: string[], args: Array<string | number>,
    topic: string, event: string, data: string, channel: string) => Promise<HubEvent | null>
}

/** Runs whose leases one sweep claims at most. */
const SWEEP_BATCH = 64

export class RedisRuns implements RunStore {
  onEnded: RunStore['onEnded'] = null
  /** Runs of this process: topic -> token. */
  private readonly owned = new Map<string, string>()
  private renewTimer: NodeJS.Timeout | null = null
  private sweepTimer: NodeJS.Timeout | null = null

  /** @internal */
  constructor (private readonly host: RedisRunsHost, readonly leaseMs: number) {}

  private get cmd (): Redis & Scripts {
    return this.host.cmd as Redis & Scripts
  }

  private runKey (topic: string): string {
    return this.host.runKeyHead + topic
  }

  /** @internal Starts renewing and sweeping (the backend has started). */
  start (): void {
    this.renewTimer = setInterval(() => { this.renew().catch(noop) }, Math.max(1, Math.floor(this.leaseMs / 3)))
    this.sweepTimer = setInterval(() => { this.sweep().catch(noop) }, Math.max(1, Math.floor(this.leaseMs / 2)))
    this.renewTimer.unref()
    this.sweepTimer.unref()
  }

  /** @internal */
  stop (): void {
    if (this.renewTimer !== null) clearInterval(this.renewTimer)
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer)
  }

  async begin (topic: string, channel: string, lost: string): Promise<string | null> {
    const token = randomUUID()
    const claimed = await this.cmd.sseBeginRun(this.runKey(topic), this.host.leasesKey, topic, token, channel, lost, this.leaseMs)
    if (Number(claimed) !== 1) return null
    this.owned.set(topic, token)
    return token
  }

  async publish (token: string, topic: string, event: string, data: string, _payload: unknown, channel: string): Promise<HubEvent> {
    const ev = await this.host.publishRun('ssePublishRun', [this.runKey(topic)], [token], topic, event, data, channel)
    if (ev === null) {
      // Fenced: ended elsewhere, possibly before its notice reached this process.
      const by = await this.cmd.hget(this.runKey(topic), 'by').catch(() => null)
      this.ended(topic, token, by === 'lost' ? 'lost' : 'cancelled')
      throw new FST_ERR_SSEHUB_RUN_ENDED(topic)
    }
    return ev
  }

  async end (topic: string, token: string | null, event: string, data: string, channel: string): Promise<HubEvent | null> {
    // An owner ending its own run tells no one; a cancel (or a sweep) tells the owner.
    const notice = token === null ? 'cancelled' : ''
    const ev = await this.end3(topic, token ?? '', notice, event, data, channel)
    if (token !== null && this.owned.get(topic) === token) this.owned.delete(topic)
    return ev
  }

  private end3 (topic: string, token: string, notice: string, event: string, data: string, channel: string): Promise<HubEvent | null> {
    return this.host.publishRun('sseEndRun', [this.runKey(topic), this.host.leasesKey, this.host.noticeChannel],
      [token, notice, this.host.keepMs(channel)], topic, event, data, channel)
  }

  async first (topic: string): Promise<number> {
    return Number(await this.cmd.hget(this.runKey(topic), 'first') ?? 0)
  }

  async state (topic: string): Promise<'running' | 'ended' | null> {
    const state = await this.cmd.hget(this.runKey(topic), 'state')
    return state === 'running' ? 'running' : state === 'ended' ? 'ended' : null
  }

  /** @internal A notice on `{P}:runs`: `topic LF token LF reason`. */
  notice (message: string): void {
    const [topic, token, reason] = message.split('\n')
    if (reason === 'cancelled' || reason === 'lost') this.ended(topic, token, reason)
  }

  private ended (topic: string, token: string, reason: 'cancelled' | 'lost'): void {
    if (this.owned.get(topic) !== token) return
    this.owned.delete(topic)
    this.onEnded?.(topic, token, reason)
  }

  /** Extends the leases of this process's runs; a run found ended elsewhere is stopped. */
  private async renew (): Promise<void> {
    if (this.owned.size === 0 || this.host.cmd?.status !== 'ready') return
    const entries = [...this.owned]
    const keys = [this.host.leasesKey, ...entries.map(([topic]) => this.runKey(topic))]
    const args: Array<string | number> = [this.leaseMs]
    for (const [topic, token] of entries) args.push(topic, token)
    const renewed = await this.cmd.sseRenewRuns(keys.length, ...keys, ...args)
    entries.forEach(([topic, token], i) => {
      if (Number(renewed[i]) !== 1) this.ended(topic, token, 'lost')
    })
  }

  /** Ends the runs whose owner stopped renewing (died, or lost Redis for longer than the lease). */
  private async sweep (): Promise<void> {
    if (this.host.cmd?.status !== 'ready') return
    const claimed = await this.cmd.sseSweepRuns(this.host.leasesKey, this.host.runKeyHead, this.leaseMs, SWEEP_BATCH)
    for (const [topic, token, channel, lost] of claimed) {
      try {
        const ev = await this.end3(topic, token, 'lost', 'end', lost, channel)
        if (ev !== null) this.host.log?.warn({ topic, id: ev.id }, 'fastify-sse-hub: a run\'s instance stopped renewing its lease; its run ended as lost')
      } catch (err) {
        // Claimed but not ended: its lease comes round again after the claim time.
        this.host.log?.warn({ err, topic }, 'fastify-sse-hub: could not end a run whose lease expired; retrying')
      }
    }
  }
}

const noop = (): void => {}
