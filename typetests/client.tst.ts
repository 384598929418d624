// The client's types come from the server's channel definitions, through
// type-only imports: handler payloads are Static<schema>, a wrong payload type
// or an unknown event does not compile.
import { describe, expect, test } from 'tstyche'
import { EventSource as NodeEventSource } from 'eventsource'
import {
  subscribe,
  type ClientEventMeta,
  type ConnectionState,
  type EventData,
  type EventHandlers,
  type EventSourceConstructor,
  type ResetInfo,
  type ResetReason,
  type Subscription
} from '../lib/client.js'
import type { ResetReason as ServerResetReason } from '../lib/index.js'
import type { ticker, room, org } from './channels.js'

describe('subscribe<typeof channel>()', () => {
  test('handlers get data typed from the TypeBox schema, and meta', () => {
    subscribe<typeof ticker>('/ticker', {
      price: (data, meta) => {
        expect(data).type.toBe<{ symbol: string, price: number }>()
        expect(meta).type.toBe<ClientEventMeta<'price'>>()
        expect(meta.id).type.toBe<string>()
        expect(meta.event).type.toBe<'price'>()
      },
      halt: (data) => {
        expect(data.reason).type.toBe<'volatility' | 'news'>()
      }
    })
  })

  test('every handler is optional', () => {
    expect(subscribe<typeof ticker>).type.toBeCallableWith('/ticker', {})
    expect(subscribe<typeof ticker>).type.toBeCallableWith('/ticker', { halt: () => {} })
    expect(subscribe<typeof ticker>).type.toBeCallableWith(new URL('http://localhost/ticker'), { price: () => {} })
  })

  test('a handler expecting another payload type does not compile', () => {
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', { price: (data: { symbol: number }) => data })
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', { price: (data: { symbol: string, price: string }) => data })
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', { halt: (data: { reason: 'other' }) => data })
    // A handler may ask for less than the payload has.
    expect(subscribe<typeof ticker>).type.toBeCallableWith('/ticker', { price: (data: { symbol: string }) => data })

    subscribe<typeof ticker>('/ticker', {
      price: (data) => {
        // @ts-expect-error Type 'number' is not assignable to type 'string'
        const s: string = data.price
        // @ts-expect-error Property 'volume' does not exist
        void data.volume
        void s
      }
    })
  })

  test('an unknown event name does not compile', () => {
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', { trade: () => {} })
    // "message" belongs to the room channel, not to ticker
    // @ts-expect-error Object literal may only specify known properties, and 'message' does not exist
    subscribe<typeof ticker>('/ticker', { message: () => {} })
    // reset is handled by options.onReset, not as an event
    // @ts-expect-error Object literal may only specify known properties, and 'reset' does not exist
    subscribe<typeof ticker>('/ticker', { reset: () => {} })
  })

  test('a handler must be a function', () => {
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', { price: 'yes' })
  })

  test('without a channel type no handler is accepted (the type argument is required to type them)', () => {
    expect(subscribe).type.not.toBeCallableWith('/ticker', { price: () => {} })
    expect(subscribe).type.toBeCallableWith('/ticker', {})
    expect<EventHandlers<typeof ticker>>().type.toHaveProperty('price')
  })

  test('templated channels and their topics', () => {
    subscribe<typeof room>('/rooms/a', {
      message: (data) => { expect(data).type.toBe<{ user: string, text: string, at: number }>() },
      typing: (data) => { expect(data).type.toBe<{ user: string }>() }
    })
    type RoomTopic = ReturnType<typeof room.topic>
    subscribe<RoomTopic>('/rooms/a', {
      message: (data) => { expect(data.text).type.toBe<string>() }
    })
    subscribe<typeof org>('/orgs/x/teams/y', { note: (data) => { expect(data).type.toBe<string>() } })
  })

  test('a stream following several channels: a union of channel types', () => {
    subscribe<typeof ticker | typeof room>('/all', {
      price: (data) => { expect(data.price).type.toBe<number>() },
      message: (data) => { expect(data.user).type.toBe<string>() }
    })
    expect(subscribe<typeof ticker | typeof room>).type.not.toBeCallableWith('/all', { note: () => {} })
    expect<EventData<typeof ticker | typeof room, 'price'>>().type.toBe<{ symbol: string, price: number }>()
  })

  test('the subscription: state, lastEventId, close()', () => {
    const sub = subscribe<typeof ticker>('/ticker', {}, {
      lastEventId: '1700000000000-42',
      onReset: (info) => {
        expect(info).type.toBe<ResetInfo>()
        expect(info.lastEventId).type.toBe<string>()
        expect(info.reason).type.toBe<'unknown' | 'trimmed' | 'epoch'>()
      },
      onStateChange: (state, previous) => {
        expect(state).type.toBe<'connecting' | 'open' | 'closed'>()
        expect(previous).type.toBe<ConnectionState>()
      },
      onError: (error, meta) => {
        expect(error).type.toBe<Error>()
        expect(meta.event).type.toBe<string>()
      }
    })
    expect(sub).type.toBe<Subscription>()
    expect(sub.state).type.toBe<ConnectionState>()
    expect(sub.lastEventId).type.toBe<string | undefined>()
    expect(sub.close).type.toBe<() => void>()
    expect(sub).type.not.toHaveProperty('publish')
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', {}, { lastEventId: 42 })
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('/ticker', {}, { onReset: (info: { reason: 'gone' }) => info })
  })

  test('the client\'s ResetReason is the server\'s', () => {
    expect<ResetReason>().type.toBe<ServerResetReason>()
  })

  test('an EventSource from the eventsource package can be injected', () => {
    expect(NodeEventSource).type.toBeAssignableTo<EventSourceConstructor>()
    expect(subscribe<typeof ticker>).type.toBeCallableWith('http://localhost/ticker', {}, { EventSource: NodeEventSource })
    expect(subscribe<typeof ticker>).type.not.toBeCallableWith('http://localhost/ticker', {}, { EventSource: class {} })
  })
})
