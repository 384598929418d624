/**
 * The memory backend's history as columns (memory-history.ts holds the
 * policy): per topic, a ring of seqs, event names and payloads; per pool,
 * a FIFO of (topic, seq, time) in publish order. No object is kept per
 * event, so nothing a publish leaves in history is an object for the
 * collector to trace or promote.
 */
import type { HubEvent } from '../backend.js'

/**
 * Memory counted per kept event besides its payload: its slots in its
 * topic's columns and in its pool's FIFO (3 + 3, with up to 2x spare
 * capacity), and the payload string's header. No object is kept per event:
 * the event name is the publisher's own string, the id is rebuilt from the
 * seq on read. Measured on Node 20 at about 75 bytes (50 of slots, the
 * string's header); the payload is counted at 2 bytes a character (what a
 * string with a character past Latin-1 takes), so the bound holds from
 * above: an ASCII payload of 100 characters is counted 304 bytes and costs
 * about 175 (benchmark/README.md, "History memory").
 */
export const ENTRY_OVERHEAD = 96

/** The bytes counted for one kept event (see ENTRY_OVERHEAD). */
export function entrySize (name: string, data: string): number {
  return 2 * (data.length + name.length) + ENTRY_OVERHEAD
}
/**
 * The kept events of one topic, oldest first, as columns on a ring whose
 * capacity is a power of two: seqs (small integers or doubles, unboxed),
 * event names, payloads. Appending an event allocates nothing once the
 * ring has grown to the topic's rate, and nothing it keeps is an object of
 * its own for the collector to trace or promote.
 */
export class TopicLog {
  private seqs: number[] = [0, 0]
  private names: string[] = ['', '']
  private datas: string[] = ['', '']
  private head = 0
  length = 0
  /** The highest seq dropped from this topic's history; 0 if none. */
  trimmedUpTo = 0
  subscribed = false
  /** Set when the topic is freed: its entries still in a FIFO are dead. */
  freed = false
  constructor (readonly key: string, readonly channel: string, readonly pool: Pool) {}

  push (seq: number, name: string, data: string): void {
    let cap = this.seqs.length
    if (this.length === cap) {
      const seqs = new Array<number>(cap * 2).fill(0)
      const names = new Array<string>(cap * 2).fill('')
      const datas = new Array<string>(cap * 2).fill('')
      for (let i = 0; i < cap; i++) {
        const j = (this.head + i) & (cap - 1)
        seqs[i] = this.seqs[j]
        names[i] = this.names[j]
        datas[i] = this.datas[j]
      }
      this.seqs = seqs
      this.names = names
      this.datas = datas
      this.head = 0
      cap *= 2
    }
    const i = (this.head + this.length) & (cap - 1)
    this.seqs[i] = seq
    this.names[i] = name
    this.datas[i] = data
    this.length++
  }

  seqAt (i: number): number {
    return this.seqs[(this.head + i) & (this.seqs.length - 1)]
  }

  /** The bytes counted for the event at `i`. */
  sizeAt (i: number): number {
    const j = (this.head + i) & (this.seqs.length - 1)
    return entrySize(this.names[j], this.datas[j])
  }

  /** Whether this topic still holds `seq` (not dropped, not freed): a FIFO entry for it is live. */
  holds (seq: number): boolean {
    return !this.freed && seq > this.trimmedUpTo
  }

  /** The event at `i`, made for a reader (ids from `idOf`). */
  eventAt (i: number, idOf: (seq: number) => string): HubEvent {
    const j = (this.head + i) & (this.seqs.length - 1)
    const seq = this.seqs[j]
    return { id: idOf(seq), seq, topic: this.key, channel: this.channel, event: this.names[j], data: this.datas[j] }
  }

  /** Drops the oldest event; the caller has read what it needs of it. */
  shift (): void {
    const i = this.head
    this.names[i] = ''
    this.datas[i] = ''
    this.head = (i + 1) & (this.seqs.length - 1)
    this.length--
  }
}

/**
 * A pool's kept events in publish order (topic, seq, when), as columns, for
 * age and byte eviction. An entry is dead once its topic has dropped its seq
 * (`trimmedUpTo`) or been freed: dead entries are skipped lazily, and the
 * columns compacted once they outnumber the live ones.
 */
export class Fifo {
  private topics: Array<TopicLog | null> = new Array(8).fill(null)
  private seqs: number[] = new Array(8).fill(0)
  private ats: number[] = new Array(8).fill(0)
  private head = 0
  length = 0
  /** Dead entries still in the columns. */
  dead = 0

  push (topic: TopicLog, seq: number, at: number): void {
    let cap = this.seqs.length
    if (this.length === cap) {
      this.regrow(cap * 2, false)
      cap *= 2
    }
    const i = (this.head + this.length) & (cap - 1)
    this.topics[i] = topic
    this.seqs[i] = seq
    this.ats[i] = at
    this.length++
  }

  /** Drops the dead entries at the front: the oldest left, if any, is live. */
  skipDead (): void {
    while (this.length > 0 && !(this.topics[this.head] as TopicLog).holds(this.seqs[this.head])) {
      this.shift()
      this.dead--
    }
  }

  frontTopic (): TopicLog {
    return this.topics[this.head] as TopicLog
  }

  frontAt (): number {
    return this.ats[this.head]
  }

  shift (): void {
    this.topics[this.head] = null
    this.head = (this.head + 1) & (this.seqs.length - 1)
    this.length--
  }

  /** Counts one more dead entry; compacts once they outnumber the live ones. */
  noteDead (): void {
    if (++this.dead > 1024 && this.dead > this.length / 2) {
      let cap = this.seqs.length
      while (cap > 8 && cap / 2 >= (this.length - this.dead) * 2) cap /= 2
      this.regrow(cap, true)
      this.dead = 0
    }
  }

  private regrow (cap: number, liveOnly: boolean): void {
    const old = this.seqs.length
    const topics = new Array<TopicLog | null>(cap).fill(null)
    const seqs = new Array<number>(cap).fill(0)
    const ats = new Array<number>(cap).fill(0)
    let n = 0
    for (let k = 0; k < this.length; k++) {
      const j = (this.head + k) & (old - 1)
      const topic = this.topics[j] as TopicLog
      if (liveOnly && !topic.holds(this.seqs[j])) continue
      topics[n] = topic
      seqs[n] = this.seqs[j]
      ats[n] = this.ats[j]
      n++
    }
    this.topics = topics
    this.seqs = seqs
    this.ats = ats
    this.head = 0
    this.length = n
  }
}

/** A set of topics under one set of bounds: the plugin's, or one channel's own. */
export class Pool {
  /** Every kept entry in publish order, for age and byte eviction. */
  readonly fifo = new Fifo()
  bytes = 0
  /**
   * A channel's own pool: its ttl counts from a topic's LAST event and drops
   * the topic's history whole (a generation is kept while it runs and for
   * ttl after its end); topics by their last event, oldest first.
   */
  readonly touched: Map<TopicLog, number> | null
  constructor (readonly limit: number, readonly ttl: number, readonly maxBytes: number, readonly shared: boolean) {
    this.touched = shared ? null : new Map()
  }
}
