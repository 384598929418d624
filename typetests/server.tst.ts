// The server side of the same definitions: publish() takes the event's
// Static<schema>, an unknown event or a wrong payload does not compile, topic
// parameters are typed from the channel's name template.
import { describe, expect, test } from 'tstyche'
import { Type } from '@sinclair/typebox'
import Fastify from 'fastify'
import ssePlugin, { type Channel, type TopicParams } from '../lib/index.js'
import { ticker, room, org, Price } from './channels.js'

describe('channel.publish()', () => {
  test('takes the payload typed from the schema', () => {
    expect(ticker.publish('price', { symbol: 'ACME', price: 1 })).type.toBe<Promise<string>>()
    expect(ticker.publish).type.toBeCallableWith('halt', { symbol: 'ACME', reason: 'news' })
  })

  test('a wrong payload does not compile', () => {
    expect(ticker.publish).type.not.toBeCallableWith('price', { symbol: 1 })
    expect(ticker.publish).type.not.toBeCallableWith('price', { symbol: 1, price: 1 })
    expect(ticker.publish).type.not.toBeCallableWith('price', { symbol: 'ACME' })
    expect(ticker.publish).type.not.toBeCallableWith('halt', { symbol: 'ACME', reason: 'boredom' })
    // @ts-expect-error Type 'number' is not assignable to type 'string'
    void ticker.publish('price', { symbol: 1 })
  })

  test('an unknown event does not compile', () => {
    expect(ticker.publish).type.not.toBeCallableWith('trade', { symbol: 'ACME', price: 1 })
    // @ts-expect-error Argument of type '"message"' is not assignable to parameter of type '"price" | "halt"'
    void ticker.publish('message', { user: 'a', text: 'b', at: 1 })
  })

  test('server-side subscribe handlers are typed too', () => {
    ticker.subscribe('price', (data, meta) => {
      expect(data).type.toBe<{ symbol: string, price: number }>()
      expect(meta.topic).type.toBe<string>()
    })
    expect(ticker.subscribe).type.not.toBeCallableWith('nope', () => {})
  })
})

describe('topics of a templated channel', () => {
  test('topic params are typed from the name template', () => {
    expect<TopicParams<'rooms/:roomId'>>().type.toBe<{ roomId: string }>()
    expect<TopicParams<typeof org.name>>().type.toBe<{ org: string, team: string }>()
    expect(room.topic).type.toBeCallableWith({ roomId: 'a' })
    expect(room.topic).type.not.toBeCallableWith({ room: 'a' })
    expect(room.topic).type.not.toBeCallableWith({})
    expect(room.topic).type.not.toBeCallableWith({ roomId: 1 })
    expect(org.topic).type.not.toBeCallableWith({ org: 'x' })
    expect(org.topic).type.toBeCallableWith({ org: 'x', team: 'y' })
  })

  test('publish goes through a topic, typed', () => {
    const lobby = room.topic({ roomId: 'lobby' })
    expect(lobby.publish).type.toBeCallableWith('message', { user: 'a', text: 'hi', at: 1 })
    expect(lobby.publish).type.not.toBeCallableWith('message', { user: 'a', text: 2, at: 1 })
    expect(lobby.publish).type.not.toBeCallableWith('price', { symbol: 'ACME', price: 1 })
    expect(room).type.not.toHaveProperty('publish')
    expect(ticker).type.toHaveProperty('publish')
  })
})

describe('app.sse.channel()', () => {
  test('declared on an app or attached from a definition, the types are the same', async () => {
    const app = Fastify()
    await app.register(ssePlugin)
    const inline = app.sse.channel('ticker', { events: { price: Price } })
    expect(inline).type.toBe<Channel<'ticker', { price: typeof Price }>>()
    expect(app.sse.channel(ticker)).type.toBe<typeof ticker>()
    expect(inline.publish).type.not.toBeCallableWith('price', { symbol: 1 })
    const numbers = app.sse.channel('n', { events: { n: Type.Number() } })
    expect(numbers.publish).type.toBeCallableWith('n', 1)
    expect(numbers.publish).type.not.toBeCallableWith('n', '1')
  })
})

describe('production controls', () => {
  test('a snapshot returns one of the channel\'s events with its payload type', () => {
    const app = Fastify()
    const Counter = Type.Object({ total: Type.Number() })
    app.sse.channel('counter', {
      events: { state: Counter, step: Type.Object({ by: Type.Number() }) },
      snapshot: () => ({ event: 'state', data: { total: 1 } })
    })
    app.sse.channel('counter2', {
      events: { state: Counter },
      snapshot: async () => ({ event: 'state' as const, data: { total: 2 } })
    })
    app.sse.channel('counter3', {
      events: { state: Counter },
      // @ts-expect-error Type '() => { event: "state"; data: { count: number; }; }' is not assignable
      snapshot: () => ({ event: 'state', data: { count: 1 } })
    })
    app.sse.channel('counter4', {
      events: { state: Counter },
      // @ts-expect-error Type '() => { event: "nope"; data: { total: number; }; }' is not assignable
      snapshot: () => ({ event: 'nope', data: { total: 1 } })
    })
  })

  test('reply.sse() options and the hub\'s controls are typed', () => {
    const app = Fastify()
    app.get('/s', (req, reply) => reply.sse({ subscribe: [ticker], tags: ['user:1'], maxLifetime: 1000, since: -5 }))
    expect(app.sse.disconnect({ tag: 'user:1' })).type.toBe<Promise<number>>()
    expect(app.sse.metrics()).type.toBe<string>()
    app.sse.on('disconnect', (stream, reason) => {
      expect(reason).type.toBe<'client' | 'server' | 'end' | 'error' | 'slow' | 'shutdown' | 'expired' | 'disconnect' | 'shed'>()
    })
    // @ts-expect-error Type 'number' is not assignable to type 'string'
    app.get('/t', (req, reply) => reply.sse({ tags: [1] }))
  })

  test('run(): the producer yields the channel\'s events with their payloads', () => {
    const app = Fastify()
    const lobby = room.topic({ roomId: 'lobby' })
    const run = app.sse.run(lobby, async function * (signal) {
      expect(signal).type.toBe<AbortSignal>()
      yield { event: 'typing' as const, data: { user: 'a' } }
      yield { event: 'message' as const, data: { user: 'a', text: 'hi', at: 1 } }
    })
    expect(run.finished).type.toBe<Promise<import('../lib/index.js').RunOutcome>>()
    expect(run.started).type.toBe<Promise<void>>()
    expect(app.sse.cancel(lobby)).type.toBe<Promise<boolean>>()
    // @ts-expect-error Type 'number' is not assignable to type 'string'
    app.sse.run(lobby, async function * () { yield { event: 'typing' as const, data: { user: 1 } } })
    // @ts-expect-error Type '"nope"' is not assignable
    app.sse.run(lobby, function * () { yield { event: 'nope' as const, data: {} } })
    app.get('/f', (req, reply) => reply.sse({ subscribe: [lobby], since: 'start', until: ['message'] }))
    // @ts-expect-error Type '"begin"' is not assignable
    app.get('/g', (req, reply) => reply.sse({ subscribe: [lobby], since: 'begin' }))
  })
})
