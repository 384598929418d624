// app.close() ends every stream cleanly (a terminating chunk, not a reset)
// after a jittered 'retry:', and open streams never keep close() pending.
import t from 'tap'
import { finalRetry, makeApp, SseClient } from './helpers/index.js'

t.test('close() ends 200 streams cleanly, each told a jittered retry, quickly', async t => {
  const { url, app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { reply.sse() })
  }, { plugin: { retry: 1000, retryJitter: 0, shutdownJitter: 5000 } })
  const clients = await Promise.all(Array.from({ length: 200 }, () => SseClient.open(url + '/s')))
  await Promise.all(clients.map(c => c.until('opening', () => c.retries.length === 1)))
  t.equal(app.sse.stats().openStreams, 200)

  const started = performance.now()
  await app.close()
  const took = performance.now() - started
  const endings = await Promise.all(clients.map(c => c.waitEnd()))
  t.ok(endings.every(e => e === 'end'), 'every body ended cleanly')
  t.ok(took < 1500, `close() took ${took.toFixed(0)} ms`)
  const last = clients.map(c => c.retries[c.retries.length - 1])
  t.ok(clients.every(c => c.retries.length === 2), 'a second retry was sent before the end')
  t.ok(last.every(r => r >= 1000 && r <= 6000), 'within retry + shutdownJitter')
  t.ok(new Set(last).size > 50, `${new Set(last).size} distinct delays among 200: spread out`)
  t.equal(app.sse.stats().openStreams, 0)
})

t.test('a stream whose client stopped reading does not hold close() up', async t => {
  const { stalledClient } = await import('./helpers/raw.js')
  let opened!: () => void
  const isOpen = new Promise<void>(resolve => { opened = resolve })
  let stream!: import('../lib/index.js').SseStream
  const { url, app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      stream = reply.sse()
      // 20 MB: more than loopback kernel buffers absorb, so bytes stay queued
      // in the server's socket and the response cannot finish by itself.
      for (let i = 0; i < 200; i++) stream.send({ data: 'y'.repeat(100_000) })
      opened()
    })
  }, { plugin: { maxBufferedBytes: 64 * 1024 * 1024 } })
  const slow = await stalledClient(url, '/s')
  t.teardown(() => slow.destroy())
  await isOpen
  const started = performance.now()
  await app.close()
  const took = performance.now() - started
  t.ok(took < 3000, `close() took ${took.toFixed(0)} ms with a stalled client`)
  await stream.closed
  t.equal(app.sse.stats().openStreams, 0)
})

for (const return503OnClosing of [true, false]) {
  t.test(`a stream asked for while closing, return503OnClosing: ${return503OnClosing}`, async t => {
    let base = ''
    let seen: SseClient | null = null
    const { url, app } = await makeApp(t, app => {
      app.get('/s', (req, reply) => reply.sse())
      // Runs after the plugin's own preClose (hooks run in order): the hub is
      // closing and the server still accepts connections.
      app.addHook('preClose', async () => {
        seen = await SseClient.open(base + '/s')
        await seen.waitEnd()
      })
    }, { fastify: { return503OnClosing }, plugin: { retry: 1000, shutdownJitter: 2000 } })
    base = url
    await app.close()
    const c = seen as SseClient | null
    if (c === null) throw new Error('the preClose hook did not run')
    if (return503OnClosing) {
      t.equal(c.status, 503, "Fastify's 503, which a native EventSource treats as final")
    } else {
      t.equal(c.status, 200, '200: EventSource keeps reconnecting')
      t.equal(c.ending, 'end', 'ended cleanly')
      // The opening frame's retry, then the one to come back after.
      const last = finalRetry(c)
      t.ok(last !== null, 'the body ends with when to come back')
      t.ok(last !== null && last >= 1000 && last <= 3000, `retry ${last} within retry + shutdownJitter`)
      t.equal(c.events.length, 0, 'no event')
    }
    t.equal(app.sse.stats().openStreams, 0)
  })
}
