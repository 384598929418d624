/**
 * In-process listeners: `channel.subscribe(event, fn)` and
 * `topic.subscribe(event, fn)`. They run in the flush, before streams are
 * written, with the payload object when the event was published here (else
 * its JSON parsed once per event).
 */
import type { HubEvent } from '../backend.js'
import type { ChannelImpl, EventMeta } from '../channel.js'
import type { Listener, LocalTopic, TopicRegistry } from './topics.js'

export class Listeners {
  /** Listeners of every topic of a templated channel: channel name -> event -> handlers. */
  private readonly byChannel = new Map<string, Map<string, Set<Listener>>>()
  /** Events (with their payload, if published here) for the next flush. */
  private queue: Array<{ ev: HubEvent, payload: unknown }> = []

  constructor (private readonly topics: TopicRegistry, private readonly log: () => { error: (o: object, msg: string) => void }) {}

  /** Whether `ev` (of `topic`, its local topic if any) has a listener here: checked per delivered event. */
  wants (ev: HubEvent, topic: LocalTopic | undefined): boolean {
    return this.byChannel.has(ev.channel) || topic?.listeners != null
  }

  /** Queues `ev` for the flush. */
  push (ev: HubEvent, payload: unknown): void {
    this.queue.push({ ev, payload })
  }

  get pending (): boolean {
    return this.queue.length > 0
  }

  /** Adds `handler`; `key` null listens to every topic of the channel. Returns the removal. */
  listen (channel: ChannelImpl, key: string | null, event: string, handler: Listener): () => void {
    let set: Set<Listener>
    if (key === null) {
      let byEvent = this.byChannel.get(channel.name)
      if (byEvent === undefined) {
        this.byChannel.set(channel.name, byEvent = new Map())
        this.topics.subscribeChannel(channel.name)
      }
      set = setOf(byEvent, event)
    } else {
      const topic = this.topics.ensure(key, channel)
      set = setOf(topic.listeners ??= new Map(), event)
    }
    set.add(handler)
    return () => {
      set.delete(handler)
      if (key === null) {
        const byEvent = this.byChannel.get(channel.name)
        if (byEvent !== undefined && allEmpty(byEvent)) {
          this.byChannel.delete(channel.name)
          this.topics.unsubscribeChannel(channel.name)
        }
      } else {
        const topic = this.topics.get(key)
        if (topic?.listeners != null && allEmpty(topic.listeners)) {
          topic.listeners = null
          this.topics.release(topic)
        }
      }
    }
  }

  /** Runs the queued events' listeners; a throwing listener is logged and the others still run. */
  run (): void {
    const events = this.queue
    this.queue = []
    for (const { ev, payload } of events) {
      const topicSet = this.topics.get(ev.topic)?.listeners?.get(ev.event)
      const channelSet = this.byChannel.get(ev.channel)?.get(ev.event)
      if (topicSet === undefined && channelSet === undefined) continue
      const meta: EventMeta = { id: ev.id, event: ev.event, topic: ev.topic }
      const data = payload === undefined ? JSON.parse(ev.data) : payload
      for (const set of [topicSet, channelSet]) {
        if (set === undefined) continue
        for (const fn of set) {
          try {
            fn(data, meta)
          } catch (err) {
            this.log().error({ err, topic: ev.topic, event: ev.event }, 'fastify-sse-hub: a subscribe() handler threw')
          }
        }
      }
    }
  }
}

function setOf (map: Map<string, Set<Listener>>, event: string): Set<Listener> {
  let s = map.get(event)
  if (s === undefined) map.set(event, s = new Set())
  return s
}

function allEmpty (map: Map<string, Set<Listener>>): boolean {
  for (const s of map.values()) if (s.size > 0) return false
  return true
}
