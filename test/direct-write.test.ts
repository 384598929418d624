// A lone event to a topic of one subscriber is written the moment it is
// published, not at the end of the turn; more events to that topic in the
// same turn are coalesced, so a connection gets at most two writes a turn
// (the direct one and the flush's) however many events the turn brings. A
// topic of two or more waits for the flush (one packet for all of them).
// Writes are counted on the real sockets.
import t from 'tap'
import type { Socket } from 'node:net'
import { Type } from '@sinclair/typebox'
import { memoryBackend } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'

const turn = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

async function setup (t: Parameters<Parameters<typeof t.test>[1]>[0], subscribers: number) {
  const declare = (app: Parameters<Parameters<typeof makeApp>[1]>[0]) =>
    app.sse.channel('room/:id', { events: { msg: Type.Object({ n: Type.Integer() }) } })
  let room!: ReturnType<typeof declare>
  const writes: number[] = []
  // The memory backend delivers within publish(): that is what makes "at once" observable here.
  const { url } = await makeApp(t, app => {
    room = declare(app)
    app.get('/s/:id/:i', (req, reply) => {
      const { id, i } = req.params as { id: string, i: string }
      const socket = req.raw.socket as Socket
      const write = socket.write
      writes[Number(i)] = 0
      socket.write = function (this: Socket, ...args: unknown[]) {
        writes[Number(i)]++
        return (write as (...a: unknown[]) => boolean).apply(this, args)
      } as typeof socket.write
      return reply.sse({ subscribe: [room.topic({ id })] })
    })
  }, { plugin: { backend: memoryBackend(), heartbeat: false } })
  const clients = await Promise.all(Array.from({ length: subscribers }, (_, i) => SseClient.open(`${url}/s/a/${i}`)))
  await Promise.all(clients.map(c => c.until('the head event', () => c.heads.length === 1)))
  // The catch-up that sends the head is over once the client has it; let its turn end.
  await turn()
  t.teardown(() => { for (const c of clients) c.close() })
  return { room: () => room, clients, writes }
}

t.test('a lone event to a one-subscriber topic is written within publish(), before the turn ends', async t => {
  const { room, clients, writes } = await setup(t, 1)
  const before = writes[0]
  const id = room().topic({ id: 'a' }).publish('msg', { n: 1 })
  t.equal(writes[0] - before, 1, 'written to the socket before publish() returned')
  await turn()
  t.equal(writes[0] - before, 1, 'and not again at the end of the turn')
  await clients[0].waitEvents(1)
  t.same(clients[0].events.map(e => e.id), [await id])
})

t.test('2 and 50 events in one turn to a one-subscriber topic: at most two writes, all events once, in order', async t => {
  const { room, clients, writes } = await setup(t, 1)
  const topic = room().topic({ id: 'a' })
  const ids: Array<Promise<string>> = []
  let before = writes.slice()
  ids.push(topic.publish('msg', { n: 0 }), topic.publish('msg', { n: 1 }))
  await turn()
  t.equal(writes[0] - before[0], 2, '2 events, 2 writes (the first at once, the second at the flush)')
  before = writes.slice()
  for (let n = 2; n < 52; n++) ids.push(topic.publish('msg', { n }))
  t.same(writes.map((w, i) => w - before[i]), [1], 'the first of 50 written at once')
  await turn()
  t.equal(writes[0] - before[0], 2, '50 events in one turn, 2 writes')
  const expected = await Promise.all(ids)
  for (const c of clients) {
    await c.waitEvents(52)
    t.same(c.events.map(e => e.id), expected, 'every event once, in order')
    t.same(c.events.map(e => JSON.parse(e.data).n), Array.from({ length: 52 }, (_, n) => n))
  }
})

for (const n of [2, 17]) {
  t.test(`a topic of ${n} subscribers waits for the end of the turn: one write per connection`, async t => {
    const { room, clients, writes } = await setup(t, n)
    const before = writes.slice()
    const topic = room().topic({ id: 'a' })
    const ids = [topic.publish('msg', { n: 0 })]
    t.same(writes, before, 'nothing written within publish()')
    ids.push(topic.publish('msg', { n: 1 }))
    await turn()
    t.same(writes.map((w, i) => w - before[i]), Array(n).fill(1), 'one write per connection for the turn')
    const expected = await Promise.all(ids)
    for (const c of clients) {
      await c.waitEvents(2)
      t.same(c.events.map(e => e.id), expected)
    }
  })
}
