// topic() hands out the handle it made before for the same values (a publish
// to a known topic makes no handle, key or check again), and the reuse
// never lets a value through that topic() refuses: a cached "a" + "b/c"
// tuple cannot be reached with "a/b" + "c", nor a tuple with a non-string.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp } from './helpers/index.js'

const Message = Type.Object({ text: Type.String() })

t.test('the same values give the same handle; other values another; refusals unchanged after caching', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
  const pair = app.sse.channel('orgs/:org/rooms/:room', { events: { message: Message } })
  const a = room.topic({ roomId: 'a' })
  t.equal(room.topic({ roomId: 'a' }), a, 'one parameter: the handle is reused')
  t.not(room.topic({ roomId: 'b' }), a)
  t.equal(room.topic({ roomId: 'b' }).key, 'rooms/b')
  t.ok(Object.isFrozen(a.params))
  const ab = pair.topic({ org: 'a', room: 'b' })
  t.equal(pair.topic({ org: 'a', room: 'b' }), ab, 'two parameters: the handle is reused')
  t.equal(ab.key, 'orgs/a/rooms/b')
  t.not(pair.topic({ org: 'b', room: 'a' }), ab)
  pair.topic({ org: 'x', room: 'y' })
  const throws = (fn: () => unknown, what: string): void => {
    t.throws(fn, { code: 'FST_ERR_SSEHUB_TOPIC_INVALID' }, what)
  }
  const pairTopic = pair.topic.bind(pair) as unknown as (p: unknown) => unknown
  const roomTopic = room.topic.bind(room) as unknown as (p: unknown) => unknown
  throws(() => pairTopic({ org: 'a/b', room: 'c' }), 'a slash in a value, even where the join would match a cached tuple ("a/b" + "c")')
  pair.topic({ org: 'a', room: 'b.c' })
  throws(() => pairTopic({ org: 'a', room: 'b/c' }), 'a slash in the second value')
  throws(() => pairTopic({ org: 'x', room: ['y'] }), 'a non-string value beside a cached one')
  throws(() => roomTopic({ roomId: ['a'] }), 'an array whose string form is a cached value')
  throws(() => roomTopic({ roomId: { toString: () => 'a' } }), 'an object whose string form is a cached value')
})

t.test('the cache is bounded: past 16,384 topics it starts over, handles stay correct', async t => {
  const { app } = await makeApp(t, () => {}, { listen: false })
  const room = app.sse.channel('rooms/:roomId', { events: { message: Message } })
  const first = room.topic({ roomId: 't0' })
  for (let i = 1; i <= 16_384; i++) room.topic({ roomId: 't' + i })
  const again = room.topic({ roomId: 't0' })
  t.not(again, first, 'the first handle was dropped with the rest')
  t.equal(again.key, first.key)
  t.same(again.params, { roomId: 't0' })
})
