/**
 * The hub's state, per stream and per topic, which refer to each other: a
 * `Member` is what the hub knows of one open stream (what it follows, how
 * far it has got, what it counts against), and also the stream's owner (the
 * small interface a stream reaches the hub through), so the stream carries
 * none of the hub's state. A `LocalTopic` is a topic with subscribers or
 * listeners in this process.
 */
import type { HubEvent } from '../backend.js'
import { eventFrame } from '../encoder.js'
import type { ChannelImpl, EventMeta, Subscribable } from '../channel.js'
import type { CloseReason, SseStream, StreamOwner } from '../stream.js'

export type Listener = (data: unknown, meta: EventMeta) => void

/** A topic with subscribers or listeners in this process. */
export class LocalTopic {
  readonly subs = new Set<Member>()
  listeners: Map<string, Set<Listener>> | null = null
  /** Events of this turn, framed, waiting for the flush. */
  batch: HubEvent[] = []
  dirty = false
  /** Resolves once the backend delivers this topic's events: history may be read only after. */
  ready: Promise<void> = Promise.resolve()
  /** The backend's subscription is in effect (set when `ready` resolves without error). */
  live = false
  constructor (readonly key: string, readonly channel: ChannelImpl) {}

  get idle (): boolean {
    return this.subs.size === 0 && this.listeners === null
  }
}

/** What a member asks of the hub. */
export interface MemberHost {
  subscribe: (member: Member, list: Subscribable[]) => Promise<void>
  unsubscribe: (member: Member, list: Subscribable[]) => void
  closed: (member: Member, reason: CloseReason) => void
}

/** The hub's state of one open stream. */
export class Member implements StreamOwner {
  /** Set right after the stream is made (the stream is made with its member as owner). */
  stream!: SseStream
  /** The topics it follows: an array (of one, mostly), lighter than a Set per stream. */
  readonly topics: LocalTopic[] = []
  /** The highest seq this stream has been given: nothing at or below it is sent again. */
  lastSeq = 0
  /** While catching up: live events held back until history has been written. */
  holding: HubEvent[] | null = null
  holdingBytes = 0
  /** Batches of several topics this turn, merged by seq at the flush. */
  pending: HubEvent[][] | null = null
  /** Catch-ups run one at a time, in order: the last one's promise while it runs, else null. */
  chain: Promise<void> | null = null
  /** The key this stream counts under for `maxStreamsPerClient`, while counted. */
  clientKey: string | null = null
  /** The hub emitted 'connect' for it, so it owes a 'disconnect'. */
  announced = false
  /** It has followed some topic: a later `stream.subscribe()` catches up from its last seq, not as a fresh subscriber. */
  subscribed = false
  /** A follow (`reply.sse({ until })`): the event names after which the stream ends (`end` always among them). */
  until: ReadonlySet<string> | null = null

  constructor (private readonly host: MemberHost) {}

  subscribe (_stream: SseStream, list: Subscribable[]): Promise<void> {
    return this.host.subscribe(this, list)
  }

  unsubscribe (_stream: SseStream, list: Subscribable[]): void {
    this.host.unsubscribe(this, list)
  }

  closed (_stream: SseStream, reason: CloseReason): void {
    this.host.closed(this, reason)
  }

  /** Writes `ev` (above its last seq); true when it was the event a follow ends on, and the stream has ended after it. */
  send (ev: HubEvent): boolean {
    this.stream.push(eventFrame(ev))
    this.lastSeq = ev.seq
    if (this.until === null || !this.until.has(ev.event)) return false
    this.stream.end('end')
    return true
  }
}
