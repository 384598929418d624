// reply.sse(iterable): every value becomes an event; the response ends with
// the iterable; return() is called when the client goes away first; a throw
// closes only that stream, logged.
import t from 'tap'
import type { SseStream } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'

t.test('an async iterable is sent, then the response ends', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => reply.sse(async function * () {
      for (let i = 0; i < 5; i++) yield { event: 'tick', id: i, data: { i } }
    }()))
  })
  const c = await SseClient.open(url + '/s')
  t.equal(await c.waitEnd(), 'end')
  t.same(c.events.map(e => [e.event, e.id, e.data]), [0, 1, 2, 3, 4].map(i => ['tick', String(i), JSON.stringify({ i })]))
})

t.test('a sync iterable and plain strings work too', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => reply.sse(['a', { data: 'b' }]))
  })
  const c = await SseClient.open(url + '/s')
  await c.waitEnd()
  t.same(c.events.map(e => e.data), ['a', 'b'])
})

t.test('the client going away stops the iteration (return() is called)', async t => {
  // A hand-made iterator, so every next() and return() call is counted exactly.
  let nexts = 0
  let returned = 0
  let parked: ((r: IteratorResult<string>) => void) | null = null
  const source: AsyncIterable<string> = {
    [Symbol.asyncIterator]: () => ({
      next: () => {
        nexts++
        if (nexts === 1) return Promise.resolve({ value: 'first', done: false })
        // Stay pending: the client leaves while we are inside next().
        return new Promise(resolve => { parked = resolve })
      },
      return: () => {
        returned++
        return Promise.resolve({ value: undefined, done: true })
      }
    })
  }
  let stream!: SseStream
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { stream = reply.sse(source) })
  })
  const c = await SseClient.open(url + '/s')
  await c.waitEvents(1)
  c.close()
  await stream.closed
  t.equal(returned, 1, 'return() was called once the client left')
  ;(parked as unknown as (r: IteratorResult<string>) => void)({ value: 'late', done: false })
  await new Promise<void>(resolve => setImmediate(resolve))
  t.equal(nexts, 2, 'no next() after the client left')
  t.equal(returned, 1)
})

t.test('an iterable that throws closes only its stream, logged', async t => {
  let other!: SseStream
  const { url, logs } = await makeApp(t, app => {
    app.get('/bad', (req, reply) => reply.sse(async function * () {
      yield { data: 'first' }
      throw new Error('source broke')
    }()))
    app.get('/good', (req, reply) => { other = reply.sse() })
  })
  const good = await SseClient.open(url + '/good')
  const bad = await SseClient.open(url + '/bad')
  t.equal(await bad.waitEnd(), 'end', 'ended cleanly, not reset')
  t.same(bad.events.map(e => e.data), ['first'])
  t.ok(logs.some(l => l.level === 50 && (l.err as { message: string })?.message === 'source broke'))
  other.send({ data: 'still here' })
  await good.waitEvents(1)
  t.equal(good.ending, null, 'the other stream is still open')
  good.close()
})

t.test('a fast producer is paced by the socket, not buffered without bound', async t => {
  // 2000 x 16 KiB = 32 MiB from a source that never waits. Unpaced, it would
  // all be queued in one turn and the stream cut at maxBufferedBytes (1 MiB).
  const { url, app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => reply.sse(async function * () {
      const chunk = 'x'.repeat(16 * 1024)
      for (let i = 0; i < 2000; i++) yield { data: chunk }
    }()))
  }, { plugin: { maxBufferedBytes: 1024 * 1024 } })
  const c = await SseClient.open(url + '/s')
  t.equal(await c.waitEnd(20_000), 'end')
  t.equal(c.events.length, 2000, 'every event arrived')
  t.equal(app.sse.stats().slowClientCuts, 0, 'never cut as a slow client')
})
