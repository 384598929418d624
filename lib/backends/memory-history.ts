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
import { entrySize, Pool, TopicLog } from './memory-columns.js'

/** What one topic's history holds after a seq. */
interface TopicAfter {
  /** The events after the seq, in order. Empty when `trimmed`. */
  events: HubEvent[]
  /** True when some event after the seq is no longer in history. */
  trimmed: boolean
}

/** Memory counted per topic that holds history: its log, columns, and map entries (measured about 400 bytes). */
const TOPIC_OVERHEAD = 448
const FREED_BUCKETS = 4096

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
    this.count(pool, entrySize(ev.event, ev.data))
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
        fifo.skipDead()
        if (fifo.length === 0 || fifo.frontAt() > cutoff) break
        this.evictFifoFront(pool)
      }
    }
  }

  /** Drops the oldest kept entry of `pool`; false when there is none. */
  private evictFifoFront (pool: Pool): boolean {
    const fifo = pool.fifo
    fifo.skipDead()
    if (fifo.length === 0) return false
    const topic = fifo.frontTopic()
    fifo.shift()
    // The pool's oldest entry is also the oldest of its topic.
    this.dropOldest(topic, true)
    return true
  }

  /** Drops `topic`'s oldest event (its bytes, and its mark); its FIFO entry stays, dead. */
  private shiftTopic (topic: TopicLog): void {
    this.count(topic.pool, -topic.sizeAt(0))
    topic.trimmedUpTo = topic.seqAt(0)
    topic.shift()
    this.events--
  }

  private dropOldest (topic: TopicLog, fromFifo = false): void {
    this.shiftTopic(topic)
    if (!fromFifo) topic.pool.fifo.noteDead()
    if (topic.length === 0 && !topic.subscribed) this.freeTopic(topic)
  }

  private freeTopic (topic: TopicLog): void {
    while (topic.length > 0) {
      this.shiftTopic(topic)
      topic.pool.fifo.noteDead()
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
