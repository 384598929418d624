/**
 * Admission: the body of `reply.sse()`. Checks the options, applies the caps
 * (`maxConnections`, `maxStreamsPerClient`), runs `authorize`, takes the
 * channels' snapshots, and opens the stream, or turns it away: shed streams
 * get 200, a jittered `retry:` and an end (a non-200 would make a native
 * EventSource give up for good); refused ones get 403.
 */
import type { FastifyReply } from 'fastify'
import type { Backend, HubEvent } from '../backend.js'
import type { ChannelImpl, Subscribable } from '../channel.js'
import {
  FST_ERR_SSEHUB_FORBIDDEN,
  FST_ERR_SSEHUB_REPLY_OPTION_INVALID,
  FST_ERR_SSEHUB_SOURCE_INVALID,
  FST_ERR_SSEHUB_STREAM_NOT_FOUND
} from '../errors.js'
import { parseId } from '../ids.js'
import type { Pump } from '../pump.js'
import { SseStream, type CloseReason, type SseSource } from '../stream.js'
import type { CatchUp, SnapshotOutcome } from './catch-up.js'
import { Member, type MemberHost } from './state.js'
import type { HubSettings, SseReplyOptions } from './stats.js'
import { readTags, type Tags } from './tags.js'
import type { LocalTopic, TopicRegistry } from './topics.js'

const MAX_SINCE = 10_000

/** How admission answers: open the stream, 403, or for a follow 404 (nothing there) or 204 (already ended for this client). */
type Verdict = boolean | 'gone' | 'ended'

/** A channel or topic to follow, resolved against this hub. */
export interface Target {
  channel: ChannelImpl
  key: string
  params: Readonly<Record<string, string>>
}

/** @internal The reply has been answered (or hijacked): nothing more may be written through Fastify. */
export function answered (reply: FastifyReply): boolean {
  return reply.sent || reply.raw.headersSent
}

/** What admission needs from the rest of the hub. */
export interface AdmissionHost extends MemberHost {
  readonly pump: Pump
  readonly backend: Backend
  readonly settings: HubSettings
  readonly topics: TopicRegistry
  readonly tags: Tags
  readonly catchUp: CatchUp
  resolve: (s: Subscribable) => Target
  /** Emits 'connect'. */
  connected: (stream: SseStream) => void
}

export class Admission {
  /** Streams turned away over `maxConnections`. */
  shed = 0
  /** Streams turned away over `maxStreamsPerClient`. */
  shedPerClient = 0
  /** Client key -> its open (or opening) streams, for maxStreamsPerClient. */
  private readonly perClient = new Map<string, number>()
  /** Streams admitted and still being authorised: they count against maxConnections. */
  private opening = 0

  constructor (private readonly hub: AdmissionHost) {}

  /** Whether some stream is being authorised now (a disconnect must then be remembered for it). */
  get pending (): boolean {
    return this.opening > 0
  }

  /** The body of `reply.sse()`. */
  reply (reply: FastifyReply, source: SseSource | SseReplyOptions | undefined): SseStream {
    let iterable: SseSource | null = null
    let options: SseReplyOptions = {}
    if (source !== undefined) {
      if (source === null || typeof source !== 'object') {
        throw new FST_ERR_SSEHUB_SOURCE_INVALID(source === null ? 'null' : typeof source)
      }
      if (Symbol.asyncIterator in source || Symbol.iterator in source) iterable = source as SseSource
      else options = source as SseReplyOptions
    }
    const { follow, tags, lifetime } = this.readOptions(options)
    const hub = this.hub
    const targets = follow.map(s => hub.resolve(s))
    const until = readUntil(options.until, targets)
    const since = options.since === 'start' ? -Math.max(0, ...targets.map(t => t.channel.history?.limit ?? hub.settings.history)) : (options.since ?? 0)
    const member = new Member(hub)
    member.until = until
    const stream = member.stream = new SseStream(hub.pump, member, reply, tags)
    const request = reply.request

    let clientKey: string | null = null
    if (hub.settings.maxStreamsPerClient !== Infinity) {
      clientKey = String(hub.settings.clientKey(request))
      if ((this.perClient.get(clientKey) ?? 0) >= hub.settings.maxStreamsPerClient) {
        this.shedPerClient++
        return this.turnAway(reply, stream)
      }
    }
    if (hub.pump.closing || hub.pump.streams.size + this.opening >= hub.settings.maxConnections) {
      if (!hub.pump.closing) this.shed++
      return this.turnAway(reply, stream)
    }
    if (clientKey !== null) {
      // Counted from now, so a burst waiting on async authorisation cannot overshoot.
      member.clientKey = clientKey
      this.perClient.set(clientKey, (this.perClient.get(clientKey) ?? 0) + 1)
    }

    const admitted = hub.tags.now
    const begin = (): void => {
      // A disconnect({ tag }) that ran while this stream was being
      // authorised must reach it too: turn it away instead of opening it.
      if (hub.tags.missed(tags, admitted)) {
        this.release(member)
        this.turnAway(reply, stream, 'disconnect')
        return
      }
      this.open(reply, member, targets, iterable, lifetime, since, options.since === 'start')
    }
    let decided: Verdict | Promise<Verdict>
    try {
      decided = authorize(reply, targets)
    } catch (err) {
      this.abandon(member)
      throw err
    }
    if (until !== null && decided !== false) {
      const asked = stream.lastEventId
      decided = Promise.resolve(decided).then(ok => ok === true ? this.followable(targets, asked, until) : false)
    }
    if (decided === true) {
      begin()
    } else if (decided === false) {
      this.refuse(reply, member, targets)
    } else {
      this.opening++
      let pending = true
      const settle = (): boolean => {
        if (!pending) return false
        pending = false
        reply.raw.removeListener('close', onGone)
        if (--this.opening === 0) hub.tags.forget()
        return true
      }
      // A client that leaves while authorisation is pending gives its slots back at once.
      const onGone = (): void => {
        if (settle()) this.abandon(member)
      }
      reply.raw.once('close', onGone)
      decided.then(ok => {
        if (!pending) return
        try {
          if (stream.ended) return
          if (ok === true) begin()
          else this.refuse(reply, member, targets, ok)
        } finally {
          // After begin(): it reads the disconnects recorded while this stream was pending.
          settle()
        }
      }, err => {
        if (!settle()) return
        this.abandon(member)
        if (!answered(reply)) reply.send(err)
      })
    }
    return stream
  }

  /** `stream.subscribe()`: authorise, attach, then catch up from the stream's last id. */
  async subscribe (member: Member, list: Subscribable[]): Promise<void> {
    const hub = this.hub
    const targets = list.map(s => hub.resolve(s))
    const stream = member.stream
    const verdict = await authorize({ request: stream.request } as FastifyReply, targets)
    if (verdict !== true) throw new FST_ERR_SSEHUB_FORBIDDEN(targets.map(t => t.key).join(', '))
    if (stream.ended) return
    const fresh = !member.subscribed
    const added = this.attach(member, targets)
    if (added.length === 0) return
    await hub.catchUp.start(member, added, fresh
      ? { kind: 'fresh', head: hub.backend.head(), since: 0, start: false, snapshots: [], live: false }
      : { kind: 'last' })
  }

  /** `stream.unsubscribe()`. */
  unsubscribe (member: Member, list: Subscribable[]): void {
    for (const s of list) {
      const topic = this.hub.topics.get(this.hub.resolve(s).key)
      if (topic !== undefined) this.hub.topics.unlink(member, topic)
    }
  }

  /** A stream ended: give back its client slot. */
  release (member: Member): void {
    const key = member.clientKey
    if (key === null) return
    member.clientKey = null
    const n = (this.perClient.get(key) ?? 1) - 1
    if (n <= 0) this.perClient.delete(key)
    else this.perClient.set(key, n)
  }

  /**
   * A follow may open unless every topic's last event in history is one it
   * ends on, at or before the client's id (`ended`: 204), or no topic has
   * anything in history nor a run running (`gone`: 404).
   */
  private async followable (targets: Target[], asked: string | undefined, until: ReadonlySet<string>): Promise<Verdict> {
    const backend = this.hub.backend
    const id = asked === undefined ? null : parseId(asked)
    const seen = id !== null && id.epoch === backend.epoch ? id.seq : -1
    const lasts = await Promise.all(targets.map(t => backend.latest(t.key, 2)))
    // Ended for this client once it has an event it ends on that nothing but the hub's `end` follows.
    const ended = (evs: HubEvent[]): boolean => evs.some((ev, i) => until.has(ev.event) && ev.seq <= seen && evs.slice(i + 1).every(e => e.event === 'end'))
    if (lasts.every(ended)) return 'ended'
    if (lasts.some(evs => evs.length > 0)) return true
    const states = await Promise.all(targets.map(t => backend.runs?.state(t.key) ?? null))
    return states.includes('running') ? true : 'gone'
  }

  /** Checks the options of `reply.sse(options)`, throwing a coded error for a bad one. */
  private readOptions (options: SseReplyOptions): { follow: Subscribable[], tags: string[], lifetime: number } {
    const follow = options.subscribe ?? []
    if (!Array.isArray(follow)) throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('subscribe', 'must be an array of channels and topics')
    const tags = readTags(options.tags)
    const max = this.hub.settings.maxLifetime
    let lifetime = max === 0 ? Infinity : max
    if (options.maxLifetime !== undefined) {
      const ms = options.maxLifetime
      if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > 2 ** 31 - 1) {
        throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('maxLifetime', `must be a whole number of ms from 1 to 2147483647, got ${String(ms)}`)
      }
      lifetime = Math.min(lifetime, ms)
    }
    const since = options.since === undefined ? 0 : options.since
    if (since !== 'start' && (typeof since !== 'number' || !Number.isInteger(since) || since > 0 || since < -MAX_SINCE)) {
      throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('since', `must be 'start' (all of history) or a whole number from -${MAX_SINCE} to -1 (the newest N events), got ${String(since)}`)
    }
    return { follow, tags, lifetime }
  }

  /** Over a limit: 200, a jittered retry, an end. A non-200 would make a native EventSource give up for good. */
  private turnAway (reply: FastifyReply, stream: SseStream, reason: CloseReason = 'shed'): SseStream {
    reply.hijack()
    stream.open(reply, false)
    stream.end(reason, this.hub.pump.reconnectDelay(this.hub.pump.options.shutdownJitter))
    return stream
  }

  private open (reply: FastifyReply, member: Member, targets: Target[], iterable: SseSource | null, lifetime: number, since: number, start: boolean): void {
    const hub = this.hub
    const stream = member.stream
    // Gone, or answered meanwhile (the handler threw while authorisation was pending: Fastify sent the error).
    if (reply.raw.destroyed || answered(reply)) {
      this.abandon(member)
      return
    }
    reply.hijack()
    stream.open(reply)
    if (stream.ended) {
      this.abandon(member)
      return
    }
    if (stream.tags.length > 0) hub.tags.add(stream)
    if (lifetime !== Infinity) hub.pump.expireAfter(stream, lifetime)
    member.announced = true
    hub.connected(stream)
    if (targets.length > 0) {
      const asked = stream.lastEventId ?? stream.invalidLastEventId ?? null
      if (asked !== null) {
        hub.catchUp.start(member, this.attach(member, targets), { kind: 'resume', asked }).catch(noop)
      } else {
        // A fresh subscriber starts at the head as of now: asked for before
        // anything else, so every later publish of this process comes after
        // it; snapshots are taken in the same turn, so they match that head.
        const head = hub.backend.head()
        // Every topic's subscription already in effect before that head read:
        // any event after the head arrives live (and is held until the head is
        // known), so there is no history to read in between.
        const live = targets.every(t => hub.topics.get(t.key)?.live === true)
        const snapshots = takeSnapshots(reply, targets)
        hub.catchUp.start(member, this.attach(member, targets), { kind: 'fresh', head, since, start, snapshots, live }).catch(noop)
      }
    }
    if (iterable !== null) void stream.pipeFrom(iterable)
  }

  /** Follows `targets` (those not followed yet); returns their topics. */
  private attach (member: Member, targets: Target[]): LocalTopic[] {
    const added: LocalTopic[] = []
    for (const target of targets) {
      const topic = this.hub.topics.ensure(target.key, target.channel)
      if (this.hub.topics.link(member, topic)) added.push(topic)
    }
    if (added.length > 0) {
      member.subscribed = true
      // Live events of the new topics are held from now until the catch-up releases them.
      member.holding ??= []
    }
    return added
  }

  /** A stream that never opened: give back what was counted for it. */
  private abandon (member: Member): void {
    member.stream.end('server')
    this.release(member)
  }

  private refuse (reply: FastifyReply, member: Member, targets: Target[], verdict: Verdict = false): void {
    this.abandon(member)
    if (answered(reply)) return
    const keys = targets.map(t => t.key).join(', ')
    if (verdict === 'ended') reply.code(204).send()
    else if (verdict === 'gone') reply.code(404).send(new FST_ERR_SSEHUB_STREAM_NOT_FOUND(keys))
    else reply.code(403).send(new FST_ERR_SSEHUB_FORBIDDEN(keys))
  }
}

const noop = (): void => {}

/** true / false when every check is synchronous, else a promise of the verdict. */
function authorize (reply: FastifyReply, targets: Target[]): boolean | Promise<boolean> {
  let pending: Array<Promise<boolean>> | null = null
  for (const target of targets) {
    const check = target.channel.authorize
    if (check === null) continue
    const verdict: unknown = check(reply.request, { ...target.params })
    if (verdict === true) continue
    // Only true admits: a forgotten return or a truthy non-boolean refuses.
    if (typeof (verdict as Promise<unknown> | null)?.then !== 'function') return false
    pending ??= []
    pending.push(verdict as Promise<boolean>)
  }
  if (pending === null) return true
  return Promise.all(pending).then(all => all.every(v => v === true))
}

/** The event names a follow ends on (each declared by a followed channel), plus the hub's `end`; null without `until`. */
function readUntil (until: string | string[] | undefined, targets: Target[]): ReadonlySet<string> | null {
  if (until === undefined) return null
  const names = typeof until === 'string' ? [until] : until
  if (!Array.isArray(names) || targets.length === 0) {
    throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('until', 'must be an event name or an array of them, with subscribe naming what to follow')
  }
  for (const name of names) {
    if (name !== 'end' && !targets.some(t => t.channel.compiled.has(name))) {
      throw new FST_ERR_SSEHUB_REPLY_OPTION_INVALID('until', `"${String(name)}" is not an event of the channels followed`)
    }
  }
  return new Set([...names, 'end'])
}

function takeSnapshots (reply: FastifyReply, targets: Target[]): Array<Promise<SnapshotOutcome>> {
  const out: Array<Promise<SnapshotOutcome>> = []
  for (const target of targets) {
    const fn = target.channel.snapshot
    if (fn === null) continue
    const channel = target.channel
    let result: Promise<unknown>
    try {
      result = Promise.resolve(fn(reply.request, { ...target.params }))
    } catch (error) {
      result = Promise.reject(error)
    }
    out.push(result.then(value => ({ ok: true as const, channel, value }), error => ({ ok: false as const, error })))
  }
  return out
}
