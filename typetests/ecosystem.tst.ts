// Types where users write code, with the packages they add to Fastify apps:
// channels of TypeBox 1.x schemas (and 0.34 ones) publish typed, the type
// provider's request.body publishes as is, authorize/snapshot params are
// typed from the channel's template, and the handler forms that compile with
// a route response schema.
import { describe, expect, test } from 'tstyche'
import Type from 'typebox'
import { Type as Type034 } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyRequest } from 'fastify'
import ssePlugin, { defineChannel, type Authorize } from '../lib/index.js'
import type { EventData } from '../lib/client.js'

const Message = Type.Object({ text: Type.String(), at: Type.Integer() })
const room = defineChannel('rooms/:roomId', {
  events: { message: Message, legacy: Type034.Object({ n: Type034.Number() }) }
})

describe('TypeBox 1.x schemas', () => {
  test('publish takes Static of the schema; a wrong payload or event does not compile', () => {
    const lobby = room.topic({ roomId: 'lobby' })
    expect(lobby.publish).type.toBeCallableWith('message', { text: 'hi', at: 1 })
    expect(lobby.publish).type.not.toBeCallableWith('message', { text: 1, at: 1 })
    expect(lobby.publish).type.not.toBeCallableWith('message', { text: 'hi' })
    expect(lobby.publish).type.not.toBeCallableWith('nope', { text: 'hi', at: 1 })
    expect(lobby.publish).type.toBeCallableWith('legacy', { n: 1 })
    expect(lobby.publish).type.not.toBeCallableWith('legacy', { n: '1' })
  })

  test('in-process handlers and the typed client get the same payload types', () => {
    room.subscribe('message', (data) => {
      expect(data).type.toBe<{ text: string, at: number }>()
    })
    expect<EventData<typeof room, 'message'>>().type.toBe<{ text: string, at: number }>()
    expect<EventData<typeof room, 'legacy'>>().type.toBe<{ n: number }>()
  })

  test('the type provider (v6) types request.body from the event schema, which publishes as is', async () => {
    const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
    await app.register(ssePlugin)
    app.sse.channel(room)
    app.post('/rooms/:roomId/messages', { schema: { body: Message, params: Type.Object({ roomId: Type.String() }) } }, async (req) => {
      expect(req.body).type.toBe<{ text: string, at: number }>()
      return { id: await room.topic({ roomId: req.params.roomId }).publish('message', req.body) }
    })
    app.post('/wrong', { schema: { body: Type.Object({ text: Type.Number() }) } }, async (req) => {
      expect(room.topic({ roomId: 'a' }).publish).type.not.toBeCallableWith('message', req.body)
    })
  })
})

describe('authorize and snapshot params, from the template', () => {
  test('rooms/:roomId gives { roomId: string }; a typo does not compile', () => {
    defineChannel('rooms/:roomId', {
      events: { m: Message },
      authorize: (request, params) => {
        expect(request).type.toBe<FastifyRequest>()
        expect(params).type.toBe<{ roomId: string }>()
        return params.roomId !== 'secret'
      },
      snapshot: (request, params) => {
        expect(params).type.toBe<{ roomId: string }>()
        return { event: 'm', data: { text: params.roomId, at: 0 } }
      }
    })
    defineChannel('orgs/:org/teams/:team', {
      events: { m: Message },
      authorize: (request, params) => {
        expect(params).type.toBe<{ org: string, team: string }>()
        return true
      }
    })
    defineChannel('rooms/:roomId', {
      events: { m: Message },
      // @ts-expect-error Property 'room' does not exist on type 'TopicParams<"rooms/:roomId">'
      authorize: (request, params) => params.room === 'x'
    })
  })

  test('a plain channel has no params; Authorize<string> takes any', () => {
    defineChannel('ticker', {
      events: { m: Message },
      authorize: (request, params) => {
        expect(params).type.toBe<{}>()
        return true
      }
    })
    expect<Parameters<Authorize>[1]>().type.toBe<Record<string, string>>()
    expect<Parameters<Authorize<'a/:b'>>[1]>().type.toBe<{ b: string }>()
  })
})

describe('handler forms with a route response schema and a type provider', () => {
  test('a block body or an async arrow compiles; an expression arrow returning the stream does not', async () => {
    const app = Fastify().withTypeProvider<TypeBoxTypeProvider>()
    await app.register(ssePlugin)
    const schema = { response: { 200: Type.String() } }
    app.get('/block', { schema }, (req, reply) => { reply.sse() })
    app.get('/async', { schema }, async (req, reply) => reply.sse())
    app.get('/async-block', { schema }, async (req, reply) => { await reply.sse() })
    // @ts-expect-error Type 'SseStream' is not assignable to type 'string | void | Promise<string | void>'
    app.get('/expression', { schema }, (req, reply) => reply.sse())
    // Without a response schema, every form compiles.
    app.get('/plain', (req, reply) => reply.sse())
  })
})
