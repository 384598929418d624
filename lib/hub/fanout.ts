/**
 * Fan-out: what the backend delivers, to every local subscriber.
 *
 * The hot path. The first event of a turn to a topic of one subscriber
 * is written at once (see DIRECT_SUBSCRIBERS). Others are framed once
 * (encoder.eventFrame) and appended to their topic's batch for this turn.
 * At the flush, each topic's batch becomes ONE packet (one allocation) that
 * every subscriber's socket is handed as is; a subscriber of several topics gets this turn's events
 * merged by seq; a subscriber still catching up has them held.
 */
import type { HubEvent } from '../backend.js'
import { dropFrame, eventFrame, eventPacket, eventsPacket, type Packet } from '../encoder.js'
import { BACKLOG_FACTOR } from '../backlog.js'
import type { Pump } from '../pump.js'
import type { Member } from './state.js'
import type { Listeners } from './listeners.js'
import type { LocalTopic, TopicRegistry } from './topics.js'

/**
 * Bytes framed in one turn past which a publisher awaiting `publish()` waits
 * for the flush, so an awaited loop becomes many turns of about this size,
 * not one giant write per socket.
 */
export const TURN_BYTES = 1024 * 1024

/**
 * A topic with at most this many subscribers has the first event of a turn
 * written the moment it is delivered, not at the end of the turn: with one
 * socket there is nothing to share, so waiting only adds latency (and work:
 * a batch, a dirty list, a packet built at the flush). Measured (benchmark
 * README, "The direct write: one subscriber, not 16"): with 2, 4 or 10
 * subscribers, writing at the flush delivers 8-30% more than writing within
 * publish(), so only a lone subscriber gets the direct write.
 */
export const DIRECT_SUBSCRIBERS = 1

export class Fanout {
  /** Events handed to streams (events x subscribers). */
  deliveries = 0
  /** Bytes framed this turn (see TURN_BYTES). */
  turnBytes = 0
  private dirtyTopics: LocalTopic[] = []
  private multi: Member[] = []
  /** Batches whose frames are let go after this flush's multi-topic merges. */
  private readonly written: HubEvent[][] = []

  constructor (
    private readonly topics: TopicRegistry,
    private readonly listeners: Listeners,
    private readonly pump: Pump
  ) {}

  /** An event of a subscribed topic, in seq order: framed once, batched per topic. */
  deliver (ev: HubEvent, payload: unknown): void {
    const topic = this.topics.get(ev.topic)
    const listened = this.listeners.wants(ev, topic)
    if (listened) this.listeners.push(ev, payload)
    else if (topic === undefined) return
    if (topic !== undefined && topic.subs.size > 0) {
      // Only an event published in this process and handed over at once (it
      // carries its payload: the memory backend) is written directly. One a
      // backend relays (Redis) may arrive right after an outage, before the
      // hub is told to catch up (`interrupted`): batched, it waits for the
      // catch-up that starts first; written at once, it would move a stream
      // past the gap.
      if (topic.dirty || topic.subs.size > DIRECT_SUBSCRIBERS || payload === undefined || !this.direct(topic, ev)) {
        this.turnBytes += eventFrame(ev).length
        topic.batch.push(ev)
      }
      // Marked even after a direct write (with an empty batch), so a second
      // event to the topic this turn is batched: however many events a turn
      // brings, a connection gets at most the direct write and the flush's.
      if (!topic.dirty) {
        topic.dirty = true
        this.dirtyTopics.push(topic)
      }
    }
    this.pump.requestFlush()
  }

  /**
   * Writes `ev` to the topic's sockets now, if every subscriber would take
   * it on the flush's fast path (not catching up, following this topic
   * alone, not a follow, behind this seq). False: batch it.
   */
  private direct (topic: LocalTopic, ev: HubEvent): boolean {
    const seq = ev.seq
    for (const member of topic.subs) {
      // A follow (`until`) is written at the flush only: a run's burst of tokens is one write per turn to it.
      if (member.holding !== null || member.topics.length !== 1 || member.until !== null || seq <= member.lastSeq) return false
    }
    const packet = eventPacket(ev)
    const pump = this.pump
    pump.deferCuts = true
    try {
      for (const member of topic.subs) {
        member.lastSeq = seq
        member.stream.writeShared(packet)
      }
    } finally {
      pump.deferCuts = false
    }
    this.deliveries += topic.subs.size
    this.turnBytes += packet.chunk.length
    return true
  }

  /** A new epoch: batches framed in the old one must reach no one. */
  dropBatches (): void {
    for (const topic of this.dirtyTopics) topic.batch = []
  }

  /** Runs first in each flush: listeners, then each dirty topic's batch to its subscribers. */
  flush (): void {
    this.turnBytes = 0
    if (this.listeners.pending) this.listeners.run()
    const topics = this.dirtyTopics
    if (topics.length === 0) return
    this.dirtyTopics = []
    for (let t = 0; t < topics.length; t++) {
      const topic = topics[t]
      topic.dirty = false
      const batch = topic.batch
      // Nothing to send: a topic written at once this turn, or dropped.
      if (batch.length === 0) continue
      topic.batch = []
      const first = batch[0].seq
      const last = batch[batch.length - 1].seq
      let packet: Packet | null = null
      // Frames are let go once written (history must not pin them), except
      // those a catch-up holds, and those multi-topic merges still need.
      let keep = false
      let later = false
      // Event names of the batch, made only if some follow (`until`) asks:
      // a follow takes the shared packet unless the batch holds what ends it.
      let names: Set<string> | null = null
      for (const member of topic.subs) {
        if (member.holding !== null) {
          keep = true
          this.hold(member, batch)
        } else if (member.topics.length === 1 && (member.until === null || !endsIn(member.until, names ??= namesOf(batch)))) {
          if (first > member.lastSeq) {
            // The fast path: one shared packet, handed to the socket as is.
            packet ??= eventsPacket(batch)
            member.stream.writeShared(packet)
            member.lastSeq = last
          } else {
            pushAfter(member, batch)
          }
        } else {
          later = true
          if (member.pending === null) {
            member.pending = [batch]
            this.multi.push(member)
          } else {
            member.pending.push(batch)
          }
        }
      }
      this.deliveries += batch.length * topic.subs.size
      if (keep) continue
      if (later) this.written.push(batch)
      else dropFrames(batch)
    }
    if (this.multi.length > 0) {
      const multi = this.multi
      this.multi = []
      for (const member of multi) {
        const pending = member.pending as HubEvent[][]
        member.pending = null
        // Several topics in one turn: merge by seq so ids reach the client in order.
        pushAfter(member, pending.length === 1 ? pending[0] : pending.flat().sort(bySeq))
      }
    }
    if (this.written.length > 0) {
      for (const batch of this.written) dropFrames(batch)
      this.written.length = 0
    }
  }

  /**
   * Holds live events for a member still catching up. They are shared with
   * every other subscriber, so only the hard bound applies: a catch-up that
   * cannot keep up with a burst is cut, never left to grow.
   */
  private hold (member: Member, events: HubEvent[]): void {
    const holding = member.holding as HubEvent[]
    for (const ev of events) {
      holding.push(ev)
      member.holdingBytes += eventFrame(ev).length
    }
    if (member.holdingBytes > this.pump.options.maxBufferedBytes * BACKLOG_FACTOR) member.stream.cut()
  }
}

function dropFrames (batch: HubEvent[]): void {
  for (let i = 0; i < batch.length; i++) dropFrame(batch[i])
}

/** Queues the events of `events` above the member's last seq, in order. */
export function pushAfter (member: Member, events: HubEvent[]): void {
  for (let i = 0; i < events.length; i++) {
    const ev = events[i]
    if (ev.seq > member.lastSeq && member.send(ev)) return
  }
}

export function bySeq (a: HubEvent, b: HubEvent): number {
  return a.seq - b.seq
}

function namesOf (batch: HubEvent[]): Set<string> {
  const names = new Set<string>()
  for (let i = 0; i < batch.length; i++) names.add(batch[i].event)
  return names
}

/** Whether one of `names` is an event the follow ends on. */
function endsIn (until: ReadonlySet<string>, names: Set<string>): boolean {
  for (const name of names) if (until.has(name)) return true
  return false
}
