/**
 * The hub's state of one open stream: what it follows, how far it has got,
 * and what it counts against. It is also the stream's owner (the small
 * interface a stream reaches the hub through), so the stream carries none of
 * the hub's state.
 */
import type { HubEvent } from '../backend.js'
import type { Subscribable } from '../channel.js'
import type { CloseReason, SseStream, StreamOwner } from '../stream.js'
import type { LocalTopic } from './topics.js'

/** What a member asks of the hub. */
export interface MemberHost {
  subscribe: (member: Member, list: Subscribable[]) => Promise<void>
  unsubscribe: (member: Member, list: Subscribable[]) => void
  closed: (member: Member, reason: CloseReason) => void
}

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
}
