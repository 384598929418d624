/**
 * The topics this process follows, and the only caller of the backend's
 * subscribe and unsubscribe: a topic is subscribed once when its first local
 * subscriber or listener comes, and unsubscribed once when its last leaves.
 */
import type { Backend } from '../backend.js'
import type { ChannelImpl } from '../channel.js'
import { LocalTopic, type Listener, type Member } from './state.js'

export { LocalTopic, type Listener }

interface Counts { topics: number, subscribers: number }

export class TopicRegistry {
  private readonly topics = new Map<string, LocalTopic>()
  private readonly counts = new Map<ChannelImpl, Counts>()
  /** Channels with channel-wide listeners, subscribed as a whole. */
  private readonly wholeChannels = new Set<string>()
  /** Stream subscriptions to topics now. */
  subscriptions = 0

  constructor (private readonly backend: Backend, private readonly log: () => { error: (o: object, msg: string) => void }) {}

  get size (): number {
    return this.topics.size
  }

  get (key: string): LocalTopic | undefined {
    return this.topics.get(key)
  }

  /** The topic `key`, subscribed at the backend when it is new here. */
  ensure (key: string, channel: ChannelImpl): LocalTopic {
    let topic = this.topics.get(key)
    if (topic === undefined) {
      const created = new LocalTopic(key, channel)
      topic = created
      this.topics.set(key, topic)
      this.countsOf(channel).topics++
      topic.ready = this.backend.subscribe(key, channel.name).then(() => { created.live = true }, err => {
        this.log().error({ err, topic: key }, 'fastify-sse-hub: backend subscribe failed')
      })
    }
    return topic
  }

  /** Adds `member` to `topic`; false if it was there already. */
  link (member: Member, topic: LocalTopic): boolean {
    if (topic.subs.has(member)) return false
    topic.subs.add(member)
    member.topics.push(topic)
    this.subscriptions++
    this.countsOf(topic.channel).subscribers++
    return true
  }

  unlink (member: Member, topic: LocalTopic): void {
    if (!topic.subs.delete(member)) return
    const i = member.topics.indexOf(topic)
    if (i !== -1) member.topics.splice(i, 1)
    this.subscriptions--
    this.countsOf(topic.channel).subscribers--
    this.release(topic)
  }

  /** Drops `topic` once nobody here follows it. */
  release (topic: LocalTopic): void {
    if (!topic.idle || this.topics.get(topic.key) !== topic) return
    this.topics.delete(topic.key)
    this.countsOf(topic.channel).topics--
    // A batch waiting for the flush goes nowhere now; the fan-out skips the empty topic.
    topic.batch = []
    this.backend.unsubscribe(topic.key, topic.channel.name)
  }

  /** Every member following some topic here, once each. */
  members (): Set<Member> {
    const all = new Set<Member>()
    for (const topic of this.topics.values()) for (const m of topic.subs) all.add(m)
    return all
  }

  subscribeChannel (name: string): void {
    if (this.wholeChannels.has(name)) return
    this.wholeChannels.add(name)
    this.backend.subscribeChannel?.(name).catch(err => {
      this.log().error({ err, channel: name }, 'fastify-sse-hub: backend channel subscribe failed')
    })
  }

  unsubscribeChannel (name: string): void {
    if (this.wholeChannels.delete(name)) this.backend.unsubscribeChannel?.(name)
  }

  /** Per channel name: its topics with subscribers here, and their subscriptions. */
  channelCounts (): Record<string, Counts> {
    const out: Record<string, Counts> = {}
    for (const [channel, c] of this.counts) out[channel.name] = { topics: c.topics, subscribers: c.subscribers }
    return out
  }

  private countsOf (channel: ChannelImpl): Counts {
    let c = this.counts.get(channel)
    if (c === undefined) this.counts.set(channel, c = { topics: 0, subscribers: 0 })
    return c
  }
}
