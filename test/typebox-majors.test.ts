/**
 * Channels take schemas from either TypeBox major, each checked by the
 * compiler of the TypeBox that made it, compiled once at definition:
 * `typebox` 1.x (Type from 'typebox') and `@sinclair/typebox` 0.34, even
 * side by side in one channel. A plain object that neither made is refused.
 */
import t from 'tap'
import Type from 'typebox'
import { Type as Type034 } from '@sinclair/typebox'
import { defineChannel } from '../lib/index.js'
import { compile, originOf } from '../lib/typebox.js'
import { makeApp } from './helpers/index.js'

t.test('a channel of typebox 1.x schemas: valid payloads publish, invalid ones are refused naming the field', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const room = app.sse.channel('rooms/:roomId', {
    events: {
      message: Type.Object({ text: Type.String({ maxLength: 5 }), at: Type.Integer({ minimum: 0 }) }),
      legacy: Type034.Object({ n: Type034.Number() })
    }
  })
  const heard: unknown[] = []
  let bothHeard: () => void = () => {}
  const both = new Promise<void>(resolve => { bothHeard = resolve })
  const hear = (data: unknown): void => { if (heard.push(data) === 2) bothHeard() }
  room.subscribe('message', hear)
  room.subscribe('legacy', hear)
  const lobby = room.topic({ roomId: 'lobby' })
  t.match(await lobby.publish('message', { text: 'hi', at: 1 }), /^[0-9a-z]+-\d+$/, '1.x schema: published')
  t.match(await lobby.publish('legacy', { n: 2 }), /^[0-9a-z]+-\d+$/, '0.34 schema in the same channel: published')
  await t.rejects(lobby.publish('message', { text: 'too long', at: 1 }), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID', statusCode: 400, message: /\/text/ }, '1.x: a bad field is named by its path')
  await t.rejects(lobby.publish('message', { text: 'ok', at: -1 } as never), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID', message: /\/at/ })
  await t.rejects(lobby.publish('legacy', { n: 'x' } as never), { code: 'FST_ERR_SSEHUB_PAYLOAD_INVALID', message: /\/n/ }, '0.34: the same, through its own compiler')
  let timer: NodeJS.Timeout | undefined
  await Promise.race([both, new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error('listeners did not hear both events within 5 s')), 5_000) })])
  clearTimeout(timer)
  t.same(heard, [{ text: 'hi', at: 1 }, { n: 2 }], 'the valid payloads were delivered, in order')
})

t.test('each schema goes to the compiler of the TypeBox that made it', async t => {
  t.equal(originOf(Type.String()), '1.x')
  t.equal(originOf(Type034.String()), '0.x')
  t.equal(originOf({ type: 'string' }), null, 'plain JSON Schema: neither')
  // A pattern 1.x cannot compile fails at definition, not at the first publish.
  t.throws(() => defineChannel('bad', { events: { e: Type.String({ pattern: '(' }) } }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID', message: /schema of event "e" does not compile/ })
  t.throws(() => defineChannel('plain', { events: { e: { type: 'nope' } } }), { code: 'FST_ERR_SSEHUB_CHANNEL_INVALID', message: /not a TypeBox schema/ }, 'a plain object is refused: 1.x would pass every value for { type: "nope" }')
  const check = compile(Type.Object({ a: Type.String() }))
  t.equal(check({ a: 'x' }), null)
  t.same(check({ a: 1 }), { path: '/a', message: 'must be string' })
})
