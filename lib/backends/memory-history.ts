/**
 * Bounded history of published events, per topic, for Last-Event-ID resume.
 *
 * Bounds: `history` events per topic, `historyTtl` ms of age, `maxHistoryBytes`
 * for the whole hub, and `maxIdleTopics` topics that hold history but have no
 * subscriber. Whatever is dropped is remembered as a per-topic high-water mark
 * (`trimmedUpTo`), so a resume can always tell whether it missed something:
 * never a silent gap. Freed topics leave their mark in a fixed table of
 * hashed buckets, so forgetting a topic costs no memory and can only cause a
 * needless `reset`, never a missed one.
 *
 * A channel that declares its own bounds (`history: { limit, ttl, bytes }`)
 * keeps its topics in a pool of its own: its age and byte bounds apply to
 * its topics only, other channels' traffic never evicts them, and its idle
 * topics are bounded by its bytes and age rather than by `maxIdleTopics`.
 */
import type { ChannelHistory, HistoryLimits, HubEvent } from '../backend.js'

/** What one topic's history holds after a seq. */
interface TopicAfter {
  /** The events after the seq, in order. Empty when `trimmed`. */
  events: HubEvent[]
  /** True when some event after the seq is no longer in history. */
  trimmed: boolean
}

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
const ENTRY_OVERHEAD = 96
/** Memory counted per topic that holds history: its log, columns, and map entries (measured about 400 bytes). */
const TOPIC_OVERHEAD = 448
const FREED_BUCKETS = 4096

/** A FIFO queue on a growable ring: O(1) push, shift and index. */
export class Ring<T> {
  private items: Array<T | undefined> = new Array(8)
  private head = 0
  length = 0

  push (item: T): void {
    if (this.length === this.items.length) {
      const grown = new Array<T | undefined>(this.items.length * 2)
      for (let i = 0; i < this.length; i++) grown[i] = this.items[(this.head + i) % this.items.length]
      this.items = grown
      this.head = 0
    }
    this.items[(this.head + this.length) % this.items.length] = item
    this.length++
  }

  at (i: number): T {
    return this.items[(this.head + i) % this.items.length] as T
  }

  shift (): T | undefined {
    if (this.length === 0) return undefined
    const item = this.items[this.head]
    this.items[this.head] = undefined
    this.head = (this.head + 1) % this.items.length
    this.length--
    return item
  }
}

/**
 * The kept events of one topic, oldest first, as columns on a ring whose
 * capacity is a power of two: seqs (small integers or doubles, unboxed),
 * event names, payloads. Appending an event allocates nothing once the
 * ring has grown to the topic's rate, and nothing it keeps is an object of
 * its own for the collector to trace or promote.
 */
class TopicLog {
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
    return 2 * (this.datas[j].length + this.names[j].length) + ENTRY_OVERHEAD
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
class Fifo {
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

  /** Whether the oldest entry is dead (its topic no longer holds it). */
  frontDead (): boolean {
    const topic = this.topics[this.head] as TopicLog
    return topic.freed || this.seqs[this.head] <= topic.trimmedUpTo
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
      if (liveOnly && (topic.freed || this.seqs[j] <= topic.trimmedUpTo)) continue
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
class Pool {
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

function bucket (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % FREED_BUCKETS
}

/** The history of one hub (the memory backend's store). */
export class History {
  private readonly topics = new Map<string, TopicLog>()
  /** Topics of the shared pool with history and no subscriber, least recently active first. */
  private readonly idle = new Map<string, TopicLog>()
  /** The plugin-wide bounds. */
  private readonly main: Pool
  /** Channel name -> the pool of a channel with bounds of its own. */
  private readonly channelPools = new Map<string, Pool>()
  /** Every pool, the shared one first. */
  private readonly pools: Pool[]
  /** Per bucket of topic keys, the highest seq dropped from any freed topic in it. */
  private readonly freedUpTo = new Float64Array(FREED_BUCKETS)
  bytes = 0
  events = 0

  /**
   * `idOf` makes an event's id from its seq when a reader asks for it (the
   * memory backend's `<epoch>-<seq>`): ids are not kept.
   */
  constructor (private readonly limits: HistoryLimits, private readonly idOf: (seq: number) => string = String) {
    this.main = new Pool(limits.history, limits.historyTtl, limits.maxHistoryBytes, true)
    this.pools = [this.main]
  }

  /** Gives the topics of `channel` bounds of their own (from its next new topic on). */
  setChannel (channel: string, bounds: ChannelHistory): void {
    const pool = new Pool(bounds.limit, bounds.ttl, bounds.bytes, false)
    const old = this.channelPools.get(channel)
    if (old !== undefined) this.pools.splice(this.pools.indexOf(old), 1)
    this.channelPools.set(channel, pool)
    this.pools.push(pool)
  }

  /** Topics held now (with history or subscribers). */
  get topicCount (): number {
    return this.topics.size
  }

  /** Records `ev` (seq strictly above every earlier one) and applies the bounds. */
  append (ev: HubEvent, now: number): void {
    const held = this.topics.get(ev.topic)
    if ((held?.pool ?? this.channelPools.get(ev.channel) ?? this.main).limit === 0) {
      // Nothing is kept (`history: 0`): only the mark that a resume from
      // before this event missed it; no entry, nothing for the collector.
      if (held !== undefined) held.trimmedUpTo = ev.seq
      else {
        const b = bucket(ev.topic)
        if (ev.seq > this.freedUpTo[b]) this.freedUpTo[b] = ev.seq
      }
      return
    }
    const topic = held ?? this.createTopic(ev.topic, ev.channel)
    const pool = topic.pool
    topic.push(ev.seq, ev.event, ev.data)
    pool.fifo.push(topic, ev.seq, now)
    this.count(pool, 2 * (ev.data.length + ev.event.length) + ENTRY_OVERHEAD)
    this.events++
    if (!topic.subscribed && pool.shared) {
      this.idle.delete(topic.key)
      this.idle.set(topic.key, topic)
    }
    if (pool.touched !== null) {
      pool.touched.delete(topic)
      pool.touched.set(topic, now)
    }
    if (topic.length > pool.limit) this.dropOldest(topic)
    while (pool.bytes > pool.maxBytes && this.evictFifoFront(pool)) continue
    while (this.idle.size > this.limits.maxIdleTopics) {
      this.freeTopic(this.idle.values().next().value as TopicLog)
    }
    this.expire(now)
  }

  private count (pool: Pool, bytes: number): void {
    pool.bytes += bytes
    this.bytes += bytes
  }

  /** Marks whether `key` has subscribers: subscribed topics are never freed, idle ones may be. */
  setSubscribed (key: string, subscribed: boolean, channel: string = key): void {
    let topic = this.topics.get(key)
    if (topic === undefined) {
      if (!subscribed) return
      topic = this.createTopic(key, channel)
    }
    topic.subscribed = subscribed
    if (subscribed) {
      this.idle.delete(key)
    } else if (topic.length === 0) {
      this.freeTopic(topic)
    } else if (topic.pool.shared) {
      this.idle.set(key, topic)
      while (this.idle.size > this.limits.maxIdleTopics) this.freeTopic(this.idle.values().next().value as TopicLog)
    }
  }

  /**
   * A topic (re)created: it inherits its bucket's freed mark, so events of an
   * earlier life of the same key that were dropped still count as trimmed.
   */
  private createTopic (key: string, channel: string): TopicLog {
    const topic = new TopicLog(key, channel, this.channelPools.get(channel) ?? this.main)
    topic.trimmedUpTo = this.freedUpTo[bucket(key)]
    this.topics.set(key, topic)
    this.count(topic.pool, TOPIC_OVERHEAD)
    return topic
  }

  /** What came after `seq` on `key`, or that some of it was trimmed. */
  after (key: string, seq: number, now: number): TopicAfter {
    this.expire(now)
    const topic = this.topics.get(key)
    if (topic === undefined) return { events: [], trimmed: seq < this.freedUpTo[bucket(key)] }
    if (seq < topic.trimmedUpTo) return { events: [], trimmed: true }
    // Binary search for the first entry after seq: history is in seq order.
    let lo = 0
    let hi = topic.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (topic.seqAt(mid) <= seq) lo = mid + 1
      else hi = mid
    }
    const events: HubEvent[] = []
    for (let i = lo; i < topic.length; i++) events.push(topic.eventAt(i, this.idOf))
    return { events, trimmed: false }
  }

  /** The newest `count` events of `key`, oldest first. */
  latest (key: string, count: number, now: number): HubEvent[] {
    this.expire(now)
    const topic = this.topics.get(key)
    if (topic === undefined) return []
    const events: HubEvent[] = []
    for (let i = Math.max(0, topic.length - count); i < topic.length; i++) events.push(topic.eventAt(i, this.idOf))
    return events
  }

  /** Drops events older than their pool's ttl (`historyTtl`, or a channel's own). */
  expire (now: number): void {
    for (let i = 0; i < this.pools.length; i++) {
      const pool = this.pools[i]
      if (pool.ttl === 0) continue
      const cutoff = now - pool.ttl
      if (pool.touched !== null) {
        for (const [topic, at] of pool.touched) {
          if (at > cutoff) break
          // Freed whole (its mark kept): a resume from inside it gets reset.
          pool.touched.delete(topic)
          while (topic.length > 0) this.dropOldest(topic)
        }
        continue
      }
      const fifo = pool.fifo
      for (;;) {
        // Entries already dropped by another bound go first: their age says nothing of the next live one.
        while (fifo.length > 0 && fifo.frontDead()) {
          fifo.shift()
          fifo.dead--
        }
        if (fifo.length === 0 || fifo.frontAt() > cutoff) break
        this.evictFifoFront(pool)
      }
    }
  }

  /** Drops the oldest kept entry of `pool`; false when there is none. */
  private evictFifoFront (pool: Pool): boolean {
    const fifo = pool.fifo
    while (fifo.length > 0) {
      const dead = fifo.frontDead()
      const topic = fifo.frontTopic()
      fifo.shift()
      if (dead) {
        fifo.dead--
        continue
      }
      // The pool's oldest entry is also the oldest of its topic.
      this.dropOldest(topic, true)
      return true
    }
    return false
  }

  private dropOldest (topic: TopicLog, fromFifo = false): void {
    this.count(topic.pool, -topic.sizeAt(0))
    topic.trimmedUpTo = topic.seqAt(0)
    topic.shift()
    if (!fromFifo) topic.pool.fifo.noteDead()
    this.events--
    if (topic.length === 0 && !topic.subscribed) this.freeTopic(topic)
  }

  private freeTopic (topic: TopicLog): void {
    const fifo = topic.pool.fifo
    while (topic.length > 0) {
      this.count(topic.pool, -topic.sizeAt(0))
      topic.trimmedUpTo = topic.seqAt(0)
      topic.shift()
      this.events--
      fifo.noteDead()
    }
    topic.freed = true
    this.topics.delete(topic.key)
    this.idle.delete(topic.key)
    topic.pool.touched?.delete(topic)
    this.count(topic.pool, -TOPIC_OVERHEAD)
    const b = bucket(topic.key)
    if (topic.trimmedUpTo > this.freedUpTo[b]) this.freedUpTo[b] = topic.trimmedUpTo
  }
}
