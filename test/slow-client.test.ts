// A connection that does not drain is cut once its unsent bytes pass
// maxBufferedBytes; it never holds more than the limit plus one write, and a
// healthy client beside it gets every event.
import t from 'tap'
import type { Socket } from 'node:net'
import type { SseStream } from '../lib/index.js'
import { makeApp, SseClient, once } from './helpers/index.js'
import { stalledClient } from './helpers/raw.js'

const LIMIT = 1024 * 1024
const EVENT = 100 * 1024
const EVENTS = 200 // 20 MB in all

t.test('a client that never reads is cut; a healthy one gets all 20 MB', async t => {
  const streams = new Map<string, SseStream>()
  const sockets = new Map<string, Socket>()
  let maxBuffered = 0
  let maxWrite = 0
  const { url, app } = await makeApp(t, app => {
    app.get('/s/:who', (req, reply) => {
      const who = (req.params as { who: string }).who
      const socket = req.raw.socket as Socket
      sockets.set(who, socket)
      if (who === 'slow') {
        const write = socket.write
        socket.write = function (this: Socket, chunk: Buffer, ...rest: unknown[]) {
          const ok = (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest)
          maxWrite = Math.max(maxWrite, chunk.length)
          maxBuffered = Math.max(maxBuffered, this.writableLength)
          return ok
        } as typeof socket.write
      }
      streams.set(who, reply.sse())
    })
  }, { plugin: { maxBufferedBytes: LIMIT, maxEventBytes: 256 * 1024 } })

  const slow = await stalledClient(url, '/s/slow')
  const healthy = await SseClient.open(url + '/s/healthy')
  await healthy.until('opening', () => healthy.retries.length === 1)
  t.ok(streams.has('slow'), 'the slow stream opened')
  const slowClosed = streams.get('slow')!.closed

  // A broadcaster that paces itself on the healthy socket only, as a real
  // one would: the slow client is not allowed to hold it back.
  const payload = 'x'.repeat(EVENT)
  const healthySocket = sockets.get('healthy')!
  for (let i = 0; i < EVENTS; i++) {
    for (const s of streams.values()) s.send({ id: i, data: payload })
    await new Promise<void>(resolve => setImmediate(resolve))
    if (healthySocket.writableLength > LIMIT / 2) await once(healthySocket, 'drain')
  }
  await healthy.waitEvents(EVENTS, 30_000)
  await slowClosed
  t.equal(app.sse.stats().slowClientCuts, 1, 'the slow client was cut, and only it')
  t.ok(maxBuffered <= LIMIT + maxWrite, `slow socket held at most ${maxBuffered} bytes (limit ${LIMIT} + one write of ${maxWrite})`)
  t.ok(maxBuffered > LIMIT, 'it did pile up past the limit before the cut')
  t.same(healthy.events.map(e => Number(e.id)), Array.from({ length: EVENTS }, (_, i) => i), 'every event, in order')
  t.ok(healthy.events.every(e => e.data.length === EVENT))
  t.equal(healthy.ending, null, 'the healthy client is still connected')
  healthy.close()
  slow.destroy()
})
