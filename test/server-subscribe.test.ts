// In-process subscribe: channel.subscribe(event, handler) gets the payload
// and meta { id, event, topic }. On a templated channel, channel.subscribe
// hears every topic and topic(...).subscribe only its own. The returned
// function stops delivery. A throwing handler is logged at error level (50)
// and the other handlers still run. Invalid publishes reach no handler.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import type { EventMeta } from '../lib/index.js'
import { makeApp, Wakeable } from './helpers/index.js'

const Price = Type.Object({ symbol: Type.String(), price: Type.Number() })
const Message = Type.Object({ text: Type.String() })

/** Records handler calls and lets a test wait for them (event-driven, bounded). */
class Recorder<T = unknown> extends Wakeable {
  readonly calls: Array<{ data: T, meta: EventMeta }> = []
  readonly handler = (data: T, meta: EventMeta): void => {
    this.calls.push({ data, meta })
    this.wake()
  }

  /** Waits until a call with this id has arrived. */
  untilId (id: string): Promise<void> {
    return this.until(`the event ${id}`, () => this.calls.some(c => c.meta.id === id))
  }

  get ids (): string[] {
    return this.calls.map(c => c.meta.id)
  }
}

t.test('a plain channel: typed payload and meta; unsubscribe stops delivery', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const ticker = app.sse.channel('ticker', { events: { price: Price, halt: Message } })
  const prices = new Recorder<{ symbol: string, price: number }>()
  const halts = new Recorder<{ text: string }>()
  const off = ticker.subscribe('price', prices.handler)
  ticker.subscribe('halt', halts.handler)

  const id1 = await ticker.publish('price', { symbol: 'X', price: 1.5 })
  const id2 = await ticker.publish('halt', { text: 'stop' })
  await prices.untilId(id1)
  await halts.untilId(id2)
  t.same(prices.calls, [{ data: { symbol: 'X', price: 1.5 }, meta: { id: id1, event: 'price', topic: 'ticker' } }], 'payload and meta')
  t.same(halts.calls, [{ data: { text: 'stop' }, meta: { id: id2, event: 'halt', topic: 'ticker' } }], 'each handler hears only its event')

  off()
  off() // a second call is harmless
  const id3 = await ticker.publish('price', { symbol: 'X', price: 2 })
  const id4 = await ticker.publish('halt', { text: 'after' })
  await halts.untilId(id4) // the later event has been handled, so id3 would have been too
  t.notOk(prices.ids.includes(id3), 'no delivery after unsubscribe')
  t.same(prices.ids, [id1])
  const seq = (id: string): number => Number(id.slice(id.lastIndexOf('-') + 1))
  t.ok(seq(id1) < seq(id2) && seq(id2) < seq(id3) && seq(id3) < seq(id4), 'ids increase')

  t.throws(() => (ticker.subscribe as (e: string, h: unknown) => unknown)('nope', () => {}), { code: 'FST_ERR_SSEHUB_EVENT_UNKNOWN' }, 'an unknown event throws at once')
  t.throws(() => (ticker.subscribe as (e: string, h: unknown) => unknown)('price', 'not a function'), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID' }, 'a non-function handler throws at once')
})

t.test('a templated channel: channel-wide hears every topic, a topic hears only itself', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
  const all = new Recorder<{ text: string }>()
  const onlyA = new Recorder<{ text: string }>()
  const onlyB = new Recorder<{ text: string }>()
  const offAll = room.subscribe('message', all.handler)
  const offA = room.topic({ roomId: 'a' }).subscribe('message', onlyA.handler)
  room.topic({ roomId: 'b' }).subscribe('message', onlyB.handler)

  const a1 = await room.topic({ roomId: 'a' }).publish('message', { text: 'to a' })
  const b1 = await room.topic({ roomId: 'b' }).publish('message', { text: 'to b' })
  // A topic nobody subscribed to, with no stream anywhere: only the channel-wide handler hears it.
  const c1 = await room.topic({ roomId: 'c' }).publish('message', { text: 'to c' })
  await all.untilId(c1)
  await onlyA.untilId(a1)
  await onlyB.untilId(b1)
  t.same(all.calls.map(c => [c.meta.topic, c.meta.id, c.data.text]), [['rooms/a', a1, 'to a'], ['rooms/b', b1, 'to b'], ['rooms/c', c1, 'to c']], 'channel-wide: every topic, in order, with meta.topic')
  t.same(onlyA.calls, [{ data: { text: 'to a' }, meta: { id: a1, event: 'message', topic: 'rooms/a' } }], 'topic a: only a')
  t.same(onlyB.ids, [b1], 'topic b: only b')

  offA()
  offAll()
  const a2 = await room.topic({ roomId: 'a' }).publish('message', { text: 'a again' })
  const b2 = await room.topic({ roomId: 'b' }).publish('message', { text: 'b again' })
  await onlyB.untilId(b2)
  t.same(onlyA.ids, [a1], 'topic-level unsubscribe stops delivery')
  t.same(all.ids, [a1, b1, c1], 'channel-wide unsubscribe stops delivery')
  t.notOk(all.ids.includes(a2))
  t.equal(app.sse.stats().topics, 1, 'only the topic with a listener left is held')
})

t.test('a throwing handler is logged at error level and the others still run', async t => {
  const { app, logs, untilLog } = await makeApp(t, () => {}, { listen: false })
  const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
  const before = new Recorder()
  const after = new Recorder()
  const wide = new Recorder()
  const boom = new Error('handler boom')
  room.topic({ roomId: 'a' }).subscribe('message', before.handler)
  room.topic({ roomId: 'a' }).subscribe('message', () => { throw boom })
  room.topic({ roomId: 'a' }).subscribe('message', after.handler)
  room.subscribe('message', () => { throw new Error('wide boom') })
  room.subscribe('message', wide.handler)

  const id = await room.topic({ roomId: 'a' }).publish('message', { text: 'hi' })
  await before.untilId(id)
  await after.untilId(id)
  await wide.untilId(id)
  t.pass('handlers before and after the throwing ones ran, on the topic and channel-wide')
  const line = await untilLog('the handler error', l => l.level === 50 && (l.err as { message?: string } | undefined)?.message === 'handler boom')
  t.equal(line.level, 50, 'logged at error level')
  t.match(line, { topic: 'rooms/a', event: 'message' }, 'with the topic and event')
  await untilLog('the channel-wide handler error', l => l.level === 50 && (l.err as { message?: string } | undefined)?.message === 'wide boom')
  // The next event is still delivered: a throw does not unsubscribe anything.
  const id2 = await room.topic({ roomId: 'a' }).publish('message', { text: 'again' })
  await after.untilId(id2)
  await wide.untilId(id2)
  t.equal(logs.filter(l => l.level === 50).length, 4, 'one error line per throw')
})

t.test('handlers do not run for invalid publishes', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const ticker = app.sse.channel('ticker', { events: { price: Price } })
  const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
  const prices = new Recorder()
  const wide = new Recorder()
  const topic = new Recorder()
  ticker.subscribe('price', prices.handler)
  room.subscribe('message', wide.handler)
  room.topic({ roomId: 'a' }).subscribe('message', topic.handler)

  await t.rejects(ticker.publish('price', { symbol: 'X', price: 'high' } as never), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID' })
  await t.rejects(ticker.publish('price', null as never), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID' })
  await t.rejects(room.topic({ roomId: 'a' }).publish('message', { text: 5 } as never), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID' })
  await t.rejects((room.topic({ roomId: 'a' }).publish as (e: string, d: unknown) => Promise<string>)('other', { text: 'x' }), { code: 'FST_ERR_SSEHUB_EVENT_UNKNOWN' })
  // Valid markers after the invalid ones: once they are handled, anything earlier would have been.
  const p = await ticker.publish('price', { symbol: 'X', price: 1 })
  const m = await room.topic({ roomId: 'a' }).publish('message', { text: 'ok' })
  await prices.untilId(p)
  await wide.untilId(m)
  await topic.untilId(m)
  t.same(prices.ids, [p], 'only the valid price')
  t.same(wide.ids, [m], 'only the valid message, channel-wide')
  t.same(topic.ids, [m], 'only the valid message, on the topic')
})
