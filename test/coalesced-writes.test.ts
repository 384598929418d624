// Each connection gets ONE socket write per event-loop turn, however many
// frames arrived in it: counted on the real socket.
import t from 'tap'
import type { Socket } from 'node:net'
import type { SseStream } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'

async function countedStream (t: Parameters<Parameters<typeof t.test>[1]>[0]) {
  let stream!: SseStream
  const counter = { writes: 0 }
  const { url, app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const socket = req.raw.socket as Socket
      const write = socket.write
      socket.write = function (this: Socket, ...args: unknown[]) {
        counter.writes++
        return (write as (...a: unknown[]) => boolean).apply(this, args)
      } as typeof socket.write
      stream = reply.sse()
    })
  })
  const client = await SseClient.open(url + '/s')
  await client.until('the opening frame', () => client.retries.length === 1)
  return { stream: () => stream, counter, client, app }
}

t.test('100 events sent in one turn go out in one write', async t => {
  const { stream, counter, client, app } = await countedStream(t)
  const before = counter.writes
  const writesBefore = app.sse.stats().writes
  for (let i = 0; i < 100; i++) stream().send({ id: i, data: 'e' + i })
  await client.waitEvents(100)
  t.equal(counter.writes - before, 1, 'one socket write for 100 events')
  t.equal(app.sse.stats().writes - writesBefore, 1, 'stats count the same single write')
  t.same(client.events.map(e => e.id), Array.from({ length: 100 }, (_, i) => String(i)), 'in order')
  client.close()
})

t.test('events spread over 10 turns go out in 10 writes', async t => {
  const { stream, counter, client } = await countedStream(t)
  const before = counter.writes
  for (let turn = 0; turn < 10; turn++) {
    for (let i = 0; i < 10; i++) stream().send({ data: `${turn}.${i}` })
    await new Promise<void>(resolve => setImmediate(resolve))
  }
  await client.waitEvents(100)
  t.equal(counter.writes - before, 10)
  client.close()
})

t.test('the opening frame and the first turn of events share one write with the headers', async t => {
  let writes = 0
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const socket = req.raw.socket as Socket
      const write = socket.write
      socket.write = function (this: Socket, ...args: unknown[]) {
        writes++
        return (write as (...a: unknown[]) => boolean).apply(this, args)
      } as typeof socket.write
      const s = reply.sse()
      for (let i = 0; i < 5; i++) s.send({ data: String(i) })
    })
  })
  const client = await SseClient.open(url + '/s')
  await client.waitEvents(5)
  // Node writes headers and the first body chunk through a corked socket:
  // the count of write() calls is small and, above all, independent of 5.
  t.ok(writes <= 4, `${writes} write calls for headers + opening frame + 5 events`)
  client.close()
})
